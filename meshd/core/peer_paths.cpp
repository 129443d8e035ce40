#include "meshd/core/peer_paths.hpp"

#include <algorithm>

namespace mw::meshd {

peer_paths::peer_paths(core_context& ctx, const record_store& store, relay_directory& relays,
                       relay_election& election, const relay_role& role)
    : ctx_(ctx),
      store_(store),
      relays_(relays),
      election_(election),
      role_(role),
      routes_(route_policy{ctx.cfg.cluster_cidrs, ctx.cfg.node_cidr_mask_v4,
                           ctx.cfg.node_cidr_mask_v6, ctx.cfg.pod_cidrs}) {}

void peer_paths::sync_host_underlay() {
    std::vector<ip_address> v;
    v.reserve(ctx_.cfg.endpoints.size());
    for (const auto& e : ctx_.cfg.endpoints) v.push_back(e.address);
    for (const auto& r : ctx_.cfg.relays) v.insert(v.end(), r.addresses.begin(), r.addresses.end());
    v.insert(v.end(), ctx_.cfg.bootstrap.begin(), ctx_.cfg.bootstrap.end());
    if (v == host_underlay_) return;
    host_underlay_ = v;
    mark_routes(routes_.set_host_underlay(std::move(v)));
}

void peer_paths::log_refusals() {
    for (const auto& e : routes_.take_new_refusals()) {
        const peer_record* rec = store_.find(e.node);
        ctx_.log(2, "pod CIDR refused; not routed to this peer",
                 {{"peer", rec ? rec->name : e.node.short_hex()},
                  {"node_id", e.node.short_hex()},
                  {"cidr", e.refusal.cidr.str()},
                  {"reason", to_string(e.refusal.reason)}});
    }
}

void peer_paths::decide_now(const node_id& id, peer_entry& p, const peer_record& rec,
                            uint64_t now) {
    uint64_t outer = ctx_.next_deadline();
    ctx_.set_next_deadline(UINT64_MAX);
    decide(id, p, rec, now);
    uses_touched_.push_back(id);
    set_next_check(p, ctx_.next_deadline());
    ctx_.set_next_deadline(std::min(outer, p.next_check_ms));
}

uint64_t peer_paths::uses_sig(const peer_entry& p, uint64_t now) const {
    // FNV-1a over what the lists take from a pair: active or not, relayed or not, the relay in
    // use and the warm set's relays.
    uint64_t h = 1469598103934665603ULL;
    auto mix = [&](const uint8_t* b, size_t n) {
        for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ULL;
    };
    const uint8_t flags =
        uint8_t((active(p, now) ? 1 : 0) | (p.dp.path == path_kind::relay ? 2 : 0));
    mix(&flags, 1);
    mix(p.dp.relay.data(), node_id::size);
    for (const auto& w : p.relayed.warm) mix(w.relay.data(), node_id::size);
    return h;
}

const peer_paths::relay_uses& peer_paths::uses(uint64_t now) {
    bool walk = uses_stale_ || now >= uses_valid_until_;
    for (const auto& id : uses_touched_) {
        if (walk) break;
        auto it = peers_.find(id);
        walk = it == peers_.end() || uses_sig(it->second, now) != it->second.uses_sig;
    }
    uses_touched_.clear();
    if (!walk) return uses_;
    uses_stale_ = false;
    uses_valid_until_ = UINT64_MAX;
    uses_.warm_active.clear();
    uses_.used.clear();
    auto add = [](std::vector<node_id>& v, const node_id& r) {
        if (std::find(v.begin(), v.end(), r) == v.end()) v.push_back(r);
    };
    for (auto& [id, p] : peers_) {
        p.uses_sig = uses_sig(p, now);
        const bool is_active = active(p, now), relayed = p.dp.path == path_kind::relay;
        // Its warm relays leave the fast list when it turns idle: walk again then.
        if (is_active && !p.relayed.warm.empty())
            uses_valid_until_ = std::min(uses_valid_until_, p.active_until);
        if (relayed) add(uses_.used, p.dp.relay);
        for (const auto& w : p.relayed.warm) {
            if (is_active) add(uses_.warm_active, w.relay);
            if (relayed) add(uses_.used, w.relay);
        }
    }
    return uses_;
}

void peer_paths::activate(peer_entry& p, uint64_t now) {
    if (!active(p, now)) {
        // Was idle: its held decision is tested now (fresh()), by probes sent at once.
        p.held_from_ms = p.active_until;
        p.active_since = now;
        p.next_probe_ms = now;
        p.relayed.next_inband_ms = now;
        p.relayed.wg.restart();  // WireGuard progress is judged from now on, with fresh reports
        // Bound again at once: a relay that restarted while we were idle lost them.
        for (auto& w : p.relayed.warm) {
            if (w.accepted) w.next_request_ms = now;
        }
        recheck(p);
        ctx_.due(now);
    }
    p.active_until = std::max(p.active_until, now + ctx_.cfg.active_hold_ms);
    latest_active_until_ = std::max(latest_active_until_, p.active_until);
    uses_touched_.push_back(p.dp.id);  // its warm relays are probed fast from this tick on
}

bool peer_paths::fresh(uint64_t last, const peer_entry& p, uint64_t now, uint64_t t) const {
    if (!last) return false;
    if (now <= last + t) return true;
    // Held over the idle spell: it still vouched for the path when the pair went idle (or it
    // came while idle). Once active again it must answer within a timeout of the spell's start.
    const bool is_active = active(p, now);
    const bool held = last + t >= (is_active ? p.held_from_ms : p.active_until);
    return held && (!is_active || now <= p.active_since + t);
}

const peer_paths::candidate* peer_paths::candidate_in_use(const peer_entry& p) const {
    if (p.dp.path != path_kind::direct || p.learned || !p.dp.endpoint) return nullptr;
    for (const auto& c : p.candidates) {
        if (c.ep.address == p.dp.endpoint->address) return &c;
    }
    return nullptr;
}

const peer_paths::candidate* peer_paths::answering(const peer_entry& p, uint64_t now) const {
    for (const auto& c : p.candidates) {
        if (fresh(c.last_pong_ms, p, now, ctx_.cfg.path_timeout_ms)) return &c;
    }
    return nullptr;
}

void peer_paths::relayed_before(const node_id& id, uint64_t now) {
    if (id == ctx_.id() || relayed_before_.size() >= store_.config().max_records) return;
    relayed_before_.insert(id);
    if (auto it = peers_.find(id); it != peers_.end()) recheck(it->second);
    ctx_.due(now);
}

void peer_paths::route_mtus_before(const std::map<ip_prefix, unsigned>& routes, uint64_t now) {
    for (const auto& [prefix, mtu] : routes) {
        // Bounded like the store (each record has at most max_cidrs pod CIDRs).
        if (mtu_before_.size() >= store_.config().max_records * peer_record::max_cidrs) break;
        if (mtu) mtu_before_[prefix.network()] = mtu;
    }
    // A peer that takes no path within 10 minutes searches afresh when it does.
    mtu_before_until_ = now + 600'000;
    for (auto& [id, p] : peers_) recheck(p);
    ctx_.due(now);
}

unsigned peer_paths::mtu_before(const peer_dataplane& dp) const {
    unsigned m = 0;
    for (const auto& a : dp.allowed_ips) {
        if (auto it = mtu_before_.find(a.network()); it != mtu_before_.end()) {
            m = m ? std::min(m, it->second) : it->second;
        }
    }
    return m;
}

uint64_t peer_paths::wg_read_interval(uint64_t now) const {
    const auto& cfg = ctx_.cfg;
    if (now >= latest_active_until_) return cfg.wg_read_interval_ms;  // no pair active
    // Late: no PONG for so long that a read at the slow interval would end within read_slack_ms
    // of the path timeout (1 s by default). Reads come fast from then on, so that a read whose
    // rx growth holds the path (credited to the read before, which came after the last PONG)
    // reaches the core read_slack_ms before the PONGs' verdict, though its result arrives after
    // the read (the daemon reads on another thread). Before, "late" was 1.5 s: a read started
    // just before then was followed by one at the path timeout itself, late by the read's own
    // delay: 1 run in 16 of e2e_meshd_restart (d) lost its direct pair to the relay.
    const uint64_t need = cfg.wg_read_interval_ms + read_slack_ms;
    const uint64_t late = cfg.path_timeout_ms > need ? cfg.path_timeout_ms - need : 0;
    for (const auto& [id, p] : peers_) {
        if (p.dp.path != path_kind::direct || p.learned || !active(p, now)) continue;
        if (p.held_by_wg) return cfg.wg_read_fast_interval_ms;
        uint64_t last = 0;
        for (const auto& c : p.candidates) last = std::max(last, c.last_pong_ms);
        if (now > std::max(last, p.active_since) + late) return cfg.wg_read_fast_interval_ms;
    }
    return cfg.wg_read_interval_ms;
}

size_t peer_paths::active_pairs(uint64_t now) const {
    size_t n = 0;
    for (const auto& [id, p] : peers_) n += active(p, now);
    return n;
}

void peer_paths::on_traffic(const node_id& peer, uint64_t now) {
    if (auto it = peers_.find(peer); it != peers_.end()) activate(it->second, now);
}

void peer_paths::take_candidates(const node_id& id, peer_entry& p, const peer_record& rec,
                                 uint64_t now) {
    // Candidates follow the record (and the offered addresses), keeping what we measured for
    // addresses that stay.
    std::vector<candidate> cands;
    auto add = [&](const wg_endpoint& e) {
        // Any PSK holder signs what it likes: a record's addresses are probed only if they are
        // unicast addresses at the cluster's port (endpoint_filter.hpp).
        if (!ctx_.endpoint_allowed(e, "record")) return;
        candidate c{normalize_endpoint(e)};
        for (const auto& o : p.candidates) {
            if (o.ep == c.ep) c = o;
        }
        cands.push_back(c);
    };
    for (const auto& e : rec.endpoints) add(e);
    if (auto it = offered_.find(id); it != offered_.end()) {
        for (const auto& o : it->second) {
            wg_endpoint n = normalize_endpoint(o.ep);
            if (std::none_of(cands.begin(), cands.end(), [&](const auto& c) { return c.ep == n; }))
                add(o.ep);
        }
    }
    // New addresses are tried at once, as for a new peer (an idle pair would never probe them).
    bool changed = cands.size() != p.candidates.size();
    for (size_t i = 0; !changed && i < cands.size(); ++i)
        changed = !(cands[i].ep == p.candidates[i].ep);
    if (changed) activate(p, now);
    p.candidates = std::move(cands);
    p.record_seq = rec.seq;
    recheck(p);
}

void peer_paths::add_candidate(const node_id& id, const wg_endpoint& ep, learned_via via,
                               uint64_t now) {
    if (id == ctx_.id()) return;
    if (!ctx_.endpoint_allowed(ep, to_string(via))) return;
    auto it = offered_.find(id);
    if (it == offered_.end()) {
        // Bounded like the store: one entry per node the store could hold.
        if (offered_.size() >= store_.config().max_records) return;
        it = offered_.emplace(id, std::vector<offered>{}).first;
    }
    auto& v = it->second;
    for (const auto& o : v) {
        if (o.ep == ep && o.via == via) return;
    }
    if (v.size() >= peer_record::max_endpoints) v.erase(v.begin());  // the oldest goes
    v.push_back(offered{ep, via});
    if (auto p = peers_.find(id); p != peers_.end()) {
        p->second.record_seq = 0;  // take them
        recheck(p->second);
    }
    ctx_.due(now);
}

learned_via_set peer_paths::offered_via(const node_id& id) const {
    learned_via_set s = 0;
    if (auto it = offered_.find(id); it != offered_.end()) {
        for (const auto& o : it->second) s = s | o.via;
    }
    return s;
}

void peer_paths::withdraw_candidates(learned_via via, uint64_t now) {
    for (auto it = offered_.begin(); it != offered_.end();) {
        auto n = it->second.size();
        std::erase_if(it->second, [&](const offered& o) { return o.via == via; });
        if (n != it->second.size()) {
            if (auto p = peers_.find(it->first); p != peers_.end()) {
                p->second.record_seq = 0;
                recheck(p->second);
            }
        }
        it = it->second.empty() ? offered_.erase(it) : std::next(it);
    }
    ctx_.due(now);
}

void peer_paths::take_record(const node_id& id, peer_entry& p, const peer_record& rec,
                             uint64_t now) {
    if (p.record_seq == rec.seq) return;
    take_candidates(id, p, rec, now);
    std::vector<ip_address> addrs;
    addrs.reserve(rec.endpoints.size());
    for (const auto& e : rec.endpoints) addrs.push_back(e.address);
    mark_routes(routes_.update(id, rec.pod_cidrs, addrs));
}

void peer_paths::tick(uint64_t now) {
    sync_host_underlay();
    if (!recheck_all_ && store_.generation() == walked_generation_) {
        // The record set is as at the last walk: only the peers due, and those whose route
        // decision changed (a pin they waited for was freed), are decided again. Collected
        // first: a decision may make another peer due (recheck), and taking a record may free a
        // route pin (routes_dirty_); those wait for the next tick (due now) rather than looping
        // here, where the walk decided them in the same tick.
        std::vector<node_id> ids;
        for (auto it = due_.begin(); it != due_.end() && it->first <= now; ++it) {
            ids.push_back(it->second);
        }
        for (const auto& id : std::exchange(routes_dirty_, {})) ids.push_back(id);
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
        for (const auto& id : ids) {
            auto it = peers_.find(id);
            const peer_record* rec = store_.find(id);
            if (it == peers_.end() || !rec) continue;
            take_record(id, it->second, *rec, now);  // candidates offered since (record_seq 0)
            decide_now(id, it->second, *rec, now);
        }
        if (!due_.empty()) ctx_.due(due_.begin()->first);
        if (!routes_dirty_.empty()) ctx_.due(now);
        log_refusals();
        return;
    }
    // Both are maps ordered by node ID, walked together in one pass (with hundreds of peers,
    // per-peer lookups and key hashing were most of a walk's cost).
    walked_generation_ = store_.generation();
    auto pit = peers_.begin();
    auto drop_until = [&](const node_id* id) {
        while (pit != peers_.end() && (!id || pit->first < *id)) {
            ctx_.log(1, "peer gone (record expired)", {{"peer", pit->second.dp.name}});
            mark_routes(routes_.remove(pit->first));
            routes_dirty_.erase(pit->first);
            unindex_keys(pit->first, pit->second);
            due_.erase({pit->second.next_check_ms, pit->first});
            uses_stale_ = true;
            pit = peers_.erase(pit);
            ++dp_version_;
        }
    };
    const bool all = std::exchange(recheck_all_, false);
    store_.for_each_with_id([&](const node_id& id, const peer_record& rec) {
        drop_until(&id);
        if (id == ctx_.id()) return;
        bool inserted = pit == peers_.end() || !(pit->first == id);
        if (inserted) pit = peers_.emplace_hint(pit, id, peer_entry{});
        peer_entry& p = pit->second;
        ++pit;
        if (inserted) {
            p.dp.id = id;
            due_.emplace(p.next_check_ms, id);
            p.discovered_ms = now;
            activate(p, now);  // probed until its path is settled
            ctx_.log(1, "peer discovered", {{"peer", rec.name}, {"node_id", id.short_hex()}});
            ++dp_version_;
        }
        take_record(id, p, rec, now);
        const bool routes_changed = routes_dirty_.erase(id) > 0;
        // Only peers with something due are decided again.
        if (!all && !routes_changed && now < p.next_check_ms) return;
        decide_now(id, p, rec, now);
    });
    drop_until(nullptr);
    // Route decisions of peers already passed changed (a pin they waited for was freed).
    for (const auto& id : std::exchange(routes_dirty_, {})) {
        auto it = peers_.find(id);
        const peer_record* rec = store_.find(id);
        if (it != peers_.end() && rec) decide_now(id, it->second, *rec, now);
    }
    if (!due_.empty()) ctx_.due(due_.begin()->first);
    if (!routes_dirty_.empty()) ctx_.due(now);
    log_refusals();
}

void peer_paths::decide(const node_id& id, peer_entry& p, const peer_record& rec, uint64_t now) {
    const auto& cfg = ctx_.cfg;
    const bool in_use_direct = p.dp.path == path_kind::direct && !p.learned;
    const bool is_active = active(p, now);
    // Probe the direct candidates: an active pair's, and (slowly) those of a pair with no path.
    // An idle pair with a path sends nothing: that is what keeps idle cost off the peer count.
    const candidate* in_use = in_use_direct ? candidate_in_use(p) : nullptr;
    // Active on a direct path: the address in use is probed at its loss-adapted interval
    // (direct_loss), the peer's other addresses at ping_interval_ms as before (a record's extra
    // addresses are never probed faster).
    const bool adapted = is_active && in_use;
    if (now >= p.next_probe_ms) {
        if (is_active || p.dp.path == path_kind::none) {
            const bool others = !adapted || now >= p.next_others_ms;
            for (size_t i = 0; i < p.candidates.size(); ++i) {
                const bool this_in_use = &p.candidates[i] == in_use;
                if (!this_in_use && !others) continue;
                const uint64_t sent =
                    ctx_.send_ping(p.candidates[i].ep, 0, probe{probe_kind::direct, id, i}, now);
                // A ping the send budget refused is not a probe the link lost.
                if (this_in_use && adapted && sent) p.direct_loss.sent(now);
            }
            if (adapted && others) p.next_others_ms = now + cfg.ping_interval_ms;
        }
        uint64_t interval = !is_active ? cfg.idle_ping_interval_ms
                            : in_use_direct || p.dp.path == path_kind::none || p.learned
                                ? cfg.ping_interval_ms
                                : cfg.upgrade_interval_ms;
        if (adapted) {
            interval =
                p.direct_loss.interval_for(cfg.path_timeout_ms, cfg.ping_interval_ms,
                                           std::min(min_direct_interval_ms, cfg.ping_interval_ms),
                                           core_context::tick_quantum_ms);
        }
        p.next_probe_ms = now + interval;
    }
    ctx_.due(p.next_probe_ms);
    if (is_active && in_use) {
        probe_direct_mtu(id, p, rec, *in_use, now);
    } else if (!in_use && !p.learned) {
        p.direct_mtu.clear();  // no direct path in use: nothing to measure or apply
    }
    // A probe unanswered for twice the address's RTT (at least a second) is lost.
    if (in_use) {
        p.direct_loss.judge(now,
                            std::max<uint64_t>(1000, static_cast<uint64_t>(2 * in_use->rtt_ms)));
    }
    // The end of the active spell: the relays' and the election's rates follow.
    if (is_active) ctx_.due(p.active_until);

    peer_dataplane dp;
    dp.id = id;
    dp.name = rec.name;
    dp.wg_public_key = rec.wg_public_key;
    // Only what the route authority accepted is routed to the peer.
    if (const auto* d = routes_.find(id)) dp.allowed_ips = d->accepted;
    bool learned = false;
    bool held_by_wg = false;
    path_reason reason = path_reason::none;

    // A route MTU the previous meshd measured (issue 15): seeded into both searches before the
    // decision; the path taken confirms it (the other's is cleared below), and until a path is
    // taken the routes keep it. A restart would otherwise drop it at the first update, and a
    // smaller path would be a black hole until a new search completed.
    if (!mtu_before_.empty() && now >= mtu_before_until_) mtu_before_.clear();
    const unsigned kept_mtu = mtu_before_.empty() ? 0 : mtu_before(dp);
    if (kept_mtu) {
        p.direct_mtu.seed(kept_mtu, cfg.pmtu_max);
        p.relayed.pmtu.seed(kept_mtu, cfg.pmtu_max);
    }

    const candidate* best = nullptr;
    // The peer's PINGs that make a path learned: its direct probes (every ping_interval while it
    // is active), and on a serving relay also its relay probes, every idle_used_ping_interval
    // (120 s) or idle_spare_ping_interval; its NAT keepalives between them prove nothing (they
    // are not authenticated), so the path must outlast the slower of the two.
    const uint64_t learned_timeout =
        cfg.path_timeout_ms +
        (role_.serving() ? std::max({cfg.idle_ping_interval_ms, cfg.idle_used_ping_interval_ms,
                                     cfg.idle_spare_ping_interval_ms})
                         : 0);
    // When a fresh PONG stops vouching (only while active: an idle decision holds).
    auto due_expiry = [&](uint64_t last) {
        if (is_active) ctx_.due(std::max(last, p.active_since) + cfg.path_timeout_ms + 1);
    };
    for (const auto& c : p.candidates) {
        if (fresh(c.last_pong_ms, p, now, cfg.path_timeout_ms)) {
            if (!best || c.rtt_ms < best->rtt_ms) best = &c;
            due_expiry(c.last_pong_ms);
        }
    }
    // Keep the address in use (say the IPv4 one) while it answers unless another (the IPv6 one) is
    // clearly faster: every change is a WireGuard endpoint update, and millisecond RTTs are noise.
    if (best && p.dp.path == path_kind::direct && p.dp.endpoint &&
        best->ep.address != p.dp.endpoint->address) {
        for (const auto& c : p.candidates) {
            if (c.ep.address == p.dp.endpoint->address &&
                fresh(c.last_pong_ms, p, now, cfg.path_timeout_ms) &&
                c.rtt_ms - best->rtt_ms < std::max(cfg.switch_abs_ms, cfg.switch_rel * c.rtt_ms)) {
                best = &c;
                break;
            }
        }
    }
    if (best) {
        dp.path = path_kind::direct;
        // No NAT between us on this address (the peer saw our own): WireGuard's keepalive
        // only needs to be slow (issue 18). Behind a NAT we keep our mapping open ourselves.
        dp.keepalive = !best->nat_free;
        reason = best->ep.address.is_private() ? path_reason::lan : path_reason::public_address;
        if (rec.wg_port) {
            dp.endpoint = wg_endpoint{best->ep.address, rec.wg_port};
            // The direct path's MTU (probe_direct_mtu): a route MTU for its pod CIDRs. Another
            // address keeps it until its own confirmation (pmtu_prober::track).
            dp.path_mtu = p.direct_mtu.applied();
        } else {
            learned = true;
            reason = path_reason::learned;
        }
    } else if (p.dp.path == path_kind::direct && !p.learned && p.dp.endpoint && p.wg_rx_direct_ms &&
               now <= p.wg_rx_direct_ms + cfg.path_timeout_ms) {
        // The peer's meshd does not answer, but its WireGuard packets keep arriving on the direct
        // endpoint in use: the path works (the peer's meshd is restarting). A relay would not
        // help: the peer's meshd is what sets up its side of a relayed path.
        dp.path = path_kind::direct;
        dp.endpoint = p.dp.endpoint;
        dp.keepalive = p.dp.keepalive;
        dp.path_mtu = p.dp.path_mtu;
        held_by_wg = true;
        reason = path_reason::kept;
        ctx_.due(p.wg_rx_direct_ms + cfg.path_timeout_ms + 1);
    } else if (fresh(p.last_inbound_ms, p, now, learned_timeout)) {
        dp.path = path_kind::direct;
        learned = true;
        reason = path_reason::learned;
        // A NATed peer keeps its own mapping (its keepalive to us is fast: it saw a NAT); ours
        // need only be slow. A peer without NAT may sit behind a stateful firewall whose UDP
        // state outlives neither its slow keepalive nor silence: ours keep it (own_inbound_ms).
        // Issue 18: a relay sent every NATed LAN node a keepalive every 25 s beside the node's
        // own, ~6 MB a month per relay and node.
        dp.keepalive = fresh(p.own_inbound_ms, p, now, learned_timeout);
        if (is_active) {
            ctx_.due(std::max(p.last_inbound_ms, p.active_since) + learned_timeout + 1);
            p.direct_mtu.probe_learned(ctx_, id, rec.name, now);
        }
        dp.path_mtu = p.direct_mtu.applied();
    } else if (const relay_entry* rl = relays_.by_id(id);
               rl && rl->candidate && relays_.up(*rl, now) && now >= rl->not_serving_until) {
        // A serving relay answers at its relay address, which its record advertises: it is
        // reached directly by everyone, never through another relay.
        ctx_.due(now + cfg.ping_interval_ms);
    } else if (!role_.serving() && !p.candidates.empty() &&
               now < p.discovered_ms + cfg.direct_grace_ms && p.dp.path != path_kind::relay &&
               !relayed_before_.count(id)) {
        // A new peer: give its direct addresses a moment before binding relay sessions for it.
        // Not one relayed before our restart (its direct addresses did not answer then), nor
        // one relayed already (it was).
        ctx_.due(p.discovered_ms + cfg.direct_grace_ms);
        reason = path_reason::waiting;
    } else if (!role_.serving()) {
        ensure_keys(id, p, rec.wg_public_key);
        p.relayed.active = is_active;
        p.relayed.active_since = p.active_since;
        election_.choose(id, p.relayed, rec, now, dp);
        if (dp.path == path_kind::relay) {
            reason = relayed_before_.count(id) ? path_reason::relayed_before_restart
                                               : path_reason::no_direct_answer;
        }
    }
    p.reason = reason;
    if (dp.path != path_kind::relay) relay_election::release(p.relayed);
    // A learned path's probing lives while the pair is active (an idle pair keeps its MTU).
    p.direct_mtu.after_decision(learned, is_active, dp.path == path_kind::direct);
    if (kept_mtu) {
        if (dp.path == path_kind::none) {
            dp.path_mtu = kept_mtu < cfg.pmtu_max ? kept_mtu : 0;
        } else {
            for (const auto& a : dp.allowed_ips) mtu_before_.erase(a.network());
        }
        // Logged when the path taken kept it (a search under way, a path without a search,
        // the search off: not kept).
        if (dp.path != path_kind::none && dp.path_mtu == kept_mtu) {
            ctx_.log(1, "path MTU from before the restart kept, to be confirmed",
                     {{"peer", rec.name},
                      {"path", to_string(dp.path)},
                      {"path_mtu", std::to_string(dp.path_mtu)},
                      {"reason", "route_mtu_before_restart"}});
        }
    }
    // A relayed path not yet verified end to end (no in-band PONG since it was taken) stays
    // probed until the end-to-end verdict (3 path timeouts after it was taken): a relay that
    // black-holes the pair is found now, not when traffic starts. Bounded, so that a pair left
    // waiting on a full relay (REJECT capacity) does not probe for ever.
    if (dp.path == path_kind::relay && p.relayed.relay &&
        p.relayed.last_inband_pong_ms <= p.relayed.relay_since_ms &&
        now < p.relayed.relay_since_ms + 4 * cfg.path_timeout_ms) {
        activate(p, now);
    }
    if (held_by_wg != p.held_by_wg) {
        p.held_by_wg = held_by_wg;
        if (held_by_wg) {
            ctx_.log(1, "path kept",
                     {{"peer", rec.name},
                      {"path", to_string(dp.path)},
                      {"endpoint", dp.endpoint ? dp.endpoint->str() : "-"},
                      {"reason", "no PONG for " + std::to_string(cfg.path_timeout_ms) +
                                     " ms but WireGuard receives from the peer on it"}});
        }
    }
    // Only a relayed path's data plane follows the active spell (its keepalive): the decision is
    // taken again at the spell's end (due above), so the data plane changes only on the turns.
    dp.active = dp.path == path_kind::relay && active(p, now);
    if (dp != p.dp || learned != p.learned) {
        if (dp.path != p.dp.path || dp.endpoint != p.dp.endpoint || dp.relay != p.dp.relay ||
            learned != p.learned) {
            std::string ep = dp.endpoint ? dp.endpoint->str() : (learned ? "learned" : "-");
            core_context::log_fields f = {
                {"peer", rec.name}, {"path", to_string(dp.path)}, {"endpoint", ep}};
            if (dp.path == path_kind::relay) {
                f.emplace_back("relay", ctx_.name_of(dp.relay));
                f.emplace_back("reason", relayed_before_.count(id)
                                             ? std::string("relayed before the restart")
                                             : "no direct answer within " +
                                                   std::to_string(cfg.path_timeout_ms) + " ms");
            } else if (dp.path == path_kind::direct) {
                f.emplace_back("reason", learned ? "the peer reaches us directly"
                                                 : "the peer answers on a direct address");
            }
            ctx_.log(1, "path selected", std::move(f));
            // Probes in flight went to the previous address; its loss rate is a fair start.
            p.direct_loss.forget_pending();
            // A new path of ours is verified by probes for a while, even on an idle pair (a
            // learned one is the peer's to probe; none has nothing to probe).
            if (dp.path == path_kind::relay || (dp.path == path_kind::direct && !learned)) {
                activate(p, now);
                dp.active = dp.path == path_kind::relay;
            }
        }
        p.dp = std::move(dp);
        p.learned = learned;
        ++dp_version_;
    }
    if (p.dp.path != path_kind::none) relayed_before_.erase(id);
}

void peer_paths::unindex_keys(const node_id& id, const peer_entry& p) {
    if (!p.relayed.keys) return;
    auto [b, e] = by_probe_index_.equal_range(p.relayed.keys->recv_index);
    for (auto it = b; it != e; ++it) {
        if (it->second == id) {
            by_probe_index_.erase(it);
            return;
        }
    }
}

void peer_paths::ensure_keys(const node_id& id, peer_entry& p, const wg_key& key) {
    auto& r = p.relayed;
    if (r.keys_tried && r.keys_for == key) return;
    r.keys_tried = true;
    unindex_keys(id, p);
    r.keys.reset();
    r.keys_for = key;
    auto k = ctx_.probe_keys_for(id, key);
    if (k) {
        r.keys = *k;
        by_probe_index_.emplace(k->recv_index, id);
    } else {
        ctx_.log(2, "no sealed probes for a peer; old-style probes",
                 {{"peer", p.dp.name}, {"error", k.err().message}});
    }
}

void peer_paths::on_ping(const node_id& sender, uint64_t session_id, const wg_endpoint& from,
                         uint64_t now) {
    auto it = peers_.find(sender);
    if (it == peers_.end()) return;
    auto& p = it->second;
    if (session_id) {
        // An old-style in-band PING: the peer predates sealed probes (a rolling upgrade).
        if (!p.relayed.legacy_probes) {
            ctx_.log(1, "peer sends old-style in-band probes; answering in kind",
                     {{"peer", p.dp.name}});
        }
        p.relayed.legacy_probes = true;
        // The relay proxy checks the source of frames in sessions it knows; it also passes on
        // in-band control frames of a session it does not know (yet): the one the peer sends
        // through after we dropped it from our warm set. So the source is checked here too.
        auto from_relay = [&](const relay_entry& r) {
            return std::any_of(r.addrs.begin(), r.addrs.end(),
                               [&](const auto& a) { return a.ep == from; });
        };
        for (const auto& r : relays_.all()) {
            if (r.id && !r.self && relay_session_id(ctx_.id(), sender, *r.id) == session_id &&
                from_relay(r)) {
                if (p.relayed.peer_relay != r.id) recheck(p);
                p.relayed.peer_relay = r.id;
                p.relayed.peer_relay_ms = now;
            }
        }
    } else {
        p.last_inbound_ms = now;
        const auto src = normalize_endpoint(from);
        p.direct_mtu.on_peer_ping(src);
        const auto addr = src.address;
        if (std::any_of(p.candidates.begin(), p.candidates.end(),
                        [&](const auto& c) { return normalize_endpoint(c.ep).address == addr; })) {
            p.own_inbound_ms = now;
        }
        recheck(p);
    }
}

void peer_paths::probe_direct_mtu(const node_id& id, peer_entry& p, const peer_record& rec,
                                  const candidate& in_use, uint64_t now) {
    pmtu_path_signal sig;
    sig.ready = in_use.last_pong_ms != 0;
    sig.rtt_ms = sig.ready ? in_use.rtt_ms : 0;
    sig.loss = p.direct_loss.loss();
    sig.alive_sent_ms = in_use.answered_sent_ms;
    p.direct_mtu.probe_candidate(ctx_, id, rec.name, in_use.ep, sig, now);
}

void peer_paths::on_pong(const probe& pr, const node_id& sender, double rtt, uint64_t now,
                         const wg_endpoint* observed) {
    if (sender != pr.peer) return;
    auto pit = peers_.find(pr.peer);
    if (pit == peers_.end()) return;
    auto& pe = pit->second;
    if (pr.kind == probe_kind::direct && pr.index == direct_pmtu::learned_probe_index) {
        // A learned path's liveness PING, answered from the mapping probed.
        if (pe.direct_mtu.on_liveness_pong(pr, rtt, now)) recheck(pe);
    } else if (pr.kind == probe_kind::direct) {
        if (pr.index >= pe.candidates.size()) return;
        auto& c = pe.candidates[pr.index];
        if (!(normalize_endpoint(c.ep) == pr.ep)) return;  // the list changed since the PING
        c.last_pong_ms = now;
        c.answered_sent_ms = std::max(c.answered_sent_ms, pr.sent_ms);
        c.rtt_ms = c.rtt_min.update(rtt, now, ctx_.cfg.rtt_window_ms);
        if (&c == candidate_in_use(pe)) pe.direct_loss.answered(pr.sent_ms);
        if (observed) {
            const auto seen = normalize_endpoint(*observed).address;
            const auto& own = ctx_.cfg.endpoints;
            const bool nat_free = std::any_of(own.begin(), own.end(), [&](const auto& e) {
                return normalize_endpoint(e).address == seen;
            });
            if (nat_free != c.nat_free) {
                c.nat_free = nat_free;
                recheck(pe);
            }
        }
        recheck(pe);
    } else if (pr.kind == probe_kind::pmtu) {
        // A direct path's padded PING, answered from the address it measures.
        if (pe.direct_mtu.on_padded_pong(ctx_, pr, now)) recheck(pe);
    } else if (pr.kind == probe_kind::inband) {
        auto& r = pe.relayed;
        r.last_inband_pong_ms = now;
        r.inband_answered_sent_ms = std::max(r.inband_answered_sent_ms, pr.sent_ms);
        r.inband_loss.answered(pr.sent_ms);
        r.inband_rtt_ms = r.inband_rtt_ms == 0 ? rtt : 0.75 * r.inband_rtt_ms + 0.25 * rtt;
        recheck(pe);
    }
}

std::optional<std::pair<probe, double>> peer_paths::on_probe_frame(uint64_t session_id,
                                                                   const wg_endpoint& from,
                                                                   std::span<const uint8_t> frame,
                                                                   uint64_t now) {
    const auto peeked = peek_probe_index(frame);
    if (!peeked) {
        ++probe_frames_dropped_;
        return std::nullopt;
    }
    const uint32_t index = *peeked;
    auto from_relay = [&](const relay_entry& r) {
        return std::any_of(r.addrs.begin(), r.addrs.end(),
                           [&](const auto& a) { return a.ep == from; });
    };
    // The pair: among the peers whose frames carry this index (by_probe_index_), a warm session
    // of ours first (no hashing), else a session the peer uses that we do not (yet): its id is
    // hashed from the pair and the relay, so any pair's session at the relay that sent it (rare:
    // after a cut, or before our side bound it).
    peer_entry* pe = nullptr;
    const node_id* peer_id = nullptr;
    std::optional<node_id> relay;
    auto [first, last] = by_probe_index_.equal_range(index);
    for (auto c = first; c != last && !pe; ++c) {
        auto it = peers_.find(c->second);
        if (it == peers_.end()) continue;
        for (const auto& w : it->second.relayed.warm) {
            if (w.session_id != session_id) continue;
            const relay_entry* r = relays_.by_id(w.relay);
            if (r && from_relay(*r)) pe = &it->second, peer_id = &it->first, relay = w.relay;
        }
    }
    // A session hashed from a pair and a relay that sent the frame: the indexed peers, then those
    // whose keys are not derived (or not for their current key) yet, derived when a pair is first
    // relayed from our side (the peer may relay before that). That second walk visits every peer
    // (hashing only the unkeyed), as every lookup did before the index: a frame that matches no
    // keyed peer (a stray, or a forged header) still costs it.
    if (!pe) {
        std::vector<const relay_entry*> senders;
        for (const auto& r : relays_.all()) {
            if (r.id && !r.self && from_relay(r)) senders.push_back(&r);
        }
        auto hashed = [&](const node_id& id, peer_entry& p) {
            for (const relay_entry* r : senders) {
                if (relay_session_id(ctx_.id(), id, *r->id) != session_id) continue;
                pe = &p, peer_id = &id, relay = r->id;
                return;
            }
        };
        for (auto c = first; c != last && !pe; ++c) {
            if (auto it = peers_.find(c->second); it != peers_.end()) hashed(it->first, it->second);
        }
        for (auto it = peers_.begin(); it != peers_.end() && !pe && !senders.empty(); ++it) {
            const auto& r = it->second.relayed;
            if (!r.keys || r.keys_for != it->second.dp.wg_public_key) hashed(it->first, it->second);
        }
    }
    if (!pe) {
        ++probe_frames_dropped_;
        return std::nullopt;
    }
    peer_entry& p = *pe;
    const node_id id = *peer_id;
    ensure_keys(id, p, p.dp.wg_public_key);
    if (!p.relayed.keys || index != p.relayed.keys->recv_index) {
        ++probe_frames_dropped_;
        return std::nullopt;
    }
    // Bound once: nothing below resets the keys (only ensure_keys does).
    const probe_keys& keys = *p.relayed.keys;
    auto body = open_probe(keys, frame);
    if (!body) {
        ++probe_frames_dropped_;
        return std::nullopt;
    }
    auto& r = p.relayed;
    r.legacy_probes = false;  // it speaks sealed probes (again: upgraded)
    if (body->wg_reading_age_ms != probe_frame_body::no_reading) {
        r.wg.note_peers(body->wg_rx_bytes, now - std::min<uint64_t>(now, body->wg_reading_age_ms));
        recheck(p);
    }
    if (body->kind == probe_frame_kind::ping) {
        probe_frame_body pong = relay_election::wg_report(r, now);
        pong.kind = probe_frame_kind::pong;
        pong.request_id = body->request_id;
        ctx_.send_probe_frame(from, session_id, keys, pong);
        if (r.peer_relay != relay) recheck(p);
        r.peer_relay = relay;
        r.peer_relay_ms = now;
        return std::nullopt;
    }
    // Only from the relay and session the PING went to, for this pair.
    auto pr = ctx_.probes().take(body->request_id, normalize_endpoint(from), session_id, id);
    if (!pr) return std::nullopt;  // late, a replay, or not the probe's path
    double rtt = static_cast<double>(now - pr->sent_ms);
    if (pr->kind == probe_kind::user) return std::make_pair(*pr, rtt);
    if (pr->kind == probe_kind::inband) on_pong(*pr, id, rtt, now);
    // A padded probe's answer counts for the session in use only (a late one through the
    // previous relay says nothing of this path).
    if (pr->kind == probe_kind::pmtu && pr->session_id == r.session_id) {
        election_.on_pmtu_ack(r, static_cast<unsigned>(pr->token), now);
        recheck(p);
    }
    return std::nullopt;
}

void peer_paths::on_wireguard_counters(const std::vector<wg_peer_counters>& v, uint64_t read_ms) {
    for (const auto& c : v) {
        auto it = peers_.find(node_id::of(c.public_key));
        if (it == peers_.end()) continue;
        auto& p = it->second;
        // Growth beyond what an idle pair's keepalives and handshakes make: traffic. Or sending
        // with nothing back, beyond a handshake: traffic into a path that may have died.
        const auto& wg = p.relayed.wg;
        uint64_t tx = 0, rx = 0;
        if (wg.our_read_ms && c.tx_bytes >= wg.our_tx && c.rx_bytes >= wg.our_rx) {
            tx = c.tx_bytes - wg.our_tx;
            rx = c.rx_bytes - wg.our_rx;
        }
        p.relayed.wg.note_ours(c.tx_bytes, c.rx_bytes, read_ms);
        // rx that grew since the last read while the direct path was in use, with WireGuard at its
        // address (not roamed to a relay proxy's): the path carried the peer's packets after that
        // read. A reading without WireGuard's endpoint proves nothing about the path (the rx may
        // have come through a relay proxy): no credit.
        if (p.wg_read_ms && c.rx_bytes > p.wg_rx && p.dp.path == path_kind::direct && !p.learned &&
            p.dp.endpoint && c.endpoint &&
            normalize_endpoint(*c.endpoint).address == normalize_endpoint(*p.dp.endpoint).address) {
            p.wg_rx_direct_ms = p.wg_read_ms;
            recheck(p);
        }
        p.wg_rx = c.rx_bytes;
        p.wg_read_ms = read_ms;
        // Where WireGuard sends on a learned path (it roams to the source of the peer's
        // packets): the address whose mapping probe_learned_mtu measures.
        if (p.learned && c.endpoint) p.direct_mtu.on_wireguard_endpoint(*c.endpoint);
        // Counted over reads in a row without rx: an idle end that only keepalives into a dead
        // path also gets there, by WireGuard's handshake retries (148 bytes every 5 s).
        p.tx_unanswered = rx ? 0 : p.tx_unanswered + tx;
        if (tx + rx > ctx_.cfg.traffic_bytes_per_read ||
            p.tx_unanswered >= ctx_.cfg.unanswered_tx_bytes_per_read) {
            p.tx_unanswered = 0;
            activate(p, read_ms);
        }
        if (p.dp.path == path_kind::relay) recheck(p);
    }
}

void peer_paths::retry_session_request(const node_id& relay, uint64_t request_id, uint64_t now) {
    for (auto& [id, p] : peers_) {
        for (auto& w : p.relayed.warm) {
            if (w.relay == relay && w.request_id == request_id) {
                w.next_request_ms = now;
                recheck(p);
            }
        }
    }
    ctx_.due(now);
}

void peer_paths::rebind_sessions(const node_id& relay, uint64_t now) {
    for (auto& [id, p] : peers_) {
        for (auto& w : p.relayed.warm) {
            if (w.relay == relay) {
                w.next_request_ms = now;
                recheck(p);
            }
        }
    }
    ctx_.due(now);
}

void peer_paths::on_session_answer(const node_id& relay, uint64_t request_id,
                                   const wg_endpoint& from, uint64_t session_id, const node_id& to,
                                   bool accepted, uint8_t reason, uint64_t now) {
    auto it = peers_.find(to);
    if (it == peers_.end()) return;
    auto& p = it->second;
    if (election_.on_session_answer(p.relayed, p.dp.name, relay, request_id, from, session_id,
                                    accepted, reason, now)) {
        recheck(p);
    }
}

result<uint64_t> peer_paths::ping(const node_id& peer, uint64_t now) {
    auto it = peers_.find(peer);
    if (it == peers_.end()) return error(errc::not_found, "no such peer");
    auto& p = it->second;
    activate(p, now);  // a ping tests the path as traffic would
    uint64_t token = next_token_++;
    probe pp{probe_kind::user, peer};
    pp.token = token;
    if (p.dp.path == path_kind::direct) {
        // The control endpoint behind the direct path, or (learned) the last direct PING source
        // is not known here: probe every candidate; the first answer wins.
        bool sent = false;
        for (const auto& c : p.candidates) {
            if (p.dp.endpoint && c.ep.address != p.dp.endpoint->address) continue;
            ctx_.send_ping(c.ep, 0, pp, now);
            sent = true;
        }
        if (!sent) {
            for (const auto& c : p.candidates) ctx_.send_ping(c.ep, 0, pp, now);
        }
    } else if (p.dp.path == path_kind::relay) {
        if (p.relayed.keys && !p.relayed.legacy_probes) {
            ctx_.send_probe_ping(p.dp.relay_endpoint, p.dp.session_id, *p.relayed.keys, pp,
                                 relay_election::wg_report(p.relayed, now), now);
        } else {
            ctx_.send_ping(p.dp.relay_endpoint, p.dp.session_id, pp, now);
        }
    } else {
        return error(errc::state_mismatch, "no path to " + p.dp.name + " yet");
    }
    ctx_.due(now + ctx_.cfg.ping_timeout_ms);
    return token;
}

void peer_paths::shift_clocks(uint64_t late, uint64_t now) {
    for (auto& [id, p] : peers_) {
        for (auto& c : p.candidates) core_context::shift_clock(c.last_pong_ms, late, now);
        core_context::shift_clock(p.last_inbound_ms, late, now);
        core_context::shift_clock(p.own_inbound_ms, late, now);
        core_context::shift_clock(p.wg_read_ms, late, now);
        core_context::shift_clock(p.wg_rx_direct_ms, late, now);
        core_context::shift_clock(p.relayed.last_inband_pong_ms, late, now);
        p.relayed.inband_loss.forget_pending();
        p.direct_loss.forget_pending();  // our stall, not the link's loss
        core_context::shift_clock(p.relayed.peer_relay_ms, late, now);
    }
}

std::optional<node_id> peer_paths::resolve(const std::string& name_or_id) const {
    for (const auto& [id, p] : peers_) {
        if (p.dp.name == name_or_id || id.hex() == name_or_id) return id;
    }
    return std::nullopt;
}

std::vector<peer_dataplane> peer_paths::dataplane() const {
    std::vector<peer_dataplane> v;
    v.reserve(peers_.size());
    for (const auto& [id, p] : peers_) v.push_back(p.dp);
    return v;
}

size_t peer_paths::relayed_through(const node_id& relay) const {
    size_t n = 0;
    for (const auto& [id, p] : peers_) {
        if (p.dp.path == path_kind::relay && p.dp.relay == relay) ++n;
    }
    return n;
}

std::vector<peer_view> peer_paths::views() const {
    std::vector<peer_view> v;
    for (const auto& [id, p] : peers_) {
        peer_view pv;
        pv.id = id;
        pv.name = p.dp.name;
        pv.wg_public_key = p.dp.wg_public_key;
        pv.pod_cidrs = p.dp.allowed_ips;
        if (const auto* d = routes_.find(id)) pv.refused_cidrs = d->refused;
        pv.path = p.dp.path;
        pv.reason = p.reason;
        pv.learned = p.learned;
        pv.endpoint = p.dp.endpoint;
        if (p.dp.path == path_kind::relay) {
            pv.relay = p.dp.relay;
            pv.relay_name = ctx_.name_of(p.dp.relay);
            pv.session_id = p.dp.session_id;
            pv.session_accepted = p.relayed.accepted;
            // The one in use first: warm is in ranking order, and the election may keep a
            // second-ranked relay in use (hysteresis).
            for (const auto& w : p.relayed.warm) {
                const bool in_use = w.relay == p.dp.relay;
                pv.relay_sessions.insert(
                    in_use ? pv.relay_sessions.begin() : pv.relay_sessions.end(),
                    {ctx_.name_of(w.relay), in_use, w.accepted});
            }
            if (p.relayed.last_inband_pong_ms) pv.rtt_ms = p.relayed.inband_rtt_ms;
            pv.path_mtu = p.relayed.pmtu.measured();
            pv.path_mtu_complete = p.relayed.pmtu.complete();
        } else if (p.dp.path == path_kind::direct) {
            for (const auto& c : p.candidates) {
                if (c.last_pong_ms && (!pv.rtt_ms || c.rtt_ms < *pv.rtt_ms)) pv.rtt_ms = c.rtt_ms;
            }
            pv.path_mtu = p.direct_mtu.measured();
            pv.path_mtu_complete = p.direct_mtu.complete();
        }
        v.push_back(std::move(pv));
    }
    return v;
}

}  // namespace mw::meshd
