#include "meshd/control_api.hpp"

#include <algorithm>
#include <cstdio>

namespace mw::meshd {

namespace {

using json = nlohmann::json;

json opt_str(const std::optional<wg_endpoint>& e) {
    return e ? json(e->str()) : json(nullptr);
}

std::string hex16(uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return b;
}

}  // namespace

json status_json(const node_snapshot& s) {
    json node;
    node["name"] = s.name;
    node["id"] = s.id.hex();
    node["wgPublicKey"] = s.wg_public_key.to_base64();
    json cidrs = json::array();
    for (const auto& p : s.pod_cidrs) cidrs.push_back(p.str());
    node["podCIDRs"] = cidrs;
    node["interface"] = s.interface;
    node["backend"] = s.backend;
    node["mtu"] = s.mtu ? json(s.mtu) : json(nullptr);
    node["wgListenPort"] = s.wg_listen_port;
    node["listenPort"] = s.listen_port;
    json eps = json::array();
    for (const auto& e : s.endpoints) eps.push_back(e.str());
    node["endpoints"] = eps;
    node["relayRole"] = s.role == relay_role_state::active;
    node["relayRoleState"] = to_string(s.role);
    node["relayRoleReason"] = s.role_reason.empty() ? json(nullptr) : json(s.role_reason);
    node["relayRoleCause"] = to_string(s.role_cause);
    json verified = json::array();
    for (const auto& e : s.verified) verified.push_back(e.str());
    node["relayVerified"] = verified;
    node["uptimeSeconds"] = s.uptime_s;
    // The NAT in front of the control socket per family, from the relays' reports (issue 13).
    json nat;
    for (const auto& [fam, v] : {std::pair{"ipv4", &s.nat.ipv4}, std::pair{"ipv6", &s.nat.ipv6}}) {
        nat[fam] = {{"mapping", to_string(v->mapping)},
                    {"reflexive", v->reflexive ? json(v->reflexive->str()) : json(nullptr)},
                    {"observers", v->observers},
                    {"portPreserved", v->port_preserved}};
    }
    node["nat"] = nat;
    json peers = {{"total", s.paths.total},
                  {"direct", s.paths.direct},
                  {"relay", s.paths.relay},
                  {"none", s.paths.none}};
    json relays = {{"total", s.relays.size()}, {"up", s.relays_up}};
    json svc = nullptr;
    if (s.service) {
        json drops;
        for (size_t i = 0; i < relay_drop_count; ++i) {
            drops[to_string(static_cast<relay_drop>(i))] = s.service->stats.table_drops[i];
        }
        json refused;
        for (size_t i = 0; i < relay_refusal_count; ++i) {
            refused[to_string(static_cast<relay_refusal>(i))] = s.service->stats.table_refusals[i];
        }
        svc = {{"sessions", s.service->sessions},
               {"nodes", s.service->nodes},
               {"maxSessions", s.service->max_sessions},
               {"maxSessionsPerNode", s.service->max_sessions_per_node},
               {"refused", refused},
               {"malformed", s.service->stats.malformed},
               {"forwardedPackets", s.service->stats.forwarded_packets},
               {"forwardedBytes", s.service->stats.forwarded_bytes},
               {"natKeepalives", s.service->stats.nat_keepalives},
               {"keptEvicted", s.service->stats.kept_evicted},
               {"drops", drops}};
    }
    json proxy = nullptr;
    if (s.proxy) {
        const auto& ps = *s.proxy;
        proxy = {{"toRelayPackets", ps.to_relay_packets},
                 {"toRelayBytes", ps.to_relay_bytes},
                 {"toWireguardPackets", ps.to_wg_packets},
                 {"toWireguardBytes", ps.to_wg_bytes},
                 {"inbandControlPackets", ps.inband_control_packets},
                 {"unknownSession", ps.unknown_session},
                 {"wrongSource", ps.wrong_source},
                 {"foreignLocal", ps.foreign_local},
                 {"malformed", ps.malformed},
                 {"natKeepalives", ps.nat_keepalives},
                 {"sendFailed", ps.send_failed},
                 {"oversize", ps.oversize},
                 {"initResent", ps.init_resent},
                 {"responseViaInitiationSession", ps.response_via_initiation_session}};
    }
    const auto& c = s.control;
    json control = {{"accepted", c.accepted},
                    {"authFailed", c.auth_failed},
                    {"malformed", c.malformed},
                    {"oldVersion", c.old_version},
                    {"unknownType", c.unknown_type},
                    {"wrongRecipient", c.wrong_recipient},
                    {"pairAuthFailed", c.pair_auth_failed},
                    {"staleEpoch", c.stale_epoch},
                    {"replayed", c.replayed},
                    {"notControl", c.not_control},
                    {"badRecord", c.bad_record},
                    {"cookieSent", c.cookie_sent},
                    {"cookieRequired", c.cookie_required},
                    {"openedSeal", c.opened_seal},
                    {"openedAccept", c.opened_accept},
                    {"retiredKey", c.retired_key}};
    // Our control datagrams (issue 18: what idle costs): totals and the rate over the last
    // window (null until one passed).
    const auto& tr = s.traffic;
    const auto& rate = s.traffic_rate;
    json per_s = nullptr;
    if (rate.window_ms) {
        per_s = {{"rxPackets", rate.rx_packets_per_s},
                 {"rxBytes", rate.rx_bytes_per_s},
                 {"txPackets", rate.tx_packets_per_s},
                 {"txBytes", rate.tx_bytes_per_s},
                 {"windowMs", rate.window_ms}};
    }
    json traffic = {{"rxPackets", tr.rx_packets}, {"rxBytes", tr.rx_bytes},
                    {"txPackets", tr.tx_packets}, {"txBytes", tr.tx_bytes},
                    {"perSecond", per_s},         {"activePairs", s.active_pairs}};
    json mdns = nullptr;
    if (s.mdns) {
        const auto& m = *s.mdns;
        mdns = {{"interfaces", m.interfaces},
                {"instance", m.instance},
                {"announcements", m.announcements},
                {"answers", m.answers},
                {"legacyAnswers", m.legacy_answers},
                {"queries", m.queries},
                {"peersFound", m.peers_found},
                {"conflicts", m.conflicts},
                {"received", m.received},
                {"sent", m.sent},
                {"malformed", m.malformed},
                {"ignored", m.ignored},
                {"ownLooped", m.own_looped},
                {"sendErrors", m.send_errors}};
    }
    json learned = json::object();
    for (size_t i = 0; i < node_snapshot::learned_via_bits; ++i) {
        learned[to_string(static_cast<learned_via>(1u << i))] = s.peers_learned[i];
    }
    peers["learnedVia"] = learned;
    json cache = nullptr;
    if (s.cache) {
        const auto& c = *s.cache;
        cache = {{"path", c.path},
                 {"load", c.load},
                 {"loadError", c.load_error.empty() ? json(nullptr) : json(c.load_error)},
                 {"loaded", c.loaded},
                 {"expired", c.expired},
                 {"refused", c.refused},
                 {"elapsedSeconds", c.elapsed_ms / 1000},
                 {"elapsedClock", to_string(c.basis)},
                 {"writes", c.writes},
                 {"writeFailures", c.write_failures},
                 {"recordsWritten", c.records_written},
                 {"lastWriteAgoSeconds",
                  c.last_write_unix_ms
                      ? json((s.now_ms - std::min(s.now_ms, c.last_write_unix_ms)) / 1000)
                      : json(nullptr)}};
    }
    return {{"node", node},
            {"peers", peers},
            {"relays", relays},
            {"relayService", svc},
            {"relayProxy", proxy},
            {"control", control},
            {"clusterKeys",
             {{"seal", s.key_fingerprints.empty() ? json(nullptr) : json(s.key_fingerprints[0])},
              {"accept", s.key_fingerprints.size() > 1
                             ? json(std::vector<std::string>(s.key_fingerprints.begin() + 1,
                                                             s.key_fingerprints.end()))
                             : json::array()},
              {"retired", s.retired_key.empty() ? json(nullptr) : json(s.retired_key)}}},
            {"controlTraffic", traffic},
            {"mdns", mdns},
            {"recordCache", cache}};
}

json peers_json(const node_snapshot& s) {
    json arr = json::array();
    int64_t now_s = static_cast<int64_t>(s.now_ms / 1000);
    for (const auto& e : s.peers) {
        const peer_view& p = e.view;
        const wg_peer* w = e.device ? &*e.device : nullptr;
        json j;
        j["name"] = p.name;
        j["id"] = p.id.hex();
        j["wgPublicKey"] = p.wg_public_key.to_base64();
        json cidrs = json::array();
        for (const auto& c : p.pod_cidrs) cidrs.push_back(c.str());
        j["podCIDRs"] = cidrs;
        json refused = json::array();
        for (const auto& r : p.refused_cidrs)
            refused.push_back({{"cidr", r.cidr.str()}, {"reason", to_string(r.reason)}});
        j["refusedCIDRs"] = refused;
        j["path"] = to_string(p.path);
        j["pathReason"] = to_string(p.reason);
        j["relay"] = p.relay ? json(p.relay_name) : json(nullptr);
        j["relayId"] = p.relay ? json(p.relay->hex()) : json(nullptr);
        j["sessionId"] = p.relay ? json(hex16(p.session_id)) : json(nullptr);
        json sessions = json::array();
        for (const auto& r : p.relay_sessions)
            sessions.push_back(
                {{"relay", r.relay_name}, {"inUse", r.in_use}, {"accepted", r.accepted}});
        j["relaySessions"] = sessions;
        j["endpoint"] = opt_str(e.endpoint);
        j["rttMs"] = p.rtt_ms ? json(*p.rtt_ms) : json(nullptr);
        j["pathMtu"] = p.path_mtu ? json(*p.path_mtu) : json(nullptr);
        j["pathMtuSearch"] = !p.path_mtu           ? json(nullptr)
                             : p.path_mtu_complete ? json("complete")
                                                   : json("searching");
        j["learnedVia"] = learned_via_names(p.sources);
        j["recordSeq"] = p.record_seq;
        j["recordExpiresInSeconds"] =
            p.record_expires_in_ms ? json(*p.record_expires_in_ms / 1000) : json(nullptr);
        if (w && w->last_handshake_sec) {
            j["lastHandshake"] = w->last_handshake_sec;
            j["lastHandshakeAgoSeconds"] = std::max<int64_t>(0, now_s - w->last_handshake_sec);
        } else {
            j["lastHandshake"] = nullptr;
            j["lastHandshakeAgoSeconds"] = nullptr;
        }
        j["rxBytes"] = w ? w->rx_bytes : 0;
        j["txBytes"] = w ? w->tx_bytes : 0;
        arr.push_back(std::move(j));
    }
    return {{"peers", arr}};
}

json relays_json(const node_snapshot& s) {
    json arr = json::array();
    for (const auto& r : s.relays) {
        json j;
        j["name"] = r.name;
        j["id"] = r.id ? json(r.id->hex()) : json(nullptr);
        json addrs = json::array();
        for (const auto& a : r.addresses) addrs.push_back(a.str());
        j["addresses"] = addrs;
        j["endpoint"] = opt_str(r.endpoint);
        j["state"] = r.state == relay_state::unknown ? "down" : to_string(r.state);
        j["origin"] = to_string(r.origin);
        j["rttMs"] = r.rtt_ms ? json(*r.rtt_ms) : json(nullptr);
        j["reflexive"] = opt_str(r.reflexive);
        j["load"] = r.load;
        arr.push_back(std::move(j));
    }
    return {{"relays", arr}};
}

result<control_request> parse_control_request(const json& req) {
    auto fail = [](const std::string& m) { return error(errc::invalid_argument, m); };
    if (!req.is_object() || !req.contains("cmd") || !req["cmd"].is_string()) {
        return fail("request needs a \"cmd\" string");
    }
    control_request r;
    r.cmd = req["cmd"];
    if (r.cmd == "status" || r.cmd == "peers" || r.cmd == "relays") return r;
    if (r.cmd != "ping") return fail("unknown command \"" + r.cmd + "\"");
    if (!req.contains("node") || !req["node"].is_string()) return fail("ping needs \"node\"");
    r.node = req["node"];
    if (req.contains("count")) {
        if (!req["count"].is_number_integer() || req["count"].get<int>() < 1 ||
            req["count"].get<int>() > 100) {
            return fail("\"count\" must be 1..100");
        }
        r.count = req["count"];
    }
    return r;
}

}  // namespace mw::meshd
