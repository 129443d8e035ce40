#include "common/wireguard/wg_update.hpp"

#include <algorithm>

namespace mw {

size_t wg_device_update::operation_count() const noexcept {
    size_t n =
        (private_key ? 1 : 0) + (listen_port ? 1 : 0) + (fwmark ? 1 : 0) + (replace_peers ? 1 : 0);
    for (const auto& p : peers) {
        n += (p.remove ? 1 : 0) + (p.preshared_key ? 1 : 0) + (p.endpoint ? 1 : 0) +
             (p.persistent_keepalive ? 1 : 0) + (p.replace_allowed_ips ? 1 : 0) +
             p.allowed_ips.size();
        // A bare peer entry (no field) still creates the peer.
        if (!p.remove && !p.update_only && !p.preshared_key && !p.endpoint &&
            !p.persistent_keepalive && !p.replace_allowed_ips && p.allowed_ips.empty()) {
            ++n;
        }
    }
    return n;
}

wg_device_update wg_device_update::full(const wg_device& d) {
    wg_device_update u;
    u.private_key = d.private_key;
    u.listen_port = d.listen_port;
    u.fwmark = d.fwmark;
    u.replace_peers = true;
    u.peers.reserve(d.peers.size());
    for (const auto& p : d.peers) {
        wg_peer_update pu;
        pu.public_key = p.public_key;
        if (p.preshared_key) pu.preshared_key = p.preshared_key;
        pu.endpoint = p.endpoint;
        if (p.persistent_keepalive) pu.persistent_keepalive = p.persistent_keepalive;
        pu.replace_allowed_ips = true;
        pu.allowed_ips = normalize_allowed_ips(p.allowed_ips);
        u.peers.push_back(std::move(pu));
    }
    return u;
}

void apply_update(wg_device& m, const wg_device_update& u) {
    if (u.private_key) {
        if (u.private_key->is_zero()) {
            m.private_key.reset();
            m.public_key.reset();
        } else {
            m.private_key = u.private_key;
            m.public_key = u.private_key->public_key();
        }
    }
    if (u.listen_port) m.listen_port = u.listen_port;
    if (u.fwmark) m.fwmark = u.fwmark;
    if (u.replace_peers) m.peers.clear();
    for (const auto& pu : u.peers) {
        auto it = std::find_if(m.peers.begin(), m.peers.end(),
                               [&](const wg_peer& p) { return p.public_key == pu.public_key; });
        if (pu.remove) {
            if (it != m.peers.end()) m.peers.erase(it);
            continue;
        }
        if (it == m.peers.end()) {
            if (pu.update_only) continue;
            m.peers.push_back(wg_peer{});
            m.peers.back().public_key = pu.public_key;
            it = m.peers.end() - 1;
        }
        wg_peer& p = *it;
        if (pu.preshared_key) {
            if (pu.preshared_key->is_zero())
                p.preshared_key.reset();
            else
                p.preshared_key = pu.preshared_key;
        }
        if (pu.endpoint) p.endpoint = pu.endpoint;
        if (pu.persistent_keepalive) p.persistent_keepalive = *pu.persistent_keepalive;
        if (pu.replace_allowed_ips) p.allowed_ips.clear();
        // An allowed-ip belongs to one peer only: adding it here takes it from any other peer.
        for (const auto& a : pu.allowed_ips) {
            auto net = a.network();
            for (auto& other : m.peers) {
                if (&other == &p) continue;
                std::erase(other.allowed_ips, net);
            }
            p.allowed_ips.push_back(net);
        }
        p.allowed_ips = normalize_allowed_ips(p.allowed_ips);
    }
}

}  // namespace mw
