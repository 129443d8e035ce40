#include "meshctl/meshctl_format.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace mw::meshctl {

using json = nlohmann::json;

namespace {

const json& null_json() {
    static const json n;
    return n;
}

// obj[key] without inserting and without throwing on a non-object.
const json& at(const json& obj, const char* key) {
    if (!obj.is_object()) return null_json();
    auto it = obj.find(key);
    return it == obj.end() ? null_json() : *it;
}

std::string printf_text(const char* fmt, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, fmt, v);
    return buf;
}

// Any JSON value as a table cell; "-" for null or missing.
std::string text(const json& v) {
    switch (v.type()) {
        case json::value_t::string:
            return v.get<std::string>().empty() ? "-" : v.get<std::string>();
        case json::value_t::number_integer:
            return std::to_string(v.get<std::int64_t>());
        case json::value_t::number_unsigned:
            return std::to_string(v.get<std::uint64_t>());
        case json::value_t::number_float:
            return printf_text("%g", v.get<double>());
        case json::value_t::boolean:
            return v.get<bool>() ? "yes" : "no";
        case json::value_t::array: {
            if (v.empty()) return "-";
            std::string out;
            for (const auto& e : v) out += (out.empty() ? "" : ",") + text(e);
            return out;
        }
        case json::value_t::object:
            return v.dump();
        default:
            return "-";
    }
}

// A number (or -1 when absent / not a number).
std::int64_t integer(const json& v) {
    if (v.is_number_integer() || v.is_number_unsigned()) return v.get<std::int64_t>();
    if (v.is_number_float()) return static_cast<std::int64_t>(v.get<double>());
    return -1;
}

std::string count(const json& v) {
    std::int64_t n = integer(v);
    return n < 0 ? "-" : std::to_string(n);
}

std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> width(header.size());
    for (std::size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
    for (const auto& r : rows)
        for (std::size_t c = 0; c < r.size() && c < width.size(); ++c)
            width[c] = std::max(width[c], r[c].size());
    auto line = [&](const std::vector<std::string>& cells) {
        std::string out;
        for (std::size_t c = 0; c < cells.size(); ++c) {
            out += cells[c];
            if (c + 1 < cells.size()) out.append(width[c] - cells[c].size() + 2, ' ');
        }
        return out + "\n";
    };
    std::string out = line(header);
    for (const auto& r : rows) out += line(r);
    return out;
}

// Rows sorted by their first cell (the name), then the rest, so output is stable whatever
// order meshd lists things in.
void sort_rows(std::vector<std::vector<std::string>>& rows) {
    std::sort(rows.begin(), rows.end());
}

const json& list(const json& result, const char* key) {
    const json& v = at(result, key);
    static const json empty = json::array();
    return v.is_array() ? v : empty;
}

std::string kv(const std::string& key, const std::string& value) {
    std::string k = key + ":";
    if (k.size() < 16) k.append(16 - k.size(), ' ');
    return k + value + "\n";
}

}  // namespace

json build_request(const std::string& command, const std::string& node, int count) {
    json req{{"cmd", command}};
    if (command == "ping") {
        req["node"] = node;
        req["count"] = count;
    }
    return req;
}

result<response> parse_response(std::string_view line) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return error(errc::protocol_error, "the response is not valid JSON");
    const json& ok = at(j, "ok");
    if (!ok.is_boolean())
        return error(errc::protocol_error, "the response has no boolean \"ok\" field");
    response r;
    r.ok = ok.get<bool>();
    if (r.ok) {
        r.result = at(j, "result");
        if (!r.result.is_object())
            return error(errc::protocol_error, "the response has no \"result\" object");
    } else {
        const json& e = at(j, "error");
        r.error = e.is_string() ? e.get<std::string>() : "unspecified error";
    }
    return r;
}

std::string format_json(const json& result) {
    return result.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string format_rtt(const json& ms) {
    if (!ms.is_number()) return "-";
    double v = ms.get<double>();
    if (!std::isfinite(v) || v < 0) return "-";
    if (v < 0.095) return printf_text("%.2fms", v);
    if (v < 999.95) return printf_text("%.1fms", v);
    return printf_text("%.2fs", v / 1000.0);
}

std::string format_duration(std::int64_t s) {
    if (s < 0) s = 0;
    char buf[48];
    if (s < 60) {
        std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
    } else if (s < 3600) {
        std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                      static_cast<long long>(s % 60));
    } else if (s < 86400) {
        std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                      static_cast<long long>(s % 3600 / 60));
    } else {
        std::snprintf(buf, sizeof buf, "%lldd%02lldh", static_cast<long long>(s / 86400),
                      static_cast<long long>(s % 86400 / 3600));
    }
    return buf;
}

std::string format_bytes(std::int64_t b) {
    if (b < 0) return "-";
    if (b < 1024) return std::to_string(b) + " B";
    const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = static_cast<double>(b);
    int u = -1;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    return printf_text("%.1f ", v) + units[u];
}

std::string format_status(const json& r) {
    const json& node = at(r, "node");
    std::string out;
    out += kv("node", text(at(node, "name")));
    out += kv("id", text(at(node, "id")));
    out += kv("public key", text(at(node, "wgPublicKey")));
    std::string cidrs = text(at(node, "podCIDRs"));
    std::replace(cidrs.begin(), cidrs.end(), ',', ' ');
    out += kv("pod CIDRs", cidrs);
    std::string mtu = at(node, "mtu").is_number() ? ", mtu " + count(at(node, "mtu")) : "";
    out +=
        kv("interface", text(at(node, "interface")) + " (" + text(at(node, "backend")) + mtu + ")");
    out += kv("listen ports", "wireguard " + count(at(node, "wgListenPort")) + "/udp, control " +
                                  count(at(node, "listenPort")) + "/udp");
    std::string eps = text(at(node, "endpoints"));
    std::replace(eps.begin(), eps.end(), ',', ' ');
    out += kv("endpoints", eps);
    // "active", "verifying", "refused" (with the reason) or "none"; older meshd: the bool.
    std::string role = text(at(node, "relayRoleState"));
    if (role == "-") role = text(at(node, "relayRole"));
    std::string reason = text(at(node, "relayRoleReason"));
    if (reason != "-" && role != "none") role += " (" + reason + ")";
    out += kv("relay role", role);
    std::int64_t up = integer(at(node, "uptimeSeconds"));
    out += kv("uptime", up < 0 ? "-" : format_duration(up));
    // Per family: the mapping, the address the relays saw, how many saw it (absent from an
    // older meshd's answer: no line).
    if (node.is_object() && node.contains("nat") && at(node, "nat").is_object()) {
        std::string line;
        for (const char* fam : {"ipv4", "ipv6"}) {
            const json& f = at(at(node, "nat"), fam);
            std::string m = text(at(f, "mapping"));
            std::string part = std::string(fam) + " " + m;
            if (at(f, "reflexive").is_string()) {
                part += " (" + text(at(f, "reflexive")) + ", " + count(at(f, "observers")) +
                        (integer(at(f, "observers")) == 1 ? " relay" : " relays") +
                        (at(f, "portPreserved").is_boolean() && at(f, "portPreserved").get<bool>()
                             ? ", port kept"
                             : "") +
                        ")";
            }
            line += std::string(line.empty() ? "" : "; ") + part;
        }
        out += kv("nat", line);
    }
    out += "\n";

    const json& peers = at(r, "peers");
    out += kv("peers", count(at(peers, "total")) + " total, " + count(at(peers, "direct")) +
                           " direct, " + count(at(peers, "relay")) + " relay, " +
                           count(at(peers, "none")) + " none");
    // Peers by how their record reached us (absent from an older meshd's answer: no line).
    if (peers.is_object() && peers.contains("learnedVia")) {
        const json& lv = at(peers, "learnedVia");
        std::string line;
        for (const char* k :
             {"relay", "bootstrap", "mdns", "cache", "dht", "kubernetes", "registration"})
            line += std::string(line.empty() ? "" : " ") + k + "=" + count(at(lv, k));
        out += kv("learned via", line);
    }
    const json& relays = at(r, "relays");
    out += kv("relays", count(at(relays, "total")) + " total, " + count(at(relays, "up")) + " up");
    const json& svc = at(r, "relayService");
    if (!svc.is_object()) {
        out += kv("relay service", "off");
    } else {
        out += kv("relay service",
                  count(at(svc, "sessions")) + " sessions, " + count(at(svc, "nodes")) +
                      " nodes, " + count(at(svc, "forwardedPackets")) + " packets (" +
                      format_bytes(integer(at(svc, "forwardedBytes"))) + ") forwarded");
        const json& d = at(svc, "drops");
        std::string drops;
        for (const char* k : {"unknown_session", "wrong_source", "not_established", "expired",
                              "rate_limited_packets", "rate_limited_bytes"})
            drops += std::string(drops.empty() ? "" : " ") + k + "=" + count(at(d, k));
        out += kv("relay drops", drops);
        // The session table's caps and what they refused (absent from an older meshd: no line).
        if (svc.contains("maxSessions")) {
            const json& rf = at(svc, "refused");
            out += kv("relay limits",
                      "max " + count(at(svc, "maxSessions")) + " sessions, " +
                          count(at(svc, "maxSessionsPerNode")) +
                          " per node; refused: node_limit=" + count(at(rf, "node_limit")) +
                          " table_full=" + count(at(rf, "table_full")) +
                          " node_table=" + count(at(rf, "node_table")));
        }
    }
    const json& c = at(r, "control");
    std::string dropped;
    for (const char* k : {"authFailed", "malformed", "oldVersion", "wrongRecipient",
                          "pairAuthFailed", "staleEpoch", "replayed", "notControl", "badRecord"})
        dropped += std::string(dropped.empty() ? "" : " ") + k + "=" + count(at(c, k));
    out += kv("control", count(at(c, "accepted")) + " accepted; dropped: " + dropped);
    // Key roll (issue 14 §2; absent from an older meshd's answer: no line).
    if (r.is_object() && r.contains("clusterKeys") && at(r, "clusterKeys").is_object()) {
        const json& k = at(r, "clusterKeys");
        auto str = [](const json& v) { return v.is_string() ? v.get<std::string>() : "-"; };
        std::string acc;
        if (k.contains("accept") && k["accept"].is_array()) {
            for (const auto& a : k["accept"]) acc += (acc.empty() ? "" : ",") + str(a);
        }
        out += kv("cluster keys",
                  "seal " + str(k.value("seal", json())) + ", accept " + (acc.empty() ? "-" : acc) +
                      ", retired " + str(k.value("retired", json())) +
                      "; opened: seal=" + count(c.value("openedSeal", json(0))) +
                      " accept=" + count(c.value("openedAccept", json(0))) +
                      "; refused as retired: " + count(c.value("retiredKey", json(0))));
    }
    // Our control traffic rate (issue 18; absent from an older meshd's answer: no line).
    if (r.is_object() && r.contains("controlTraffic")) {
        const json& t = at(r, "controlTraffic");
        const json& ps = at(t, "perSecond");
        auto rate = [&](const char* p, const char* b) {
            const json& pv = at(ps, p);
            const json& bv = at(ps, b);
            if (!pv.is_number() || !bv.is_number()) return std::string("-");
            return printf_text("%.1f pkt/s ", pv.get<double>()) +
                   printf_text("%.0f B/s", bv.get<double>());
        };
        out += kv("control rate", "in " + rate("rxPackets", "rxBytes") + ", out " +
                                      rate("txPackets", "txBytes") + "; " +
                                      count(at(t, "activePairs")) + " active pairs");
    }
    // mDNS (absent from an older meshd's answer: no line; null: switched off).
    if (r.is_object() && r.contains("mdns")) {
        const json& m = at(r, "mdns");
        if (!m.is_object()) {
            out += kv("mdns", "off");
        } else {
            std::string ifs;
            for (const json& i : list(m, "interfaces")) ifs += (ifs.empty() ? "" : " ") + text(i);
            out +=
                kv("mdns", (ifs.empty() ? std::string("no interface") : ifs) + "; " +
                               count(at(m, "announcements")) + " announcements, " +
                               count(at(m, "answers")) + " answers, " + count(at(m, "peersFound")) +
                               " peers found; dropped: malformed=" + count(at(m, "malformed")) +
                               " ignored=" + count(at(m, "ignored")));
        }
    }
    // The on-disk record cache (absent from an older meshd's answer: no line).
    if (r.is_object() && r.contains("recordCache")) {
        const json& rc = at(r, "recordCache");
        if (!rc.is_object()) {
            out += kv("record cache", "off");
        } else {
            std::string load = text(at(rc, "load"));
            if (load == "loaded") {
                load += " " + count(at(rc, "loaded")) + " records (" + count(at(rc, "expired")) +
                        " expired, " + count(at(rc, "refused")) + " refused)";
            } else if (at(rc, "loadError").is_string()) {
                load += " (" + text(at(rc, "loadError")) + ")";
            }
            std::int64_t ago = integer(at(rc, "lastWriteAgoSeconds"));
            out += kv("record cache",
                      load + "; " + count(at(rc, "writes")) + " writes, last " +
                          (ago < 0 ? std::string("never") : format_duration(ago) + " ago") + " (" +
                          count(at(rc, "recordsWritten")) + " records), " +
                          count(at(rc, "writeFailures")) + " failed");
        }
    }
    return out;
}

std::string format_peers(const json& r, std::int64_t now_unix) {
    std::vector<std::vector<std::string>> rows;
    for (const json& p : list(r, "peers")) {
        std::string hs = "never";
        std::int64_t ago = integer(at(p, "lastHandshakeAgoSeconds"));
        std::int64_t when = integer(at(p, "lastHandshake"));
        if (ago < 0 && when > 0) ago = std::max<std::int64_t>(0, now_unix - when);
        if (ago >= 0) hs = format_duration(ago) + " ago";
        // How its record reached this node ("relay,cache"); "-" from an older meshd.
        std::string via;
        for (const json& v : list(p, "learnedVia")) via += (via.empty() ? "" : ",") + text(v);
        // The path MTU measured on the path in use ("?" while its search runs); "-" when not
        // measured (a direct path, an idle pair, an older meshd).
        std::string pmtu = "-";
        if (std::int64_t m = integer(at(p, "pathMtu")); m > 0) {
            pmtu = std::to_string(m) + (text(at(p, "pathMtuSearch")) == "searching" ? "?" : "");
        }
        // Why that path ("lan", "no_direct_answer", ...); "-" from an older meshd.
        rows.push_back({text(at(p, "name")), text(at(p, "path")), text(at(p, "pathReason")),
                        text(at(p, "relay")), text(at(p, "endpoint")), format_rtt(at(p, "rttMs")),
                        pmtu, hs, via.empty() ? "-" : via});
    }
    sort_rows(rows);
    std::string out = render_table(
        {"NAME", "PATH", "REASON", "RELAY", "ENDPOINT", "RTT", "MTU", "HANDSHAKE", "LEARNED"},
        rows);
    // Pod CIDRs a peer claims that this node refuses to route (route authority).
    std::vector<std::string> refused;
    for (const json& p : list(r, "peers")) {
        for (const json& c : list(p, "refusedCIDRs")) {
            refused.push_back(text(at(p, "name")) + ": " + text(at(c, "cidr")) + " refused (" +
                              text(at(c, "reason")) + ")");
        }
    }
    std::sort(refused.begin(), refused.end());
    for (const auto& line : refused) out += line + "\n";
    return out;
}

std::string format_relays(const json& r) {
    std::vector<std::vector<std::string>> rows;
    for (const json& p : list(r, "relays"))
        rows.push_back({text(at(p, "name")), text(at(p, "state")), text(at(p, "origin")),
                        text(at(p, "endpoint")), format_rtt(at(p, "rttMs")), count(at(p, "load")),
                        text(at(p, "reflexive")), text(at(p, "addresses"))});
    sort_rows(rows);
    return render_table(
        {"NAME", "STATE", "ORIGIN", "ENDPOINT", "RTT", "LOAD", "REFLEXIVE", "ADDRESSES"}, rows);
}

std::string format_ping(const json& r) {
    std::string name = text(at(r, "node"));
    std::string via = at(r, "path") == "relay"    ? "via relay " + text(at(r, "relay"))
                      : at(r, "path") == "direct" ? std::string("via direct path")
                                                  : "via " + text(at(r, "path"));
    std::string out;
    std::vector<double> rtts;
    for (const json& v : list(r, "rttMs")) {
        if (!v.is_number()) continue;
        rtts.push_back(v.get<double>());
        out += "reply from " + name + " " + via + ": rtt=" + format_rtt(v) + "\n";
    }
    std::int64_t sent = integer(at(r, "sent"));
    std::int64_t received = integer(at(r, "received"));
    if (received < 0) received = static_cast<std::int64_t>(rtts.size());
    out += "--- " + name + " ping statistics ---\n";
    out += count(at(r, "sent")) + " sent, " + std::to_string(received) + " received";
    if (sent > 0) {
        long loss = std::lround(100.0 * static_cast<double>(sent - std::min(sent, received)) /
                                static_cast<double>(sent));
        out += ", " + std::to_string(loss) + "% loss";
    }
    if (!rtts.empty()) {
        double mn = *std::min_element(rtts.begin(), rtts.end());
        double mx = *std::max_element(rtts.begin(), rtts.end());
        double sum = 0;
        for (double v : rtts) sum += v;
        out += ", rtt min/avg/max = " + format_rtt(mn) + "/" +
               format_rtt(sum / static_cast<double>(rtts.size())) + "/" + format_rtt(mx);
    }
    return out + "\n";
}

std::string format_human(const std::string& command, const json& result, std::int64_t now_unix) {
    if (command == "status") return format_status(result);
    if (command == "peers") return format_peers(result, now_unix);
    if (command == "relays") return format_relays(result);
    if (command == "ping") return format_ping(result);
    return format_json(result);
}

int ping_exit_code(const json& result) {
    std::int64_t received = integer(at(result, "received"));
    if (received < 0) received = static_cast<std::int64_t>(list(result, "rttMs").size());
    return received > 0 ? 0 : 1;
}

}  // namespace mw::meshctl
