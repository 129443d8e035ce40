#include "meshd/core/relay_directory.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstring>

namespace mw::meshd {

namespace {

bool has_ep(const relay_entry& r, const wg_endpoint& ep) {
    return std::any_of(r.addrs.begin(), r.addrs.end(), [&](const auto& a) { return a.ep == ep; });
}

}  // namespace

uint64_t relay_directory::idle_interval(const relay_entry& r) const {
    const auto& cfg = ctx_.cfg;
    // A relay that is not up (yet, or any more) is retried at most idle_ping_interval apart: one
    // that comes up late (started after us, back from a restart) is found within it.
    if (!r.was_up) return cfg.idle_ping_interval_ms;
    return std::max(cfg.idle_ping_interval_ms,
                    r.used ? cfg.idle_used_ping_interval_ms : cfg.idle_spare_ping_interval_ms);
}

bool relay_directory::behind_nat(const relay_entry& r) const {
    if (r.active >= r.addrs.size()) return true;
    const auto& seen = r.addrs[r.active].reflexive;
    if (!seen) return true;
    // The whole endpoint: a NAT that keeps our address (a port forward, a 1:1 NAT) may still
    // rewrite the port, and the mapping behind that needs traffic as much as any other.
    return std::none_of(ctx_.cfg.endpoints.begin(), ctx_.cfg.endpoints.end(),
                        [&](const auto& e) { return normalize_endpoint(e) == *seen; });
}

void relay_directory::keep_mapping(relay_entry& r, uint64_t now) {
    // Only while idle and answered at the address in use: fast relays are probed every 100 ms,
    // and an unanswered round is being retried with full PINGs (to every address) anyway.
    if (r.fast || !r.used || !r.round_answered || r.active >= r.addrs.size() ||
        !alive(r, r.addrs[r.active], timeout(r), now) || !behind_nat(r)) {
        return;
    }
    if (now >= r.next_keepalive_ms) {
        ctx_.send_nat_keepalive(r.addrs[r.active].ep);
        r.next_keepalive_ms = now + ctx_.cfg.idle_ping_interval_ms;
    }
    ctx_.due(r.next_keepalive_ms);
}

uint64_t relay_directory::timeout(const relay_entry& r) const {
    const auto& cfg = ctx_.cfg;
    return r.fast ? cfg.path_timeout_ms : idle_interval(r) + cfg.path_timeout_ms;
}

bool relay_directory::alive(const relay_entry& r, const relay_addr_state& a, uint64_t timeout_ms,
                            uint64_t now) const {
    // Counted from the later of its last PONG and the moment it turned fast: a relay probed
    // every 25 s while idle is not dead merely because a pair started sending. An address that
    // timed out stays down until it answers: its rate slowing (fast to idle, used to spare)
    // lengthens the timeout, which must not make a relay that failed look alive again.
    return a.last_pong_ms && !a.lost &&
           now <= std::max(a.last_pong_ms, r.fast_since_ms) + timeout_ms;
}

std::optional<relay_facts> relay_facts_of(const peer_record* rec) {
    if (!rec) return std::nullopt;
    return relay_facts{rec->flags, rec->endpoints, rec->name};
}

relay_directory::relay_directory(core_context& ctx, const record_store& store,
                                 std::function<void()> on_relays_changed,
                                 std::function<void()> on_self_changed)
    : ctx_(ctx),
      store_(store),
      on_relays_changed_(std::move(on_relays_changed)),
      on_self_changed_(std::move(on_self_changed)) {
    // Our own, never published: nobody can grind node IDs that rank first for us (add_found).
    for (size_t i = 0; i < found_salt_.size(); i += 8) {
        uint64_t v = ctx_.random_u64();
        std::memcpy(found_salt_.data() + i, &v, 8);
    }
}

uint64_t relay_directory::found_rank(const node_id& id) const {
    uint8_t h[16];
    crypto_generichash_state st;
    crypto_generichash_init(&st, found_salt_.data(), found_salt_.size(), sizeof h);
    crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>("meshwire found relay v1"), 23);
    crypto_generichash_update(&st, id.data(), node_id::size);
    crypto_generichash_final(&st, h, sizeof h);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | h[i];
    return v;
}

// What we learned about a relay that stays (ID, RTTs, the address in use): configured ones are
// matched by name, found ones by node ID or by a shared address.
relay_entry relay_directory::carry(relay_entry fresh, uint64_t now, bool reset_timers) const {
    // Across a switch between relayNodes and none configured, the same relay is carried over too
    // (by ID or address), so its liveness survives the switch.
    auto shares_address = [&](const relay_entry& o) {
        return std::any_of(fresh.addrs.begin(), fresh.addrs.end(),
                           [&](const auto& f) { return has_ep(o, f.ep); });
    };
    const relay_entry* old = nullptr;
    for (const auto& o : relays_) {
        if (fresh.origin == relay_origin::configured && o.origin == relay_origin::configured &&
            o.spec.name == fresh.spec.name) {
            old = &o;
            break;
        }
    }
    for (const auto& o : relays_) {
        if (old) break;
        bool by_id = fresh.origin != relay_origin::configured && fresh.id && o.id;
        if (by_id ? *o.id == *fresh.id : shares_address(o)) old = &o;
    }
    relay_entry e = old ? *old : relay_entry{};
    e.spec = fresh.spec;
    e.origin = fresh.origin;
    e.candidate = fresh.candidate;
    e.lan_neighbour = fresh.lan_neighbour;
    e.self = fresh.self;
    if (fresh.id) e.id = fresh.id;
    std::vector<relay_addr_state> addrs;
    for (auto s : fresh.addrs) {
        for (const auto& o : e.addrs) {
            if (o.ep == s.ep) s = o;
        }
        addrs.push_back(s);
    }
    // The address in use, found again by endpoint (a record may list them in a new order).
    e.active = SIZE_MAX;
    if (old && old->active < old->addrs.size()) {
        for (size_t k = 0; k < addrs.size(); ++k) {
            if (addrs[k].ep == old->addrs[old->active].ep) e.active = k;
        }
    }
    e.addrs = std::move(addrs);
    if (!old || reset_timers) {
        e.next_ping_ms = now;
        e.next_hello_ms = now;
    }
    return e;
}

void relay_directory::add_configured(std::vector<relay_entry>& next, uint64_t now,
                                     bool reset_timers) const {
    for (const auto& spec : ctx_.cfg.relays) {
        relay_entry e;
        e.spec = spec;
        e.self = spec.name == ctx_.cfg.node_name;
        if (e.self) e.id = ctx_.id();
        for (const auto& a : spec.addresses) {
            e.addrs.push_back(relay_addr_state{wg_endpoint{a, ctx_.cfg.control_port}});
        }
        next.push_back(carry(std::move(e), now, reset_timers));
    }
}

namespace {
bool used_by_other(const std::vector<relay_entry>& next, const wg_endpoint& ep,
                   const relay_entry* except) {
    return std::any_of(next.begin(), next.end(),
                       [&](const relay_entry& n) { return &n != except && has_ep(n, ep); });
}
}  // namespace

void relay_directory::add_rendezvous(std::vector<relay_entry>& next, uint64_t now,
                                     bool reset_timers, std::optional<learned_via> only) const {
    for (const auto& rv : rendezvous_) {
        if (only && rv.via != *only) continue;
        const ip_address& a = rv.ep.address;
        wg_endpoint ep = normalize_endpoint(rv.ep);
        bool ours = std::any_of(ctx_.cfg.endpoints.begin(), ctx_.cfg.endpoints.end(),
                                [&](const auto& e) { return e.address == a; });
        if (ours || used_by_other(next, ep, nullptr)) continue;
        relay_entry e;
        e.origin = relay_origin::bootstrap;
        e.candidate = false;
        e.lan_neighbour = rv.via == learned_via::mdns;
        e.spec = relay_spec{a.str(), {a}};
        e.addrs.push_back(relay_addr_state{ep});
        next.push_back(carry(std::move(e), now, reset_timers));
        // Two bootstrap addresses of one node (v4 and v6; its PONGs told the ID): one entry.
        relay_entry& last = next.back();
        for (size_t k = 0; last.id && k + 1 < next.size(); ++k) {
            if (next[k].id != last.id) continue;
            next[k].lan_neighbour = next[k].lan_neighbour && last.lan_neighbour;
            for (const auto& s : last.addrs) next[k].addrs.push_back(s);
            for (const auto& s : last.spec.addresses) next[k].spec.addresses.push_back(s);
            next.pop_back();
            break;
        }
    }
}

void relay_directory::add_found(std::vector<relay_entry>& next, uint64_t now,
                                bool reset_timers) const {
    std::vector<std::pair<uint64_t, relay_entry>> found;
    store_.for_each_with_id([&](const node_id& id, const peer_record& rec) {
        if (id == ctx_.id()) return;
        relay_entry* b = nullptr;
        for (auto& n : next) {
            bool at = !n.id &&
                      std::any_of(rec.endpoints.begin(), rec.endpoints.end(), [&](const auto& e) {
                          return normalize_endpoint(e) == n.addrs[0].ep;
                      });
            if ((n.id && *n.id == id) || at) {
                b = &n;
                break;
            }
        }
        // Where a serving node is reached: its public addresses (a private one would make it a
        // relay for its own LAN only, where everyone is direct anyway), on the cluster's port
        // only (a record must not make every node probe another service), and never an address
        // another entry already stands for (a stale or forged record claiming a relay's address).
        std::vector<wg_endpoint> eps;
        if (rec.relay_serving()) {
            for (const auto& e : rec.endpoints) {
                wg_endpoint n = normalize_endpoint(e);
                // endpoint_filter's rules without counting (peer_paths counts this record's
                // refusals once per version; this runs on every rebuild of the relay list).
                if (!e.address.is_private() &&
                    endpoint_filter::check(n, ctx_.cfg.control_port) == endpoint_refusal::none &&
                    !used_by_other(next, n, b))
                    eps.push_back(n);
            }
        }
        if (b) {  // a bootstrap node: named by its record, a relay if it serves
            b->spec.name = rec.name;
            b->id = id;
            b->candidate = !eps.empty();
            for (const auto& e : eps) {
                if (!has_ep(*b, e)) {
                    relay_addr_state st{e};
                    for (const auto& o : relays_) {
                        for (const auto& a : o.addrs) {
                            if (o.id && *o.id == id && a.ep == e) st = a;
                        }
                    }
                    b->addrs.push_back(st);
                    b->spec.addresses.push_back(e.address);
                }
            }
            return;
        }
        if (eps.empty()) return;
        relay_entry e;
        e.origin = relay_origin::discovered;
        e.id = id;
        e.spec.name = rec.name;
        for (const auto& ep : eps) {
            e.addrs.push_back(relay_addr_state{ep});
            e.spec.addresses.push_back(ep.address);
        }
        found.emplace_back(found_rank(id), std::move(e));
    });
    // Bounded: every node probes every relay (each PING, HELLO and RECORDS exchange costs all of
    // them), so a cluster with many public nodes uses max_found_relays of them: the first by a
    // hash of their node ID keyed with our own secret salt. It used to be the first by node ID,
    // the same for everyone: 16 ground low IDs displaced every honest relay on every node. Now
    // each node takes its own random sample; fake relays get the share of the sample that they
    // are of all serving records (numbers, not grinding), and a node's order cannot be ground
    // against because nobody else knows its salt. The sample is also the order our record lists
    // the relays we are attached to (attachments()).
    std::sort(found.begin(), found.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    size_t taken = 0;
    for (auto& [rank, e] : found) {
        if (taken >= ctx_.cfg.max_found_relays) break;
        // Two records claiming one address: the first in our order keeps it.
        std::erase_if(e.addrs, [&](const auto& a) { return used_by_other(next, a.ep, nullptr); });
        if (e.addrs.empty()) continue;
        e.spec.addresses.clear();
        for (const auto& a : e.addrs) e.spec.addresses.push_back(a.ep.address);
        next.push_back(carry(std::move(e), now, reset_timers));
        ++taken;
    }
}

void relay_directory::log_changes(const std::vector<relay_entry>& next) {
    for (const auto& r : next) {
        if (r.origin == relay_origin::configured || !r.candidate) continue;
        bool had = std::any_of(relays_.begin(), relays_.end(), [&](const auto& o) {
            return o.candidate && o.id && r.id && *o.id == *r.id;
        });
        if (!had)
            ctx_.log(1, "relay found", {{"relay", r.spec.name}, {"origin", to_string(r.origin)}});
    }
    for (const auto& o : relays_) {
        if (!o.candidate || !o.id) continue;
        bool stays = std::any_of(next.begin(), next.end(), [&](const auto& r) {
            return r.candidate && r.id && *r.id == *o.id;
        });
        if (!stays)
            ctx_.log(1, "relay no longer serving; its pairs move", {{"relay", o.spec.name}});
    }
}

void relay_directory::rebuild(uint64_t now, bool reset_timers) {
    dirty_ = false;
    std::vector<relay_entry> next;
    if (!ctx_.auto_relays()) {
        add_configured(next, now, reset_timers);
        // LAN neighbours found by mDNS are rendezvous with relayNodes too: through them (by
        // anti-entropy) a node that starts while the relays are out of reach still meets its
        // LAN. dht.bootstrap addresses are not: relayNodes are the rendezvous then.
        add_rendezvous(next, now, reset_timers, learned_via::mdns);
    } else {
        add_rendezvous(next, now, reset_timers);
        add_found(next, now, reset_timers);
    }
    auto summary = [](const std::vector<relay_entry>& v) {
        std::string s;
        for (const auto& r : v) {
            s += r.spec.name + (r.candidate ? "+" : "-");
            for (const auto& a : r.addrs) s += a.ep.str() + ",";
            s += ";";
        }
        return s;
    };
    if (summary(next) != summary(relays_)) {
        if (ctx_.auto_relays() && !reset_timers) log_changes(next);
        on_relays_changed_();  // membership notices a change of the relays we are attached to
    }
    relays_ = std::move(next);
    ctx_.due(now);
}

void relay_directory::note_record(const peer_record& rec,
                                  const std::optional<relay_facts>& before) {
    // Only a record whose relay flag, addresses or name changed may add, drop or re-address a
    // found relay; RTT re-signs (the common case) cost no rebuild.
    if (!ctx_.auto_relays() || relay_facts_of(&rec) == before) return;
    if (rec.relay_serving() || (before && (std::get<0>(*before) & peer_record::flag_relay)) ||
        by_id(rec.id())) {
        dirty_ = true;
    }
}

void relay_directory::note_records_expired() {
    // A serving node's record may have expired.
    if (ctx_.auto_relays()) dirty_ = true;
}

void relay_directory::offer_rendezvous(const wg_endpoint& ep, learned_via via) {
    for (const auto& rv : rendezvous_) {
        if (rv.ep == ep) return;  // an entry stands for it already (rebuild skips duplicates)
    }
    rendezvous_.push_back(rendezvous{ep, via});
    if (ctx_.auto_relays() || via == learned_via::mdns) dirty_ = true;
}

void relay_directory::withdraw_rendezvous(learned_via via) {
    auto n = rendezvous_.size();
    std::erase_if(rendezvous_, [&](const rendezvous& rv) { return rv.via == via; });
    if (n != rendezvous_.size() && (ctx_.auto_relays() || via == learned_via::mdns)) dirty_ = true;
}

bool relay_directory::up(const relay_entry& r, uint64_t now) const {
    if (r.self) return true;
    for (const auto& a : r.addrs) {
        if (alive(r, a, timeout(r), now)) return true;
    }
    return false;
}

std::optional<wg_endpoint> relay_directory::endpoint(const relay_entry& r, uint64_t now) const {
    if (r.active < r.addrs.size()) {
        const auto& a = r.addrs[r.active];
        if (alive(r, a, timeout(r), now)) return a.ep;
    }
    for (const auto& a : r.addrs) {
        if (alive(r, a, timeout(r), now)) return a.ep;
    }
    return std::nullopt;
}

void relay_directory::pick_address(relay_entry& r, uint64_t now) {
    // Sticky: the address in use stays while it answers (moving a session to the relay's other
    // family is a rebind for nothing). Otherwise the first configured address that answers: the
    // operator's order expresses preference.
    auto ok = [&](size_t i) { return alive(r, r.addrs[i], timeout(r), now); };
    if (r.active < r.addrs.size() && ok(r.active)) return;
    size_t next = SIZE_MAX;
    for (size_t i = 0; i < r.addrs.size() && next == SIZE_MAX; ++i) {
        if (ok(i)) next = i;
    }
    if (next != r.active) {
        r.publish_min.reset();  // another address (family): its own RTT
        on_relays_changed_();
        // Its pushes to us go where our last HELLO came from: register from the new address.
        if (next != SIZE_MAX) {
            r.next_hello_ms = std::min(r.next_hello_ms, now);
            ctx_.due(now);
        }
    }
    r.active = next;
}

const relay_entry* relay_directory::by_id(const node_id& id) const {
    for (const auto& r : relays_) {
        if (r.id && *r.id == id) return &r;
    }
    return nullptr;
}

relay_entry* relay_directory::find(const node_id& id) {
    for (auto& r : relays_) {
        if (r.id && *r.id == id) return &r;
    }
    return nullptr;
}

std::string relay_directory::name_of(const node_id& id) const {
    if (auto* rec = store_.find(id)) return rec->name;
    if (auto* r = by_id(id)) return r->spec.name;
    return id.short_hex();
}

double relay_directory::rtt(const relay_entry& r) const {
    if (r.active < r.addrs.size() && r.addrs[r.active].rtt_ms > 0) return r.addrs[r.active].rtt_ms;
    for (const auto& a : r.addrs) {
        if (a.rtt_ms > 0) return a.rtt_ms;
    }
    return 0;
}

uint64_t relay_directory::fast_timeout(const relay_entry& r) const {
    const auto& cfg = ctx_.cfg;
    // Capped: a relay that turned slow (bufferbloat, a starved CPU) and then died must still be
    // left within the failover budget (< 1 s).
    const uint64_t by_rtt = static_cast<uint64_t>(rtt(r)) + cfg.fast_ping_interval_ms;
    return std::max(cfg.fast_relay_timeout_ms, std::min(by_rtt, 2 * cfg.fast_relay_timeout_ms));
}

uint64_t relay_directory::fast_interval(const relay_entry& r) const {
    const auto& cfg = ctx_.cfg;
    // The address in use carries the pairs; before one is, the worst one probed.
    double loss = 0;
    const probe_loss* worst = nullptr;
    if (r.active < r.addrs.size()) {
        worst = &r.addrs[r.active].fast_loss;
    } else {
        for (const auto& a : r.addrs) {
            if (!worst || a.fast_loss.loss() > loss)
                worst = &a.fast_loss, loss = a.fast_loss.loss();
        }
    }
    if (!worst) return cfg.fast_ping_interval_ms;
    return worst->interval_for(fast_timeout(r), cfg.fast_ping_interval_ms,
                               std::min(min_fast_interval_ms, cfg.fast_ping_interval_ms),
                               core_context::tick_quantum_ms);
}

bool relay_directory::usable_fast(const relay_entry& r, uint64_t now) const {
    const uint64_t t = fast_timeout(r);
    for (const auto& a : r.addrs) {
        if (alive(r, a, t, now)) return true;
    }
    return false;
}

bool relay_directory::usable(const relay_entry& r, uint64_t now) const {
    if (!r.candidate || !up(r, now) || now < r.not_serving_until) return false;
    if (!r.fast) return true;
    return usable_fast(r, now);
}

void relay_directory::keep_fast(const node_id& relay, uint64_t now) {
    // Sticky for a while: a relay that just failed drops out of the warm sets, and must not then
    // look alive again merely because the slow timeout applies to it (so longer than that).
    const auto& cfg = ctx_.cfg;
    uint64_t sticky =
        std::max(10 * cfg.path_timeout_ms, cfg.idle_ping_interval_ms + 2 * cfg.path_timeout_ms);
    if (auto* r = find(relay)) r->fast_until = now + sticky;
}

void relay_directory::keep_used(const node_id& relay) {
    if (auto* r = find(relay)) r->used_now = true;
}

void relay_directory::tick(const peer_record& self, uint64_t now) {
    const auto& cfg = ctx_.cfg;
    for (auto& r : relays_) {
        bool fast = now < r.fast_until;
        if (fast && !r.fast) {
            // A pair with traffic needs it now: probe at once, judge it from here (alive()).
            r.fast_since_ms = now;
            r.next_ping_ms = now;
        }
        // Back to idle: the fast rounds' answers were judged by the fast timeout already.
        if (!fast && r.fast) r.round_answered = true;
        r.fast = fast;
    }
    // Used at idle: what our relayed pairs send through (keep_used); with none, the first relay
    // that answers (a candidate if any), whose NAT mapping carries its pushes to us.
    if (std::none_of(relays_.begin(), relays_.end(),
                     [](const auto& r) { return r.used_now && !r.self; })) {
        relay_entry* first = nullptr;
        for (auto& r : relays_) {
            if (r.self || !up(r, now)) continue;
            if (!first || (r.candidate && !first->candidate)) first = &r;
            if (first->candidate) break;
        }
        if (first) first->used_now = true;
    }
    for (auto& r : relays_) {
        if (r.used_now && !r.used && !r.fast) {
            // Spare to used: probed at once and judged from now, as a relay turning fast.
            r.fast_since_ms = now;
            r.next_ping_ms = std::min(r.next_ping_ms, now);
        }
        r.used = r.used_now;
        r.used_now = false;
    }
    for (size_t i = 0; i < relays_.size(); ++i) {
        auto& r = relays_[i];
        if (r.self) continue;
        for (auto& a : r.addrs) {
            if (a.last_pong_ms && !a.lost &&
                now > std::max(a.last_pong_ms, r.fast_since_ms) + timeout(r)) {
                a.lost = true;
            }
        }
        pick_address(r, now);
        bool is_up = up(r, now);
        bool is_usable = usable(r, now);
        if (is_usable != r.was_usable) {
            r.was_usable = is_usable;
            on_relays_changed_();
            if (r.fast && !is_usable && is_up) {
                ctx_.log(2, "relay stopped answering; its pairs fail over",
                         {{"relay", r.spec.name},
                          {"timeout_ms", std::to_string(fast_timeout(r))},
                          {"probe_loss",
                           std::to_string(static_cast<int>(
                               100 * (r.active < r.addrs.size() ? r.addrs[r.active].fast_loss.loss()
                                                                : 0))) +
                               "%"}});
            }
        }
        if (r.fast) {
            r.next_ping_ms = std::min(r.next_ping_ms, now + fast_interval(r));
            const uint64_t t = fast_timeout(r);
            // A probe unanswered for twice the RTT (at least the timeout) is lost; an address
            // declared dead stops counting (its silence is not the link's loss rate).
            const uint64_t wait = std::max<uint64_t>(t, static_cast<uint64_t>(2 * rtt(r)));
            for (auto& a : r.addrs) {
                if (alive(r, a, t, now)) {
                    a.fast_loss.judge(now, wait);
                    ctx_.due(std::max(a.last_pong_ms, r.fast_since_ms) + t + 1);
                } else {
                    a.fast_loss.forget_pending();
                }
            }
        }
        if (is_up != r.was_up) {
            r.was_up = is_up;
            if (is_up) {
                // Back (or up for the first time): our registration may have lapsed there.
                r.registered = false;
                r.next_hello_ms = std::min(r.next_hello_ms, now);
            }
            on_relays_changed_();
            auto ep = endpoint(r, now);
            ctx_.log(is_up ? 1 : 2, is_up ? "relay up" : "relay down",
                     {{"relay", r.spec.name}, {"endpoint", ep ? ep->str() : "-"}});
            on_self_changed_();
        }
        if (now >= r.next_ping_ms) {
            // To the relay's node when we know it. A configured or bootstrap address that does
            // not answer (yet, or any more: a reinstalled relay has a new identity and drops
            // PINGs for the old one) is asked as no one in particular, and its PONG tells us who
            // is there. A found relay is the node its record names, always.
            const node_id expect =
                r.id && (r.origin == relay_origin::discovered || is_up) ? *r.id : node_id{};
            // At idle, once the address in use answered the last round: that address only (its
            // NAT mapping is the one in use; issue 18), every address every
            // idle_other_address_ms. Fast, unanswered, or none in use: every address.
            const bool all = r.fast || !r.round_answered || r.active >= r.addrs.size() ||
                             !alive(r, r.addrs[r.active], timeout(r), now) ||
                             now >= r.next_other_ms;
            for (size_t a = 0; a < r.addrs.size(); ++a) {
                if (!all && a != r.active) continue;
                // A fast-probed address that answers (within its fast timeout) is exempt from
                // the send budget (core_context::send_ping).
                const bool answering = r.fast && alive(r, r.addrs[a], fast_timeout(r), now);
                if (ctx_.send_ping(r.addrs[a].ep, 0, probe{probe_kind::relay, expect, i, a}, now,
                                   !answering) &&
                    r.fast) {
                    r.addrs[a].fast_loss.sent(now);
                }
            }
            if (all && !r.fast) r.next_other_ms = now + cfg.idle_other_address_ms;
            // The PING refreshes the mapping as well as a keepalive would.
            r.next_keepalive_ms = now + cfg.idle_ping_interval_ms;
            r.retry_round = !r.round_answered;
            r.round_answered = false;
            // Not fast: again after ping_interval unless a PONG comes back first, which moves
            // the next probe to the relay's idle interval (on_pong): a lost probe is retried
            // soon. The retries double up to that interval: a relay that stays silent (down, or
            // a configured one that never came up) costs no more than an idle one.
            r.last_ping_ms = now;
            r.retry_ms =
                r.retry_ms ? std::min(2 * r.retry_ms, idle_interval(r)) : cfg.ping_interval_ms;
            r.next_ping_ms = now + (r.fast ? fast_interval(r) : r.retry_ms);
        }
        ctx_.due(r.next_ping_ms);
        keep_mapping(r, now);
        // A HELLO names its recipient: not before the relay's first PONG told us who it is.
        if (r.id && now >= r.next_hello_ms && !r.candidate && r.lan_neighbour && defer_hello &&
            defer_hello(*r.id, now)) {
            // Anti-entropy keeps us in sync; asked again (no datagram) at the retry interval.
            r.next_hello_ms = now + cfg.hello_retry_interval_ms;
        } else if (r.id && now >= r.next_hello_ms && !r.addrs.empty()) {
            // To one address: the one in use (it answers our probes), else the next in turn. A
            // relay registers one address per node anyway (its pushes go where the last HELLO
            // came from), and our probes to every address keep each NAT mapping warm (issue 18:
            // one family per relay, not both).
            auto ep = endpoint(r, now);
            const wg_endpoint to = ep ? *ep : r.addrs[r.hello_addr++ % r.addrs.size()].ep;
            hello_msg h;
            h.request_id = ctx_.random_u64() | 1;  // never 0 (0: RECORDS pushed)
            h.cookie = ctx_.cookies().for_responder(*r.id, normalize_endpoint(to));
            h.flags = hello_msg::flag_want_records;
            // Not registered, or our current record not acknowledged yet: ask for an answer.
            const bool unacked = !r.registered || r.acked_seq != self.seq;
            if (unacked) h.flags |= hello_msg::flag_ack;
            h.record = self;
            if (add_digest) add_digest(h);
            ctx_.cookies().note_request(h.request_id, {cookie_jar::request_kind::hello, *r.id,
                                                       normalize_endpoint(to), now});
            r.last_hello_ms = now;
            r.hello_request_id = h.request_id;
            r.hello_seq = self.seq;
            ctx_.send(std::move(h), *r.id, to, 0, now);
            // Unanswered, again soon: a relay answers every HELLO with flag_ack. Unanswered
            // HELLOs mean a lost answer or a relay that refuses us (we are revoked there, or it
            // is restarting): a node unrevoked must be back within a retry, not an interval.
            r.next_hello_ms = now + (unacked ? cfg.hello_retry_interval_ms : cfg.hello_interval_ms);
        }
        if (r.id) ctx_.due(r.next_hello_ms);
        if (is_up) {
            // If the relay went down and the last moment it was up is what we compare against,
            // wake up when it would time out.
            // Not for an address already lost: its moment passed, and at idle the other family
            // is probed only every idle_other_address_ms, so a due() in the past here woke the
            // core every tick_quantum (50 times a second) for minutes at a time.
            for (const auto& a : r.addrs) {
                if (a.last_pong_ms && !a.lost) {
                    ctx_.due(std::max(a.last_pong_ms, r.fast_since_ms) + timeout(r) + 1);
                }
            }
        }
    }
}

bool relay_directory::on_pong(const probe& p, const node_id& sender, double rtt_ms,
                              const wg_endpoint& observed, uint64_t now) {
    // By address: the list may have been rebuilt (indices moved) since the PING.
    relay_entry* rp = nullptr;
    size_t ai = 0;
    for (auto& rr : relays_) {
        for (size_t k = 0; k < rr.addrs.size() && !rp; ++k) {
            if (rr.addrs[k].ep == p.ep) rp = &rr, ai = k;
        }
        if (rp) break;
    }
    if (!rp || rp->self) return false;
    auto& r = *rp;
    // A found relay is the node its signed record names: an answer from another node at that
    // address (a stale record of a reinstalled node, a forged one) is no answer.
    // (optional == value: engaged and equal; no dereference for the check to track.)
    if (r.origin == relay_origin::discovered && r.id && r.id != sender) return false;
    if (r.id && r.id != sender) {
        ctx_.log(2, "relay answered with a new node identity (reinstalled?)",
                 {{"relay", r.spec.name}, {"node_id", sender.short_hex()}});
    }
    if (r.id != sender) {
        on_self_changed_();
        on_relays_changed_();
        dirty_ = ctx_.auto_relays();  // a bootstrap node: its record names it
        r.next_hello_ms = now;        // we can name it now: register at once
        r.registered = false;
        ctx_.due(now);
    }
    r.id = sender;
    auto& a = r.addrs[ai];
    const auto& cfg = ctx_.cfg;
    if (!alive(r, a, timeout(r), now)) on_relays_changed_();
    const bool was_lost = a.lost;
    a.fast_loss.answered(p.sent_ms);
    const wg_endpoint seen = normalize_endpoint(observed);
    const bool moved = a.reflexive && !(*a.reflexive == seen);
    a.lost = false;
    a.last_pong_ms = now;
    // Answered again after a round that went unanswered: the relay may have dropped us
    // meanwhile (we were revoked there, it restarted without our noticing its epoch yet), and
    // at idle our next HELLO may be minutes away: register again at once (with flag_ack).
    if (!r.fast && r.retry_round && r.registered && r.id) {
        r.registered = false;
        r.next_hello_ms = now;
        ctx_.due(now);
    }
    r.round_answered = true;
    r.retry_round = false;
    // Answered: an idle relay is probed next a full idle interval after this round.
    if (!r.fast) r.next_ping_ms = std::max(r.next_ping_ms, r.last_ping_ms + idle_interval(r));
    r.retry_ms = 0;
    pick_address(r, now);
    // The minimum of about three samples either way (a slow relay gets one per idle interval).
    const uint64_t window =
        r.fast ? cfg.rtt_window_ms : std::max(cfg.rtt_window_ms, 3 * idle_interval(r));
    a.rtt_ms = a.rtt_min.update(rtt_ms, now, window);
    // What we publish: a longer minimum, of the address in use (what the election ranks us by).
    if (ai == r.active) {
        r.publish_min.update(rtt_ms, now, std::max(cfg.publish_rtt_window_ms, window));
    }
    if (!a.reflexive || moved) a.reflexive_since_ms = now;
    a.reflexive = seen;
    // Only the address in use carries our sessions (and its loss is what they feel).
    if ((was_lost || moved) && ai == r.active) {
        ctx_.log(1,
                 moved ? "relay sees us at a new address; binding sessions again"
                       : "relay answers again; binding sessions again",
                 {{"relay", r.spec.name}, {"endpoint", seen.str()}});
        return true;
    }
    return false;
}

void relay_directory::on_session_kept(const node_id& relay, uint64_t keep_ms, uint64_t) {
    relay_entry* r = find(relay);
    if (!r || r->keep_ms == keep_ms) return;
    r->keep_ms = keep_ms;
    ctx_.log(0, "relay keeps idle sessions while it hears us",
             {{"relay", r->spec.name},
              {"keep_ms", std::to_string(keep_ms)},
              {"used", keeps_sessions(relay) ? "yes" : "no (window shorter than 2 idle PINGs)"}});
}

bool relay_directory::keeps_sessions(const node_id& relay) const {
    const relay_entry* r = by_id(relay);
    const auto& cfg = ctx_.cfg;
    return r && r->keep_ms &&
           r->keep_ms >=
               2 * std::max(cfg.idle_used_ping_interval_ms, cfg.idle_spare_ping_interval_ms);
}

void relay_directory::on_session_accepted(const node_id& relay) {
    if (auto* r = find(relay)) r->reject_backoff_ms = 0;
}

void relay_directory::on_not_serving(const node_id& relay, uint64_t now) {
    // Listed but not serving (still verifying, or refused): no pair uses it for a while. 1 s
    // first (a relay being verified usually serves a moment later), doubling per round of
    // refusals up to 16 s (a refused relay is not asked by every pair forever).
    auto* r = find(relay);
    if (!r) return;
    if (now >= r->not_serving_until) {
        r->reject_backoff_ms = r->reject_backoff_ms
                                   ? std::min<uint64_t>(2 * r->reject_backoff_ms, 16000)
                                   : ctx_.cfg.dialback_interval_ms;
        r->not_serving_until = now + r->reject_backoff_ms;
    }
    on_relays_changed_();
}

void relay_directory::hello_now(uint64_t now) {
    for (auto& r : relays_) r.next_hello_ms = std::min(r.next_hello_ms, now);
    ctx_.due(now);
}

void relay_directory::on_hello_wanted(const node_id& relay, uint64_t now) {
    relay_entry* r = find(relay);
    if (!r || (r->last_hello_ms != 0 && now < r->last_hello_ms + hello_wanted_gap_ms)) return;
    ctx_.log(1, "relay lacks our record; registering again", {{"relay", r->spec.name}});
    r->registered = false;  // HELLOs at the retry interval until answered, and ask for an answer
    r->next_hello_ms = now;
    ctx_.due(now);
}

void relay_directory::on_hello_answer(const node_id& relay, uint64_t request_id, uint64_t now) {
    relay_entry* r = find(relay);
    // Any answer (a RECORDS with a HELLO's request id, from the relay itself): it holds us.
    if (!r || request_id == 0) return;
    const bool newest = request_id == r->hello_request_id;
    if (r->registered && (!newest || r->acked_seq == r->hello_seq)) return;
    r->registered = true;
    if (newest) r->acked_seq = r->hello_seq;
    // An answer to an older HELLO: the one with our current record may have been lost at the
    // relay. It stays at the retry interval (tick) until answered.
    if (r->acked_seq != r->hello_seq) {
        // "seq": the counter part, as membership logs it.
        const uint64_t counter = r->hello_seq & ((uint64_t{1} << 30) - 1);
        ctx_.log(0, "relay answered an older HELLO; our current record not acknowledged yet",
                 {{"relay", r->spec.name}, {"seq", std::to_string(counter)}});
        return;
    }
    // The retry becomes the interval; a HELLO already due (our record changed since) stays due.
    if (r->next_hello_ms > now) {
        r->next_hello_ms =
            std::max(r->next_hello_ms, r->last_hello_ms + ctx_.cfg.hello_interval_ms);
    }
    ctx_.due(std::max(now, r->next_hello_ms));
}

bool relay_directory::note_epoch(const node_id& relay, uint64_t epoch, uint64_t now) {
    relay_entry* r = find(relay);
    if (!r || epoch == r->boot_epoch) return false;
    const bool restarted = r->boot_epoch != 0;
    // A new epoch may be another version: it says again whether it keeps (its ACCEPTs follow the
    // rebinding the caller starts).
    r->keep_ms = 0;
    if (restarted) {
        ctx_.log(1, "relay restarted; registering again", {{"relay", r->spec.name}});
        r->registered = false;
        r->next_hello_ms = now;
        ctx_.due(now);
    }
    r->boot_epoch = epoch;
    return restarted;
}

bool relay_directory::listed(const node_id& relay) const {
    return std::find(listed_.begin(), listed_.end(), relay) != listed_.end();
}

void relay_directory::note_pair_failure(const node_id& relay, const node_id& peer, uint64_t now) {
    relay_entry* r = find(relay);
    if (!r) return;
    auto& f = r->failed_pairs;
    std::erase_if(f, [&](const auto& e) { return e.first == peer || e.second <= now; });
    if (f.size() >= 8) f.erase(f.begin());  // bounded: two are enough to count
    f.emplace_back(peer, now + 10 * ctx_.cfg.relay_exclude_ms);
}

bool relay_directory::failing(const relay_entry& r, uint64_t now) const {
    return std::count_if(r.failed_pairs.begin(), r.failed_pairs.end(),
                         [&](const auto& e) { return e.second > now; }) >= 2;
}

std::vector<std::pair<node_id, uint16_t>> relay_directory::attachments(uint64_t now) {
    std::vector<std::pair<node_id, uint16_t>> att;
    std::vector<relay_entry*> order;
    for (auto& r : relays_) {
        if (!failing(r, now)) order.push_back(&r);
    }
    for (auto& r : relays_) {
        if (failing(r, now)) order.push_back(&r);
    }
    listed_.clear();
    for (relay_entry* rp : order) {
        relay_entry& r = *rp;
        if (r.self || !r.id || !r.candidate || !up(r, now) || att.size() >= peer_record::max_relays)
            continue;
        // Publish our RTT to the relay, but re-sign only when it moved by more than noise (every
        // change is a record pushed to the whole cluster). The threshold, max(2.5 ms, 10 %), is
        // half the election's switching margin (max(switch_abs_ms, switch_rel)), so values
        // stale within it cannot fake a "clearly better" relay. At idle the value is the minimum
        // over publish_rtt_window_ms (10 min), not the ranking's 3 idle rounds: samples only
        // spike upwards (a busy machine, a user-space delay bridge), and the minimum of three
        // rounds moved past 1 ms every few minutes on the testbed, a record to every node each
        // time (issue 18; sim "noisy relay RTTs"). A drop shows at once, a real rise within the
        // window (meanwhile the election sees the relay better than it is by the rise; its
        // liveness is judged apart). While the relay is fast (a pair of ours with traffic), the
        // ranking's own 3 s minimum: such pairs must see a relay that got slower within seconds
        // (e2e_failover's election cases). Not quantised to coarse (1-2-5) buckets: their error
        // (up to 2.5x) is far above the switching margin.
        const double m = r.fast || r.publish_min.empty() ? rtt(r) : r.publish_min.get();
        const double pub = r.published_rtt;
        const double band = std::max(ctx_.cfg.switch_abs_ms, ctx_.cfg.switch_rel * pub) / 2.0;
        if (r.published_rtt == peer_record::unknown_rtt || std::abs(m - pub) > band) {
            r.published_rtt = static_cast<uint16_t>(std::clamp(m + 0.5, 1.0, 60000.0));
        }
        att.emplace_back(*r.id, r.published_rtt);
        listed_.push_back(*r.id);
    }
    return att;
}

std::vector<wg_endpoint> relay_directory::self_addresses() const {
    std::vector<wg_endpoint> addrs;
    for (const auto& r : relays_) {
        if (r.self) {
            for (const auto& a : r.addrs) addrs.push_back(a.ep);
        }
    }
    return addrs;
}

void relay_directory::shift_clocks(uint64_t late, uint64_t now) {
    for (auto& r : relays_) {
        for (auto& a : r.addrs) {
            core_context::shift_clock(a.last_pong_ms, late, now);
            a.fast_loss.forget_pending();  // their answers were forgotten (node_core::note_wakeup)
        }
    }
}

std::vector<nat_observation> relay_directory::nat_observations(uint64_t now) const {
    std::vector<nat_observation> v;
    for (const auto& r : relays_) {
        if (r.self || r.lan_neighbour) continue;
        for (const auto& a : r.addrs) {
            if (a.reflexive && !a.lost && alive(r, a, timeout(r), now)) {
                v.push_back(nat_observation{a.ep.address, *a.reflexive, a.reflexive_since_ms,
                                            a.last_pong_ms});
            }
        }
    }
    return v;
}

std::vector<relay_view> relay_directory::views(uint64_t last_tick_ms) const {
    std::vector<relay_view> v;
    for (const auto& r : relays_) {
        relay_view rv;
        rv.name = r.spec.name;
        rv.origin = r.origin;
        rv.addresses = r.spec.addresses;
        rv.id = r.id;
        if (r.self) {
            rv.state = relay_state::self;
        } else {
            // A relay that stopped answering its fast probes is down for meshctl too, although
            // our record keeps it attached until the slow timeout.
            rv.state = r.was_up && (!r.candidate || r.not_serving_until > last_tick_ms)
                           ? relay_state::refusing
                       : r.was_up && r.was_usable ? relay_state::up
                       : r.id                     ? relay_state::down
                                                  : relay_state::unknown;
            const relay_addr_state* best = nullptr;
            for (const auto& a : r.addrs) {
                if (a.last_pong_ms && (!best || a.last_pong_ms > best->last_pong_ms)) best = &a;
            }
            if (best) {
                rv.endpoint = best->ep;
                rv.rtt_ms = best->rtt_ms;
                rv.reflexive = best->reflexive;
            }
        }
        v.push_back(std::move(rv));
    }
    return v;
}

}  // namespace mw::meshd
