#include "common/wireguard/wg_uapi.hpp"

#include <charconv>
#include <cstring>
#include <limits>

namespace mw {

namespace {

template <class T>
bool parse_num(std::string_view s, T& out) {
    if (s.empty()) return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
}

error malformed(std::string_view line, const char* why) {
    // Error messages end up in logs: key material is never quoted.
    std::string shown(line.substr(0, 80));
    for (std::string_view secret : {"private_key=", "preshared_key="}) {
        if (line.substr(0, secret.size()) == secret) shown = std::string(secret) + "(redacted)";
    }
    return error(errc::protocol_error, "malformed UAPI answer line \"" + shown + "\": " + why);
}

// Endpoints may carry an IPv6 zone ("[fe80::1%eth0]:51820"); we keep the address and port.
result<wg_endpoint> parse_uapi_endpoint(std::string_view v) {
    std::string s(v);
    auto pct = s.find('%');
    auto close = s.find(']');
    if (pct != std::string::npos && close != std::string::npos && pct < close) {
        s.erase(pct, close - pct);
    }
    return wg_endpoint::parse(s);
}

}  // namespace

std::string wg_uapi::encode_set(const wg_device_update& u) {
    std::string s = "set=1\n";
    // ~180 bytes per peer with one v4 and one v6 allowed-ip; reserve to avoid regrowth for 1000s.
    s.reserve(64 + u.peers.size() * 200);
    if (u.private_key) s += "private_key=" + u.private_key->to_hex() + "\n";
    if (u.listen_port) s += "listen_port=" + std::to_string(*u.listen_port) + "\n";
    if (u.fwmark) s += "fwmark=" + std::to_string(*u.fwmark) + "\n";
    if (u.replace_peers) s += "replace_peers=true\n";
    for (const auto& p : u.peers) {
        s += "public_key=" + p.public_key.to_hex() + "\n";
        if (p.remove) {
            s += "remove=true\n";
            continue;
        }
        if (p.update_only) s += "update_only=true\n";
        if (p.preshared_key) s += "preshared_key=" + p.preshared_key->to_hex() + "\n";
        if (p.endpoint) s += "endpoint=" + p.endpoint->str() + "\n";
        if (p.persistent_keepalive) {
            s += "persistent_keepalive_interval=" + std::to_string(*p.persistent_keepalive) + "\n";
        }
        if (p.replace_allowed_ips) s += "replace_allowed_ips=true\n";
        for (const auto& a : p.allowed_ips) s += "allowed_ip=" + a.network().str() + "\n";
    }
    s += "\n";
    return s;
}

error wg_uapi::errno_error(long value, std::string_view what) {
    long e = value < 0 ? -value : value;
    if (e > 4095) e = EPROTO;
    return error::from_errno(
        static_cast<int>(e),
        std::string(what) + ": userspace WireGuard answered errno=" + std::to_string(value));
}

result<wg_device> wg_uapi::parse_get(std::string_view answer) {
    if (!answer_complete(answer)) {
        return error(errc::protocol_error, "truncated UAPI answer (no terminating empty line)");
    }
    wg_device d;
    wg_peer* peer = nullptr;
    bool saw_errno = false;
    size_t pos = 0;
    while (pos < answer.size()) {
        size_t nl = answer.find('\n', pos);
        std::string_view line = answer.substr(pos, nl - pos);
        pos = nl + 1;
        if (line.empty()) break;  // end of answer
        if (saw_errno) return malformed(line, "data after errno");
        auto eq = line.find('=');
        if (eq == std::string_view::npos || eq == 0) return malformed(line, "expected key=value");
        std::string_view key = line.substr(0, eq), val = line.substr(eq + 1);
        if (key == "errno") {
            long e = 0;
            if (!parse_num(val, e)) return malformed(line, "errno is not a number");
            if (e != 0) return errno_error(e, "get");
            saw_errno = true;
        } else if (key == "private_key") {
            if (peer) return malformed(line, "device key inside a peer");
            auto k = wg_key::from_hex(val);
            if (!k) return malformed(line, "bad key");
            if (!k->is_zero()) {
                d.private_key = *k;
                d.public_key = k->public_key();
            }
        } else if (key == "listen_port") {
            uint16_t v = 0;
            if (peer || !parse_num(val, v)) return malformed(line, "bad listen_port");
            d.listen_port = v;
        } else if (key == "fwmark") {
            uint32_t v = 0;
            if (peer || !parse_num(val, v)) return malformed(line, "bad fwmark");
            d.fwmark = v;
        } else if (key == "public_key") {
            auto k = wg_key::from_hex(val);
            if (!k) return malformed(line, "bad key");
            d.peers.push_back(wg_peer{});
            peer = &d.peers.back();
            peer->public_key = *k;
        } else if (!peer) {
            // Unknown device-level keys are skipped so that a newer wireguard-go still works.
            if (key == "preshared_key" || key == "endpoint" || key == "allowed_ip" ||
                key == "last_handshake_time_sec" || key == "last_handshake_time_nsec" ||
                key == "rx_bytes" || key == "tx_bytes" || key == "persistent_keepalive_interval" ||
                key == "protocol_version") {
                return malformed(line, "peer key before any public_key");
            }
        } else if (key == "preshared_key") {
            auto k = wg_key::from_hex(val);
            if (!k) return malformed(line, "bad key");
            if (!k->is_zero()) peer->preshared_key = *k;
        } else if (key == "endpoint") {
            auto ep = parse_uapi_endpoint(val);
            if (!ep) return malformed(line, "bad endpoint");
            peer->endpoint = *ep;
        } else if (key == "allowed_ip") {
            auto p = ip_prefix::parse(val);
            if (!p) return malformed(line, "bad prefix");
            peer->allowed_ips.push_back(*p);
        } else if (key == "last_handshake_time_sec") {
            if (!parse_num(val, peer->last_handshake_sec)) return malformed(line, "bad number");
        } else if (key == "last_handshake_time_nsec") {
            if (!parse_num(val, peer->last_handshake_nsec)) return malformed(line, "bad number");
        } else if (key == "rx_bytes") {
            if (!parse_num(val, peer->rx_bytes)) return malformed(line, "bad number");
        } else if (key == "tx_bytes") {
            if (!parse_num(val, peer->tx_bytes)) return malformed(line, "bad number");
        } else if (key == "persistent_keepalive_interval") {
            if (!parse_num(val, peer->persistent_keepalive)) return malformed(line, "bad number");
        } else if (key == "protocol_version") {
            unsigned v = 0;
            if (!parse_num(val, v) || v != 1)
                return malformed(line, "unsupported protocol_version");
        }
        // Unknown peer-level keys are skipped for the same reason as device-level ones.
    }
    if (pos != answer.size())
        return error(errc::protocol_error, "UAPI answer has data after its end");
    if (!saw_errno) return error(errc::protocol_error, "UAPI answer without errno line");
    return d;
}

status wg_uapi::parse_set(std::string_view answer) {
    if (!answer_complete(answer)) {
        return error(errc::protocol_error, "truncated UAPI answer (no terminating empty line)");
    }
    std::string_view line = answer.substr(0, answer.size() - 2);
    if (line.substr(0, 6) != "errno=" || line.find('\n') != std::string_view::npos) {
        return malformed(line, "expected errno=N");
    }
    long e = 0;
    if (!parse_num(line.substr(6), e)) return malformed(line, "errno is not a number");
    if (e != 0) return errno_error(e, "set");
    return {};
}

}  // namespace mw
