#include "common/wireguard/wg_device.hpp"

#include <algorithm>
#include <map>

namespace mw {

bool allowed_ips_normalized(const std::vector<ip_prefix>& v) {
    for (size_t i = 0; i < v.size(); ++i) {
        if (!(v[i] == v[i].network())) return false;
        if (i > 0 && !(v[i - 1] < v[i])) return false;
    }
    return true;
}

std::vector<ip_prefix> normalize_allowed_ips(const std::vector<ip_prefix>& in) {
    if (allowed_ips_normalized(in)) return in;
    std::vector<ip_prefix> out;
    out.reserve(in.size());
    for (const auto& p : in) out.push_back(p.network());
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

bool same_allowed_ips(const std::vector<ip_prefix>& a, const std::vector<ip_prefix>& b) {
    if (allowed_ips_normalized(a) && allowed_ips_normalized(b)) return a == b;
    return normalize_allowed_ips(a) == normalize_allowed_ips(b);
}

bool wg_peer::same_config(const wg_peer& o) const {
    return public_key == o.public_key && preshared_key == o.preshared_key &&
           endpoint == o.endpoint && persistent_keepalive == o.persistent_keepalive &&
           same_allowed_ips(allowed_ips, o.allowed_ips);
}

const wg_peer* wg_device::find_peer(const wg_key& key) const {
    for (const auto& p : peers) {
        if (p.public_key == key) return &p;
    }
    return nullptr;
}

void wg_device::normalize() {
    for (auto& p : peers) p.allowed_ips = normalize_allowed_ips(p.allowed_ips);
    std::sort(peers.begin(), peers.end(),
              [](const wg_peer& a, const wg_peer& b) { return a.public_key < b.public_key; });
}

bool wg_device::same_config(const wg_device& observed) const {
    if (private_key && private_key != observed.private_key) return false;
    if (listen_port && listen_port != observed.listen_port) return false;
    if (fwmark && fwmark.value_or(0) != observed.fwmark.value_or(0)) return false;
    if (peers.size() != observed.peers.size()) return false;
    std::map<wg_key, const wg_peer*> by_key;
    for (const auto& p : observed.peers) by_key[p.public_key] = &p;
    for (const auto& p : peers) {
        auto it = by_key.find(p.public_key);
        if (it == by_key.end() || !p.same_config(*it->second)) return false;
    }
    return true;
}

status validate_ifname(const std::string& name) {
    bool ok = !name.empty() && name.size() < 16 && name != "." && name != "..";
    for (char c : name) {
        if (c == '/' || c == ':' || c <= ' ' || c == 0x7f) ok = false;
    }
    if (!ok) return error(errc::invalid_argument, "invalid interface name \"" + name + "\"");
    return {};
}

status validate(const wg_device& d) {
    if (d.private_key && d.private_key->is_zero()) {
        return error(errc::invalid_argument, "private key is all zero");
    }
    // Sorted vectors rather than maps: validate runs on every apply, over thousands of peers.
    std::vector<std::pair<wg_key, size_t>> keys;
    keys.reserve(d.peers.size());
    struct claim {
        ip_prefix net;
        size_t peer;
    };
    std::vector<claim> claims;
    auto who = [&](size_t i) { return "peer " + d.peers[i].public_key.to_base64(); };
    for (size_t i = 0; i < d.peers.size(); ++i) {
        const wg_peer& p = d.peers[i];
        if (p.public_key.is_zero()) {
            return error(errc::invalid_argument,
                         "peer #" + std::to_string(i) + ": public key is all zero");
        }
        keys.emplace_back(p.public_key, i);
        if (p.preshared_key && p.preshared_key->is_zero()) {
            return error(errc::invalid_argument,
                         who(i) + ": preshared key is all zero (omit it instead)");
        }
        if (p.endpoint && (!p.endpoint->address.valid() || p.endpoint->port == 0)) {
            return error(errc::invalid_argument, who(i) + ": endpoint needs an address and a port");
        }
        for (const auto& a : p.allowed_ips) {
            if (!a.address().valid() || a.length() < 0 || a.length() > a.address().bits()) {
                return error(errc::invalid_argument, who(i) + ": invalid allowed-ip prefix");
            }
            claims.push_back({a.network(), i});
        }
    }
    std::sort(keys.begin(), keys.end());
    for (size_t i = 1; i < keys.size(); ++i) {
        if (keys[i].first == keys[i - 1].first) {
            return error(errc::invalid_argument, who(keys[i].second) + ": listed twice");
        }
    }
    std::sort(claims.begin(), claims.end(), [](const claim& x, const claim& y) {
        if (!(x.net == y.net)) return x.net < y.net;
        return x.peer < y.peer;
    });
    for (size_t i = 1; i < claims.size(); ++i) {
        if (claims[i].net == claims[i - 1].net && claims[i].peer != claims[i - 1].peer) {
            return error(errc::invalid_argument, who(claims[i].peer) + ": allowed-ip " +
                                                     claims[i].net.str() + " is also claimed by " +
                                                     who(claims[i - 1].peer));
        }
    }
    return {};
}

}  // namespace mw
