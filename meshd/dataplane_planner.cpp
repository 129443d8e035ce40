#include "meshd/dataplane_planner.hpp"

#include <algorithm>

namespace mw::meshd {

const char* to_string(proxy_op::kind k) noexcept {
    switch (k) {
        case proxy_op::kind::add_peer:
            return "add_peer";
        case proxy_op::kind::retarget_peer:
            return "retarget_peer";
        case proxy_op::kind::add_alias:
            return "add_alias";
        case proxy_op::kind::remove_alias:
            return "remove_alias";
        case proxy_op::kind::remove_peer:
            return "remove_peer";
    }
    return "?";
}

bool dataplane_planner::on_relay(const peer_dataplane& dp, bool proxy_up) const {
    if (dp.allowed_ips.empty()) return false;
    if (dp.path == path_kind::relay) return proxy_up;
    if (dp.path != path_kind::none) return false;
    // A kept peer whose WireGuard endpoint is its proxy socket: the socket stays while it is used.
    auto last = last_peer_.find(dp.id);
    auto px = proxied_.find(dp.id);
    return last != last_peer_.end() && px != proxied_.end() &&
           last->second.endpoint == px->second.local;
}

std::vector<proxy_op> dataplane_planner::proxy_ops(const std::vector<peer_dataplane>& desired,
                                                   bool proxy_up, uint64_t now) const {
    std::vector<proxy_op> ops;
    std::set<node_id> relayed;
    for (const auto& dp : desired) {
        if (on_relay(dp, proxy_up)) relayed.insert(dp.id);
        if (dp.allowed_ips.empty() || dp.path != path_kind::relay || !proxy_up) continue;
        auto it = proxied_.find(dp.id);
        if (it == proxied_.end()) {
            ops.push_back({proxy_op::kind::add_peer, dp.id, dp.name, dp.session_id, 0,
                           dp.relay_endpoint, dp.probe_index});
        } else if (it->second.session_id != dp.session_id ||
                   !(it->second.relay == dp.relay_endpoint)) {
            // Failover: one table update; a standby session is promoted in place.
            ops.push_back({proxy_op::kind::retarget_peer, dp.id, dp.name, it->second.session_id,
                           dp.session_id, dp.relay_endpoint});
        }
        // Warm standby sessions: the peer may send on any of them. Adding a registered one again
        // only refreshes its relay address.
        std::set<uint64_t> want;
        for (const auto& [sid, ep] : dp.standby) {
            if (sid == dp.session_id) continue;
            want.insert(sid);
            ops.push_back({proxy_op::kind::add_alias, dp.id, dp.name, dp.session_id, sid, ep});
        }
        if (it != proxied_.end()) {
            for (uint64_t old : it->second.aliases) {
                if (!want.count(old) && old != dp.session_id) {
                    ops.push_back(
                        {proxy_op::kind::remove_alias, dp.id, dp.name, dp.session_id, old, {}});
                }
            }
        }
    }
    // Proxy sockets of peers no longer relayed linger, then go; at once when the record is gone.
    for (const auto& [id, px] : proxied_) {
        if (relayed.count(id)) continue;
        // [&id = id]: clang before 16 (the TSan and fuzz builds use clang-14) cannot capture a
        // structured binding.
        bool gone = std::none_of(desired.begin(), desired.end(),
                                 [&id = id](const auto& d) { return d.id == id; });
        if (gone || (px.linger_until && now >= px.linger_until)) {
            ops.push_back({proxy_op::kind::remove_peer, id, {}, px.session_id, 0, {}});
        }
    }
    return ops;
}

void dataplane_planner::proxy_done(const proxy_op& op, bool ok, const wg_endpoint& local) {
    auto it = proxied_.find(op.peer);
    switch (op.op) {
        case proxy_op::kind::add_peer:
            if (ok) proxied_[op.peer] = proxied_peer{op.session_id, op.relay, local, 0, {}};
            break;
        case proxy_op::kind::retarget_peer:
            if (ok && it != proxied_.end()) {
                it->second.aliases.erase(op.other_id);
                it->second.session_id = op.other_id;
                it->second.relay = op.relay;
            }
            break;
        case proxy_op::kind::add_alias:
            if (it != proxied_.end()) {
                if (ok) {
                    it->second.aliases.insert(op.other_id);
                } else {
                    it->second.aliases.erase(op.other_id);
                }
            }
            break;
        case proxy_op::kind::remove_alias:
            if (it != proxied_.end()) it->second.aliases.erase(op.other_id);
            break;
        case proxy_op::kind::remove_peer:
            // Gone from the proxy whatever it answered (it drops the peer's aliases too).
            proxied_.erase(op.peer);
            break;
    }
}

void dataplane_planner::make_valid(std::vector<std::pair<node_id, wg_peer>>& planned,
                                   std::vector<std::string>& dropped) const {
    auto key_of = [](const ip_prefix& p) {
        ip_prefix n = p.network();
        return std::make_pair(n.address(), n.length());
    };
    // Incumbents first: a peer keeps an allowed-ip it has configured already.
    std::map<std::pair<ip_address, int>, node_id> owner;
    for (const auto& [id, p] : planned) {
        auto last = last_peer_.find(id);
        if (last == last_peer_.end()) continue;
        for (const auto& a : p.allowed_ips) {
            const auto& had = last->second.allowed_ips;
            if (std::any_of(had.begin(), had.end(),
                            [&](const ip_prefix& h) { return key_of(h) == key_of(a); })) {
                owner.try_emplace(key_of(a), id);
            }
        }
    }
    std::set<wg_key> keys;
    std::vector<std::pair<node_id, wg_peer>> kept;
    kept.reserve(planned.size());
    for (auto& [id, p] : planned) {  // in node ID order (desired is)
        if (p.public_key.is_zero() || !keys.insert(p.public_key).second) {
            dropped.push_back("peer " + id.short_hex() + ": all-zero or repeated WireGuard key");
            continue;
        }
        std::vector<ip_prefix> ips;
        for (const auto& a : p.allowed_ips) {
            if (!a.address().valid() || a.length() < 0 || a.length() > a.address().bits()) {
                dropped.push_back("peer " + id.short_hex() + ": invalid allowed-ip");
                continue;
            }
            auto [it, fresh] = owner.try_emplace(key_of(a), id);
            if (!fresh && !(it->second == id)) {
                dropped.push_back("peer " + id.short_hex() + ": allowed-ip " + a.str() +
                                  " is also wanted by peer " + it->second.short_hex());
                continue;
            }
            ips.push_back(a);
        }
        p.allowed_ips = std::move(ips);
        kept.emplace_back(id, std::move(p));
    }
    planned = std::move(kept);
}

wireguard_plan dataplane_planner::wireguard(const std::vector<peer_dataplane>& desired,
                                            bool proxy_up, uint64_t now) {
    wireguard_plan out;
    std::set<node_id> relayed;
    std::vector<std::pair<node_id, wg_peer>> planned;
    for (const auto& dp : desired) {
        // A peer without a path is not configured yet: WireGuard would try a handshake without an
        // endpoint, fail, and then wait REKEY_TIMEOUT (5 s) before it tries again once it has one.
        if (dp.allowed_ips.empty()) continue;
        if (on_relay(dp, proxy_up)) relayed.insert(dp.id);
        if (dp.path == path_kind::none) {
            // Had a path: WireGuard keeps the peer as it was. Removing it would drop its session
            // keys while the other end goes on sending with them, and that end starts a new
            // handshake only after 15 s of unanswered traffic (KEEPALIVE + REKEY_TIMEOUT): a
            // momentary "no path" in the control plane became a 15 s outage of working traffic.
            if (auto last = last_peer_.find(dp.id); last != last_peer_.end()) {
                wg_peer kept = last->second;
                kept.allowed_ips = dp.allowed_ips;  // the record's pod CIDRs stay current
                planned.emplace_back(dp.id, std::move(kept));
            } else if (auto s = seeds_.find(dp.id); s != seeds_.end()) {
                // From the cache, no path yet: installed at once (see the rules), no keepalive.
                wg_peer p;
                p.public_key = dp.wg_public_key;
                p.allowed_ips = dp.allowed_ips;
                p.endpoint = s->second.endpoint;
                s->second.planned = true;
                planned.emplace_back(dp.id, std::move(p));
            }
            continue;
        }
        seeds_.erase(dp.id);  // a real path: the cache's guess has done its job
        wg_peer p;
        p.public_key = dp.wg_public_key;
        p.allowed_ips = dp.allowed_ips;
        auto since = path_since_.try_emplace(dp.id, now).first->second;
        // The lower node ID first, the other 2 s later: each end's first keepalive starts a
        // handshake when it has no session, and meshd on both ends decides at the same moment
        // (same path time, same 2 s poll phase), so both handshakes crossed within
        // milliseconds. A session that stalled for 15-30 s was seen right after such a
        // crossing (1 run in about 11 of e2e_relays_runtime); starting one end first avoids it.
        // At the NAT rate only where a mapping needs it (issue 18): a relayed path through the
        // proxy leaves from meshd's control socket, whose mapping to the relay the relay probes
        // keep, so it gets one only while the pair is active (keepalive_relayed_s; none at
        // idle: the relay proxy makes a resumed pair's handshake survive a relay that died
        // meanwhile); a direct path the core found NAT-free gets the slow one
        // (keepalive_nat_free_s). The device is written only when this changes (the reconciler
        // compares with what it reads), i.e. on the pair's active/idle turns.
        const uint16_t want =
            dp.path == path_kind::relay
                ? (proxy_up ? (dp.active ? t_.keepalive_relayed_s : uint16_t(0)) : t_.keepalive_s)
                : (dp.keepalive ? t_.keepalive_s : t_.keepalive_nat_free_s);
        if (!want) {
            p.persistent_keepalive = 0;
        } else if (now >=
                   since + (self_ < dp.id ? t_.keepalive_first_ms : t_.keepalive_second_ms)) {
            p.persistent_keepalive = want;
        } else {
            out.keepalive_pending = true;
        }
        if (dp.path == path_kind::direct) {
            p.endpoint = dp.endpoint;  // nullopt: learned, left alone
        } else if (dp.path == path_kind::relay && proxy_up) {
            auto it = proxied_.find(dp.id);
            // Its add or retarget failed (logged by the caller): not configured this time.
            if (it == proxied_.end() || it->second.session_id != dp.session_id ||
                !(it->second.relay == dp.relay_endpoint)) {
                continue;
            }
            it->second.linger_until = 0;
            p.endpoint = it->second.local;
        }
        // relay path without the proxy (we serve as a relay): no endpoint, learned by roaming.
        planned.emplace_back(dp.id, std::move(p));
    }
    make_valid(planned, out.dropped);
    std::map<node_id, wg_peer> next_last;
    for (auto& [id, p] : planned) {
        out.peers.push_back(p);
        next_last.emplace(id, std::move(p));
    }
    last_peer_ = std::move(next_last);  // a peer whose record is gone is removed and forgotten
    // A seed the core has not turned into a peer yet (the records were offered, the core has not
    // ticked) stays; one whose peer was planned and left (its record went) goes.
    std::erase_if(seeds_, [&](const auto& kv) {
        return kv.second.planned && std::none_of(desired.begin(), desired.end(),
                                                 [&](const auto& d) { return d.id == kv.first; });
    });
    for (auto& [id, px] : proxied_) {
        if (!relayed.count(id) && !px.linger_until) px.linger_until = now + t_.proxy_linger_ms;
    }
    return out;
}

void dataplane_planner::seed(const node_id& peer, std::optional<wg_endpoint> endpoint) {
    seeds_[peer] = seed_entry{endpoint, false};
}

void dataplane_planner::proxy_gone() {
    // Relayed peers' endpoints were the proxy's sockets, now gone: a peer that is kept (no path
    // yet as seen from a relay) keeps its session keys but no endpoint, which WireGuard then
    // learns from the peer's first packet (roaming). Removing it made the peer's next packets
    // undecryptable here until it re-handshaked (15 s).
    for (const auto& [id, px] : proxied_) {
        if (auto it = last_peer_.find(id); it != last_peer_.end()) it->second.endpoint.reset();
    }
    proxied_.clear();
}

bool dataplane_planner::lingering() const {
    return std::any_of(proxied_.begin(), proxied_.end(),
                       [](const auto& kv) { return kv.second.linger_until != 0; });
}

}  // namespace mw::meshd
