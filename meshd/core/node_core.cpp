#include "meshd/core/node_core.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "meshd/core/sodium_init.hpp"

namespace mw::meshd {

namespace {

// A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the rest of the core (records, the
// relay config) names them as plain IPv4. One form for comparisons.
wg_endpoint normalize(const wg_endpoint& e) {
    if (!e.address.is_v6()) return e;
    static constexpr uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(e.address.data(), mapped, 12) != 0) return e;
    auto a = ip_address::from_bytes(AF_INET, e.address.data() + 12, 4);
    return a ? wg_endpoint{*a, e.port} : e;
}

uint64_t pair_hash(const char* label, const node_id& a, const node_id& b, const node_id& relay) {
    const node_id& lo = a < b ? a : b;
    const node_id& hi = a < b ? b : a;
    crypto_generichash_state st;
    crypto_generichash_init(&st, nullptr, 0, 16);
    crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(label), std::strlen(label));
    crypto_generichash_update(&st, lo.data(), node_id::size);
    crypto_generichash_update(&st, hi.data(), node_id::size);
    crypto_generichash_update(&st, relay.data(), node_id::size);
    uint8_t h[16];
    crypto_generichash_final(&st, h, sizeof h);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | h[i];
    return v;
}

}  // namespace

const char* to_string(path_kind k) noexcept {
    switch (k) {
        case path_kind::none:
            return "none";
        case path_kind::direct:
            return "direct";
        case path_kind::relay:
            return "relay";
    }
    return "?";
}

const char* to_string(relay_role_state s) noexcept {
    switch (s) {
        case relay_role_state::none:
            return "none";
        case relay_role_state::verifying:
            return "verifying";
        case relay_role_state::active:
            return "active";
        case relay_role_state::refused:
            return "refused";
    }
    return "?";
}

const char* to_string(relay_origin o) noexcept {
    switch (o) {
        case relay_origin::configured:
            return "configured";
        case relay_origin::bootstrap:
            return "bootstrap";
        case relay_origin::discovered:
            return "discovered";
    }
    return "?";
}

const char* to_string(relay_state s) noexcept {
    switch (s) {
        case relay_state::refusing:
            return "refusing";
        case relay_state::unknown:
            return "unknown";
        case relay_state::up:
            return "up";
        case relay_state::down:
            return "down";
        case relay_state::self:
            return "self";
    }
    return "?";
}

uint64_t node_core::session_id_for(const node_id& a, const node_id& b, const node_id& relay) {
    uint64_t v = pair_hash("meshwire relay session v1", a, b, relay);
    return v ? v : 1;  // 0 means "not in a session" everywhere
}

uint64_t node_core::rendezvous_score(const node_id& a, const node_id& b, const node_id& relay) {
    return pair_hash("meshwire relay choice v1", a, b, relay);
}

node_core::node_core(node_core_config cfg, const node_identity& identity, psk_sealer sealer,
                     rng_fn rng, relay_binder* binder, record_store_config store_cfg)
    : cfg_(std::move(cfg)),
      identity_(identity),
      ch_(identity.id(), std::move(sealer)),
      rng_(std::move(rng)),
      binder_(binder),
      store_(store_cfg) {
    ensure_sodium();
    auto relays = std::move(cfg_.relays);
    cfg_.relays.clear();
    bool listed = std::exchange(cfg_.relay_role, false);
    set_relays(std::move(relays), listed, 0);
}

void node_core::log(int level, std::string msg,
                    std::vector<std::pair<std::string, std::string>> f) {
    log_.push_back(core_log_event{level, std::move(msg), std::move(f)});
}

void node_core::send(message_body body, const wg_endpoint& to, uint64_t session_id, uint64_t now) {
    aead_nonce nonce;
    rng_(nonce);
    auto d = ch_.send(std::move(body), nonce, now);
    if (!d) {
        log(3, "cannot encode a control message", {{"error", d.err().message}});
        return;
    }
    out_.push_back(outgoing_datagram{to, session_id, std::move(*d)});
}

uint64_t node_core::send_ping(const wg_endpoint& to, uint64_t session_id, pending_ping p,
                              uint64_t now) {
    uint64_t seq = next_seq_++;
    p.sent_ms = now;
    pending_[seq] = p;
    send(ping_msg{seq}, to, session_id, now);
    return seq;
}

void node_core::set_relays(std::vector<relay_spec> relays, bool relay_role, uint64_t now) {
    if (relays == cfg_.relays && relay_role == cfg_.relay_role && !relays_.empty()) return;
    bool was_listed = cfg_.relay_role;
    cfg_.relays = std::move(relays);
    cfg_.relay_role = relay_role;
    rebuild_relays(now, true);
    std::vector<wg_endpoint> addrs;
    for (const auto& r : relays_) {
        if (r.self) {
            for (const auto& a : r.addrs) addrs.push_back(a.ep);
        }
    }
    if (relay_role && (!was_listed || addrs != self_addrs_ || role_ == relay_role_state::none)) {
        // Newly listed (or at other addresses): prove the addresses reachable before serving,
        // unless we already serve at one of them (we offered ourselves with no relayNodes).
        role_retry_backoff_ms_ = cfg_.role_retry_ms;
        if (!keep_serving_at(addrs, "listed in relayNodes; already dialled back at ", now)) {
            self_addrs_ = std::move(addrs);
            start_verifying("listed in relayNodes; waiting for another node to dial back", now);
        }
    } else if (!relay_role && auto_relays()) {
        update_auto_role(now, was_listed);
    } else if (!relay_role && role_ != relay_role_state::none) {
        self_addrs_.clear();
        set_role(relay_role_state::none,
                 was_listed ? "no longer listed in relayNodes"
                            : "relayNodes configured and this node is not listed",
                 now);
    }
    self_dirty_ = true;
    recheck_all_ = true;
    due(now);
}

void node_core::rebuild_relays(uint64_t now, bool reset_timers) {
    relays_dirty_ = false;
    std::vector<relay_entry> next;
    auto has_ep = [](const relay_entry& r, const wg_endpoint& ep) {
        return std::any_of(r.addrs.begin(), r.addrs.end(),
                           [&](const auto& a) { return a.ep == ep; });
    };
    // What we learned about a relay that stays (ID, RTTs, the address in use): configured ones
    // are matched by name, found ones by node ID or by a shared address.
    auto carry = [&](relay_entry fresh) {
        // Across a switch between relayNodes and none configured, the same relay is carried
        // over too (by ID or address), so its liveness survives the switch.
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
        next.push_back(std::move(e));
    };
    if (!auto_relays()) {
        for (const auto& spec : cfg_.relays) {
            relay_entry e;
            e.spec = spec;
            e.self = spec.name == cfg_.node_name;
            if (e.self) e.id = identity_.id();
            for (const auto& a : spec.addresses) {
                e.addrs.push_back(relay_addr_state{wg_endpoint{a, cfg_.control_port}});
            }
            carry(std::move(e));
        }
    } else {
        auto used = [&](const wg_endpoint& ep, const relay_entry* except) {
            return std::any_of(next.begin(), next.end(),
                               [&](const relay_entry& n) { return &n != except && has_ep(n, ep); });
        };
        for (const auto& a : cfg_.bootstrap) {
            wg_endpoint ep = normalize(wg_endpoint{a, cfg_.control_port});
            bool ours = std::any_of(cfg_.endpoints.begin(), cfg_.endpoints.end(),
                                    [&](const auto& e) { return e.address == a; });
            if (ours || used(ep, nullptr)) continue;
            relay_entry e;
            e.origin = relay_origin::bootstrap;
            e.candidate = false;
            e.spec = relay_spec{a.str(), {a}};
            e.addrs.push_back(relay_addr_state{ep});
            carry(std::move(e));
            // Two bootstrap addresses of one node (v4 and v6; its PONGs told the ID): one entry.
            relay_entry& last = next.back();
            for (size_t k = 0; last.id && k + 1 < next.size(); ++k) {
                if (next[k].id != last.id) continue;
                for (const auto& s : last.addrs) next[k].addrs.push_back(s);
                for (const auto& s : last.spec.addresses) next[k].spec.addresses.push_back(s);
                next.pop_back();
                break;
            }
        }
        size_t found = 0;
        store_.for_each_with_id([&](const node_id& id, const peer_record& rec) {
            if (id == identity_.id()) return;
            relay_entry* b = nullptr;
            for (auto& n : next) {
                bool at = !n.id &&
                          std::any_of(rec.endpoints.begin(), rec.endpoints.end(),
                                      [&](const auto& e) { return normalize(e) == n.addrs[0].ep; });
                if ((n.id && *n.id == id) || at) {
                    b = &n;
                    break;
                }
            }
            // Where a serving node is reached: its public addresses (a private one would make
            // it a relay for its own LAN only, where everyone is direct anyway), on the
            // cluster's port only (a record must not make every node probe another service),
            // and never an address another entry already stands for (a stale or forged record
            // claiming a relay's address).
            std::vector<wg_endpoint> eps;
            if (rec.relay_serving()) {
                for (const auto& e : rec.endpoints) {
                    wg_endpoint n = normalize(e);
                    if (!e.address.is_private() && e.port == cfg_.control_port && !used(n, b))
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
            // Bounded: every node probes every relay (each PING, HELLO and RECORDS exchange costs
            // all of them), so a cluster with many public nodes uses the first by node ID.
            if (eps.empty() || found >= cfg_.max_found_relays) return;
            ++found;
            relay_entry e;
            e.origin = relay_origin::discovered;
            e.id = id;
            e.spec.name = rec.name;
            for (const auto& ep : eps) {
                e.addrs.push_back(relay_addr_state{ep});
                e.spec.addresses.push_back(ep.address);
            }
            carry(std::move(e));
        });
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
        if (auto_relays() && !reset_timers) {
            for (const auto& r : next) {
                if (r.origin == relay_origin::configured || !r.candidate) continue;
                bool had = std::any_of(relays_.begin(), relays_.end(), [&](const auto& o) {
                    return o.candidate && o.id && r.id && *o.id == *r.id;
                });
                if (!had)
                    log(1, "relay found",
                        {{"relay", r.spec.name}, {"origin", to_string(r.origin)}});
            }
            for (const auto& o : relays_) {
                if (!o.candidate || !o.id) continue;
                bool stays = std::any_of(next.begin(), next.end(), [&](const auto& r) {
                    return r.candidate && r.id && *r.id == *o.id;
                });
                if (!stays)
                    log(1, "relay no longer serving; its pairs move", {{"relay", o.spec.name}});
            }
        }
        recheck_all_ = true;  // refresh_self notices a change of the relays we are attached to
    }
    relays_ = std::move(next);
    due(now);
}

bool node_core::keep_serving_at(const std::vector<wg_endpoint>& addrs, const std::string& why,
                                uint64_t now) {
    if (role_ != relay_role_state::active) return false;
    auto verified = verified_addresses();
    std::vector<bool> v(addrs.size(), false);
    std::string list;
    for (size_t i = 0; i < addrs.size(); ++i) {
        v[i] = std::find(verified.begin(), verified.end(), addrs[i]) != verified.end();
        if (v[i]) list += (list.empty() ? "" : ", ") + addrs[i].str();
    }
    if (list.empty()) return false;
    self_addrs_ = addrs;
    self_verified_ = std::move(v);
    dialback_nonces_.clear();
    set_role(relay_role_state::active, why + list, now);
    return true;
}

void node_core::update_auto_role(uint64_t now, bool was_listed) {
    if (!auto_relays()) return;  // the role follows relayNodes
    std::vector<wg_endpoint> pub;
    std::string list;
    bool v4 = false, pub_v4 = false;
    for (const auto& e : cfg_.endpoints) {
        wg_endpoint ep{e.address, cfg_.control_port};
        v4 |= e.address.is_v4();
        if (e.address.is_private() || std::find(pub.begin(), pub.end(), ep) != pub.end()) continue;
        pub_v4 |= e.address.is_v4();
        pub.push_back(ep);
        list += (list.empty() ? "" : ", ") + ep.str();
    }
    // A node that serves takes no relayed paths itself, so it must reach every node directly:
    // with a public IPv6 address but only a NATed IPv4 one (a common edge LAN) it could not
    // reach IPv4-only nodes behind other NATs. Such a node does not offer.
    if (pub.empty() || (v4 && !pub_v4)) {
        if (role_ != relay_role_state::none) {
            self_addrs_.clear();
            set_role(relay_role_state::none,
                     pub.empty() ? "no relayNodes configured and no public address to offer"
                                 : "no relayNodes configured and no public IPv4 address to offer",
                     now);
        }
        return;
    }
    if (!was_listed && pub == self_addrs_ && role_ != relay_role_state::none) return;
    role_retry_backoff_ms_ = cfg_.role_retry_ms;
    // A listed relay whose relayNodes were emptied goes on serving where it was dialled back.
    if (keep_serving_at(pub, "no relayNodes configured; already dialled back at ", now)) return;
    self_addrs_ = std::move(pub);
    start_verifying("no relayNodes configured; offering to relay at " + list +
                        " once another node dials it back",
                    now);
}

std::optional<node_core::relay_facts> node_core::relay_facts_of(const peer_record* rec) {
    if (!rec) return std::nullopt;
    return relay_facts{rec->flags, rec->endpoints, rec->name};
}

void node_core::note_record(const peer_record& rec, const std::optional<relay_facts>& before) {
    // Only a record whose relay flag, addresses or name changed may add, drop or re-address a
    // found relay; RTT re-signs (the common case) cost no rebuild.
    if (!auto_relays() || relay_facts_of(&rec) == before) return;
    if (rec.relay_serving() || (before && (std::get<0>(*before) & peer_record::flag_relay)) ||
        relay_by_id(rec.id())) {
        relays_dirty_ = true;
    }
}

void node_core::set_endpoints(std::vector<wg_endpoint> endpoints, uint64_t now) {
    if (endpoints == cfg_.endpoints) return;
    cfg_.endpoints = std::move(endpoints);
    self_dirty_ = true;
    if (auto_relays()) {
        rebuild_relays(now, false);  // a bootstrap address may have become ours
        update_auto_role(now);
    }
    due(now);
}

void node_core::set_bootstrap(std::vector<ip_address> bootstrap, uint64_t now) {
    if (bootstrap == cfg_.bootstrap) return;
    cfg_.bootstrap = std::move(bootstrap);
    if (auto_relays()) rebuild_relays(now, false);
    due(now);
}

uint64_t node_core::start(uint64_t now_ms) {
    role_since_ms_ = now_ms;      // the constructor has no clock
    next_deadline_ = UINT64_MAX;  // nor did its due(0): starting is not waking up late
    next_dialback_ms_ = now_ms;
    refresh_self(now_ms, true);
    log(1, "node core started",
        {{"peer", cfg_.node_name},
         {"node_id", identity_.id().short_hex()},
         {"relays", std::to_string(relays_.size())},
         {"relay_role", cfg_.relay_role ? "listed" : "no"}});
    return tick(now_ms);
}

void node_core::refresh_self(uint64_t now, bool force) {
    std::vector<std::pair<node_id, uint16_t>> att;
    for (auto& r : relays_) {
        if (r.self || !r.id || !r.candidate || !relay_up(r, now) ||
            att.size() >= peer_record::max_relays)
            continue;
        // Publish our RTT to the relay, but re-sign only when it moved by more than noise (every
        // change is a record pushed to the whole cluster). The threshold, max(1 ms, 10 %), is
        // half the election's switching margin, so stale published values cannot fake a
        // "clearly better" relay.
        double m = relay_rtt(r);
        double pub = r.published_rtt;
        if (r.published_rtt == peer_record::unknown_rtt ||
            std::abs(m - pub) > std::max(1.0, 0.1 * pub)) {
            r.published_rtt = static_cast<uint16_t>(std::clamp(m + 0.5, 1.0, 60000.0));
        }
        att.emplace_back(*r.id, r.published_rtt);
    }
    std::sort(att.begin(), att.end());
    std::vector<node_id> attached;
    std::vector<uint16_t> rtts;
    for (const auto& [id, rtt] : att) {
        attached.push_back(id);
        rtts.push_back(rtt);
    }
    if (attached != self_.relays || rtts != self_.relay_rtt_ms) self_dirty_ = true;
    bool old = now >= self_signed_ms_ + cfg_.record_lifetime_ms / 2;
    if (!force && !self_dirty_ && !old) return;
    peer_record r;
    r.name = cfg_.node_name;
    r.pod_cidrs = cfg_.pod_cidrs;
    r.endpoints = cfg_.endpoints;
    if (serving()) {
        // A relay's advertised addresses first: that is where everyone can reach it (e.g. the
        // public address of its NAT, port-forwarded to it).
        std::vector<wg_endpoint> eps = self_addrs_;
        for (const auto& e : cfg_.endpoints) {
            if (std::find(eps.begin(), eps.end(), e) == eps.end()) eps.push_back(e);
        }
        r.endpoints = std::move(eps);
    }
    if (r.endpoints.size() > peer_record::max_endpoints)
        r.endpoints.resize(peer_record::max_endpoints);
    r.wg_port = cfg_.wg_port;
    r.flags = serving() ? peer_record::flag_relay : 0;
    r.relays = std::move(attached);
    r.relay_rtt_ms = std::move(rtts);
    // The seq must grow across restarts too (a restarted node's record must replace the old one at
    // the relays), so it is the signing time in ms, bumped if the clock did not move.
    r.seq = std::max(self_.seq + 1, now);
    r.expires_ms = now + cfg_.record_lifetime_ms;
    if (auto s = r.sign(identity_); !s) {
        log(3, "cannot sign our peer record", {{"error", s.err().message}});
        return;
    }
    self_ = std::move(r);
    self_dirty_ = false;
    self_signed_ms_ = now;
    push_record(self_, identity_.id(), now);
    // New content goes to the relays now rather than at the next HELLO.
    for (auto& rl : relays_) rl.next_hello_ms = std::min(rl.next_hello_ms, now);
}

bool node_core::relay_up(const relay_entry& r, uint64_t now) const {
    if (r.self) return true;
    for (const auto& a : r.addrs) {
        if (a.last_pong_ms && now <= a.last_pong_ms + cfg_.path_timeout_ms) return true;
    }
    return false;
}

std::optional<wg_endpoint> node_core::relay_endpoint(const relay_entry& r, uint64_t now) const {
    if (r.active < r.addrs.size()) {
        const auto& a = r.addrs[r.active];
        if (a.last_pong_ms && now <= a.last_pong_ms + cfg_.path_timeout_ms) return a.ep;
    }
    for (const auto& a : r.addrs) {
        if (a.last_pong_ms && now <= a.last_pong_ms + cfg_.path_timeout_ms) return a.ep;
    }
    return std::nullopt;
}

void node_core::pick_relay_address(relay_entry& r, uint64_t now) {
    // Sticky: the address in use stays while it answers (moving a session to the relay's other
    // family is a rebind for nothing). Otherwise the first configured address that answers: the
    // operator's order expresses preference.
    auto alive = [&](size_t i) {
        const auto& a = r.addrs[i];
        return a.last_pong_ms && now <= a.last_pong_ms + cfg_.path_timeout_ms;
    };
    if (r.active < r.addrs.size() && alive(r.active)) return;
    size_t next = SIZE_MAX;
    for (size_t i = 0; i < r.addrs.size() && next == SIZE_MAX; ++i) {
        if (alive(i)) next = i;
    }
    if (next != r.active) recheck_all_ = true;
    r.active = next;
}

const node_core::relay_entry* node_core::relay_by_id(const node_id& id) const {
    for (const auto& r : relays_) {
        if (r.id && *r.id == id) return &r;
    }
    return nullptr;
}

node_core::relay_entry* node_core::relay_by_id(const node_id& id) {
    for (auto& r : relays_) {
        if (r.id && *r.id == id) return &r;
    }
    return nullptr;
}

std::string node_core::name_of(const node_id& id) const {
    if (auto* rec = store_.find(id)) return rec->name;
    if (auto* r = relay_by_id(id)) return r->spec.name;
    return id.short_hex();
}

void node_core::note_wakeup(uint64_t now) {
    if (next_deadline_ == UINT64_MAX || now <= next_deadline_ + cfg_.stall_ms) return;
    const uint64_t late = now - next_deadline_;
    auto shift = [&](uint64_t& t) {
        if (t) t = std::min(now, t + late);
    };
    for (auto& r : relays_) {
        for (auto& a : r.addrs) shift(a.last_pong_ms);
    }
    for (auto& [id, p] : peers_) {
        for (auto& c : p.candidates) shift(c.last_pong_ms);
        shift(p.last_inbound_ms);
        shift(p.last_inband_pong_ms);
        shift(p.peer_relay_ms);
    }
    // Pings in flight across the stall would measure the stall as RTT (and get re-signed into
    // our record): forget them, unanswered and uncounted; the next probes follow at once.
    for (auto it = pending_.begin(); it != pending_.end();) {
        it = it->second.sent_ms <= next_deadline_ ? pending_.erase(it) : std::next(it);
    }
    ++stalls_;
    next_deadline_ = now;  // credited once: the calls that follow this wakeup are not late
    log(1, "woken late; relay liveness paused for the stall", {{"late_ms", std::to_string(late)}});
}

uint64_t node_core::tick(uint64_t now) {
    note_wakeup(now);
    next_deadline_ = UINT64_MAX;
    last_tick_ms_ = now;
    if (now >= next_expire_ms_) {
        // A serving node's record may have expired.
        if (store_.expire(now) && auto_relays()) relays_dirty_ = true;
        ch_.expire(now);
        next_expire_ms_ = now + 5000;
    }
    due(next_expire_ms_);
    for (auto it = pending_.begin(); it != pending_.end();) {
        if (now >= it->second.sent_ms + cfg_.ping_timeout_ms) {
            switch (it->second.kind) {
                case ping_kind::relay:
                    ++probe_losses_.relay;
                    break;
                case ping_kind::direct:
                    ++probe_losses_.direct;
                    break;
                case ping_kind::inband:
                    ++probe_losses_.inband;
                    break;
                case ping_kind::user:
                    ++probe_losses_.user;
                    break;
            }
            it = pending_.erase(it);
        } else {
            due(it->second.sent_ms + cfg_.ping_timeout_ms);
            ++it;
        }
    }
    tick_role(now);
    if (relays_dirty_) rebuild_relays(now, false);
    tick_relays(now);
    refresh_self(now, false);
    due(self_signed_ms_ + cfg_.record_lifetime_ms / 2);
    tick_peers(now);
    if (next_deadline_ <= now) next_deadline_ = now + tick_quantum_ms;
    return next_deadline_;
}

void node_core::tick_relays(uint64_t now) {
    // Relays in some relayed pair's warm set are probed fast (failover budget).
    // Sticky for a while: a relay that just failed drops out of the warm sets, and must not then
    // look alive again merely because the slow timeout applies to it.
    for (const auto& [id, p] : peers_) {
        for (const auto& w : p.warm) {
            if (auto* r = relay_by_id(w.relay)) r->fast_until = now + 10 * cfg_.path_timeout_ms;
        }
    }
    for (auto& r : relays_) r.fast = now < r.fast_until;
    for (size_t i = 0; i < relays_.size(); ++i) {
        auto& r = relays_[i];
        if (r.self) continue;
        pick_relay_address(r, now);
        bool up = relay_up(r, now);
        bool usable = relay_usable(r, now);
        if (usable != r.was_usable) {
            r.was_usable = usable;
            recheck_all_ = true;
            if (r.fast && !usable && up) {
                log(2, "relay stopped answering; its pairs fail over",
                    {{"relay", r.spec.name},
                     {"timeout_ms", std::to_string(cfg_.fast_relay_timeout_ms)}});
            }
        }
        if (r.fast) {
            r.next_ping_ms = std::min(r.next_ping_ms, now + cfg_.fast_ping_interval_ms);
            for (const auto& a : r.addrs) {
                if (a.last_pong_ms && now <= a.last_pong_ms + cfg_.fast_relay_timeout_ms) {
                    due(a.last_pong_ms + cfg_.fast_relay_timeout_ms + 1);
                }
            }
        }
        if (up != r.was_up) {
            r.was_up = up;
            recheck_all_ = true;
            auto ep = relay_endpoint(r, now);
            log(up ? 1 : 2, up ? "relay up" : "relay down",
                {{"relay", r.spec.name}, {"endpoint", ep ? ep->str() : "-"}});
            self_dirty_ = true;
        }
        if (now >= r.next_ping_ms) {
            for (size_t a = 0; a < r.addrs.size(); ++a) {
                send_ping(r.addrs[a].ep, 0, pending_ping{ping_kind::relay, {}, i, a, r.addrs[a].ep},
                          now);
            }
            r.next_ping_ms = now + (r.fast ? cfg_.fast_ping_interval_ms : cfg_.ping_interval_ms);
        }
        due(r.next_ping_ms);
        if (now >= r.next_hello_ms) {
            // To every address: until one answers we do not know which works, and a relay with
            // two families reached on both keeps both NAT mappings warm.
            for (const auto& a : r.addrs) {
                send(hello_msg{hello_msg::flag_want_records, self_}, a.ep, 0, now);
            }
            r.next_hello_ms = now + cfg_.hello_interval_ms;
        }
        due(r.next_hello_ms);
        if (up) {
            // If the relay went down and the last moment it was up is what we compare against,
            // wake up when it would time out.
            for (const auto& a : r.addrs) {
                if (a.last_pong_ms) due(a.last_pong_ms + cfg_.path_timeout_ms + 1);
            }
        }
    }
}

void node_core::tick_peers(uint64_t now) {
    // Peers follow the record store: a record that expired (or was never there) is no peer.
    // Both are maps ordered by node ID, walked together in one pass (a tick runs often; with
    // hundreds of peers, per-peer lookups and key hashing were most of its cost).
    auto pit = peers_.begin();
    auto drop_until = [&](const node_id* id) {
        while (pit != peers_.end() && (!id || pit->first < *id)) {
            log(1, "peer gone (record expired)", {{"peer", pit->second.dp.name}});
            pit = peers_.erase(pit);
            ++dp_version_;
        }
    };
    const bool all = std::exchange(recheck_all_, false);
    store_.for_each_with_id([&](const node_id& id, const peer_record& rec) {
        drop_until(&id);
        if (id == identity_.id()) return;
        bool inserted = pit == peers_.end() || !(pit->first == id);
        if (inserted) pit = peers_.emplace_hint(pit, id, peer_entry{});
        peer_entry& p = pit->second;
        ++pit;
        if (inserted) {
            p.dp.id = id;
            p.discovered_ms = now;
            log(1, "peer discovered", {{"peer", rec.name}, {"node_id", id.short_hex()}});
            ++dp_version_;
        }
        if (p.record_seq != rec.seq) {
            // Candidates follow the record, keeping what we measured for addresses that stay.
            std::vector<candidate> cands;
            for (const auto& e : rec.endpoints) {
                candidate c{normalize(e)};
                for (const auto& o : p.candidates) {
                    if (o.ep == c.ep) c = o;
                }
                cands.push_back(c);
            }
            p.candidates = std::move(cands);
            p.record_seq = rec.seq;
            p.next_check_ms = 0;
        }
        // Only peers with something due are decided again: ticks stay cheap with many peers.
        if (!all && now < p.next_check_ms) {
            due(p.next_check_ms);
            return;
        }
        uint64_t outer = std::exchange(next_deadline_, UINT64_MAX);
        decide(id, p, rec, now);
        p.next_check_ms = next_deadline_;
        next_deadline_ = std::min(outer, next_deadline_);
    });
    drop_until(nullptr);
}

void node_core::decide(const node_id& id, peer_entry& p, const peer_record& rec, uint64_t now) {
    const bool in_use_direct = p.dp.path == path_kind::direct && !p.learned;
    // Probe the direct candidates.
    if (now >= p.next_probe_ms) {
        for (size_t i = 0; i < p.candidates.size(); ++i) {
            send_ping(p.candidates[i].ep, 0, pending_ping{ping_kind::direct, id, i}, now);
        }
        p.next_probe_ms = now + (in_use_direct || p.dp.path == path_kind::none || p.learned
                                     ? cfg_.ping_interval_ms
                                     : cfg_.upgrade_interval_ms);
    }
    due(p.next_probe_ms);

    peer_dataplane dp;
    dp.id = id;
    dp.name = rec.name;
    dp.wg_public_key = rec.wg_public_key;
    dp.allowed_ips = rec.pod_cidrs;
    bool learned = false;

    const candidate* best = nullptr;
    for (const auto& c : p.candidates) {
        if (c.last_pong_ms && now <= c.last_pong_ms + cfg_.path_timeout_ms) {
            if (!best || c.rtt_ms < best->rtt_ms) best = &c;
            due(c.last_pong_ms + cfg_.path_timeout_ms + 1);
        }
    }
    // Keep the address in use (say the IPv4 one) while it answers unless another (the IPv6 one) is
    // clearly faster: every change is a WireGuard endpoint update, and millisecond RTTs are noise.
    if (best && p.dp.path == path_kind::direct && p.dp.endpoint &&
        best->ep.address != p.dp.endpoint->address) {
        for (const auto& c : p.candidates) {
            if (c.ep.address == p.dp.endpoint->address && c.last_pong_ms &&
                now <= c.last_pong_ms + cfg_.path_timeout_ms &&
                c.rtt_ms - best->rtt_ms <
                    std::max(cfg_.switch_abs_ms, cfg_.switch_rel * c.rtt_ms)) {
                best = &c;
                break;
            }
        }
    }
    if (best) {
        dp.path = path_kind::direct;
        if (rec.wg_port) {
            dp.endpoint = wg_endpoint{best->ep.address, rec.wg_port};
        } else {
            learned = true;
        }
    } else if (p.last_inbound_ms && now <= p.last_inbound_ms + cfg_.path_timeout_ms) {
        dp.path = path_kind::direct;
        learned = true;
        due(p.last_inbound_ms + cfg_.path_timeout_ms + 1);
    } else if (const relay_entry* rl = relay_by_id(id);
               rl && rl->candidate && relay_up(*rl, now) && now >= rl->not_serving_until) {
        // A serving relay answers at its relay address, which its record advertises: it is
        // reached directly by everyone, never through another relay.
        due(now + cfg_.ping_interval_ms);
    } else if (!serving() && !p.candidates.empty() &&
               now < p.discovered_ms + cfg_.direct_grace_ms) {
        // A new peer: give its direct addresses a moment before binding relay sessions for it.
        due(p.discovered_ms + cfg_.direct_grace_ms);
    } else if (!serving()) {
        choose_relay(id, p, rec, now, dp);
    }
    if (dp.path != path_kind::relay && (p.relay || !p.warm.empty())) {
        p.relay.reset();
        p.session_id = 0;
        p.warm.clear();
    }
    if (dp != p.dp || learned != p.learned) {
        if (dp.path != p.dp.path || dp.endpoint != p.dp.endpoint || dp.relay != p.dp.relay ||
            learned != p.learned) {
            std::string ep = dp.endpoint ? dp.endpoint->str() : (learned ? "learned" : "-");
            std::vector<std::pair<std::string, std::string>> f = {
                {"peer", rec.name}, {"path", to_string(dp.path)}, {"endpoint", ep}};
            if (dp.path == path_kind::relay) {
                f.emplace_back("relay", name_of(dp.relay));
                f.emplace_back("why", "no direct answer within " +
                                          std::to_string(cfg_.path_timeout_ms) + " ms");
            } else if (dp.path == path_kind::direct) {
                f.emplace_back("why", learned ? "the peer reaches us directly"
                                              : "the peer answers on a direct address");
            }
            log(1, "path selected", std::move(f));
        }
        p.dp = std::move(dp);
        p.learned = learned;
        ++dp_version_;
    }
}

double node_core::relay_rtt(const relay_entry& r) const {
    if (r.active < r.addrs.size() && r.addrs[r.active].rtt_ms > 0) return r.addrs[r.active].rtt_ms;
    for (const auto& a : r.addrs) {
        if (a.rtt_ms > 0) return a.rtt_ms;
    }
    return 0;
}

bool node_core::relay_usable_fast(const relay_entry& r, uint64_t now) const {
    for (const auto& a : r.addrs) {
        if (a.last_pong_ms && now <= a.last_pong_ms + cfg_.fast_relay_timeout_ms) return true;
    }
    return false;
}

bool node_core::relay_usable(const relay_entry& r, uint64_t now) const {
    if (!r.candidate || !relay_up(r, now) || now < r.not_serving_until) return false;
    if (!r.fast) return true;
    for (const auto& a : r.addrs) {
        if (a.last_pong_ms && now <= a.last_pong_ms + cfg_.fast_relay_timeout_ms) return true;
    }
    return false;
}

// Relay election for one relayed pair (DESIGN §5). Score = RTT(A,R) + RTT(R,B) from the RTTs both
// nodes publish in their records, so both ends rank relays alike without talking; relays within
// spread_* of the best are equally good and ordered by the pair's rendezvous hash, which spreads
// pairs over them. Sessions are kept at the first warm_relays (make before break). The relay we
// send through stays while it is usable and in the warm set, unless the best is better by both
// switch_abs_ms and switch_rel (hysteresis). Each end chooses its sending relay on its own and
// accepts the peer's frames on any warm session: both directions fail over independently.
void node_core::choose_relay(const node_id& id, peer_entry& p, const peer_record& rec, uint64_t now,
                             peer_dataplane& dp) {
    struct cand {
        const relay_entry* r;
        double score;
        uint64_t hash;
    };
    std::vector<cand> cands;
    bool ignore_refusals = false;
    auto collect = [&](bool honour_exclusions) {
        for (size_t i = 0; i < rec.relays.size(); ++i) {
            const relay_entry* r = relay_by_id(rec.relays[i]);
            if (!r || r->self || !r->candidate) continue;
            if (!(ignore_refusals ? relay_up(*r, now) && (!r->fast || relay_usable_fast(*r, now))
                                  : relay_usable(*r, now)))
                continue;
            if (honour_exclusions) {
                auto ex = p.excluded.find(rec.relays[i]);
                if (ex != p.excluded.end() && now < ex->second) {
                    due(ex->second);
                    continue;
                }
            }
            double mine =
                r->published_rtt != peer_record::unknown_rtt ? r->published_rtt : relay_rtt(*r);
            double theirs = rec.relay_rtt(i) != peer_record::unknown_rtt ? rec.relay_rtt(i) : mine;
            cands.push_back(
                {r, mine + theirs, rendezvous_score(identity_.id(), id, rec.relays[i])});
        }
    };
    collect(true);
    if (cands.empty() && !p.excluded.empty()) {
        // All excluded: better a relay that failed once than none. A relay that rejected the
        // pair (full) is asked again only when its exclusion ends (`rejected`, below): asked on
        // every tick by every pair, at 300 nodes that was 4 million datagrams a second.
        collect(false);
    }
    if (cands.empty()) {
        // Only relays that refused us lately are left: ask them anyway (their refusal backoff
        // must not cut the pair off when one of them may serve by now).
        ignore_refusals = true;
        collect(false);
    }
    if (cands.empty()) return;
    double best = cands[0].score;
    for (const auto& c : cands) best = std::min(best, c.score);
    double spread = std::max(cfg_.spread_abs_ms, best * cfg_.spread_rel);
    std::sort(cands.begin(), cands.end(), [&](const cand& a, const cand& b) {
        bool ga = a.score <= best + spread, gb = b.score <= best + spread;
        if (ga != gb) return ga;
        if (ga) return a.hash < b.hash;
        return a.score < b.score;
    });
    double cur_score = -1;
    for (const auto& c : cands) {
        if (p.relay && *c.r->id == *p.relay) cur_score = c.score;
    }
    if (cands.size() > cfg_.warm_relays) cands.resize(cfg_.warm_relays);

    // The relay we send through.
    size_t use_idx = 0;
    for (size_t i = 0; i < cands.size(); ++i) {
        const auto& c = cands[i];
        if (p.relay && *c.r->id == *p.relay) {
            double margin = std::max(cfg_.switch_abs_ms, c.score * cfg_.switch_rel);
            if (!(cands[0].score + margin < c.score)) use_idx = i;
        }
    }
    const cand use_c = cands[use_idx];  // a copy: cands grows below
    const cand* use = &use_c;

    // The relay the peer sends through stays warm here too (even if we excluded it or rank it
    // lower), or its frames would find no session on our side.
    std::vector<const relay_entry*> extra;
    if (p.peer_relay && now <= p.peer_relay_ms + cfg_.path_timeout_ms) {
        bool in = false;
        for (const auto& c : cands) in |= *c.r->id == *p.peer_relay;
        const relay_entry* r = relay_by_id(*p.peer_relay);
        if (!in && r && !r->self && relay_up(*r, now)) extra.push_back(r);
    }
    // Warm sessions follow the set, keeping the state of those that stay.
    std::vector<peer_entry::warm_session> warm;
    for (const relay_entry* r : extra) cands.push_back({r, 0, 0});
    for (const auto& c : cands) {
        peer_entry::warm_session w{*c.r->id, session_id_for(identity_.id(), id, *c.r->id),
                                   *relay_endpoint(*c.r, now)};
        if (auto rj = p.rejected.find(w.relay); rj != p.rejected.end() && now < rj->second) {
            w.next_request_ms = rj->second;
        }
        for (const auto& o : p.warm) {
            if (o.relay == w.relay) {
                w.accepted = o.accepted;
                w.next_request_ms = o.next_request_ms;
                if (!(o.ep == w.ep)) w.next_request_ms = now;  // rebind from the new address
            }
        }
        warm.push_back(w);
    }
    p.warm = std::move(warm);
    for (auto& w : p.warm) {
        if (now >= w.next_request_ms) {
            send(relay_session_request_msg{w.session_id, identity_.id(), id}, w.ep, 0, now);
            w.next_request_ms =
                now + (w.accepted ? cfg_.session_refresh_ms : cfg_.session_retry_ms);
        }
        due(w.next_request_ms);
    }

    dp.path = path_kind::relay;
    dp.relay = *use->r->id;
    dp.relay_endpoint = *relay_endpoint(*use->r, now);
    dp.session_id = session_id_for(identity_.id(), id, dp.relay);
    for (const auto& w : p.warm) {
        if (w.relay != dp.relay && w.accepted) dp.standby.emplace_back(w.session_id, w.ep);
    }
    if (!p.relay || *p.relay != dp.relay) {
        ++selections_;
        if (p.relay) {
            const relay_entry* old = relay_by_id(*p.relay);
            if (!old || !relay_usable(*old, now)) ++failovers_;
            char scores[64];
            std::snprintf(scores, sizeof scores, "%.1f", use->score);
            std::string from_score = "gone";
            if (cur_score >= 0) {
                char b2[32];
                std::snprintf(b2, sizeof b2, "%.1f", cur_score);
                from_score = b2;
            }
            log(1, "relay switched",
                {{"peer", rec.name},
                 {"relay", name_of(dp.relay)},
                 {"from", name_of(*p.relay)},
                 {"path", "relay"},
                 {"rtt_sum_ms", std::string(scores) + " (was " + from_score + ")"}});
        }
        p.relay = dp.relay;
        p.session_id = dp.session_id;
        p.relay_since_ms = now;
        p.last_inband_pong_ms = 0;
        p.next_inband_ms = now;
    }
    p.accepted = false;
    for (const auto& w : p.warm) {
        if (w.relay == dp.relay) p.accepted = w.accepted;
    }
    if (now >= p.next_inband_ms) {
        send_ping(dp.relay_endpoint, p.session_id, pending_ping{ping_kind::inband, id}, now);
        p.next_inband_ms = now + cfg_.ping_interval_ms;
    }
    due(p.next_inband_ms);
    // End to end: the relay answers us, but nothing comes back through it from the peer. Give
    // the session a fair start (both ends must bind), then exclude it for this pair.
    uint64_t last = std::max(p.last_inband_pong_ms, p.relay_since_ms + 2 * cfg_.path_timeout_ms);
    auto rj = p.rejected.find(dp.relay);
    if (!p.accepted && rj != p.rejected.end() && now < rj->second) {
        // Waiting to ask again a relay that rejected us (all others excluded): it cannot carry
        // anything before then, which is no news; no end-to-end verdict on it meanwhile.
        due(rj->second);
    } else if (now > last + cfg_.path_timeout_ms) {
        log(2, "relayed path silent end to end; trying another relay",
            {{"peer", rec.name}, {"relay", name_of(dp.relay)}, {"path", "relay"}});
        p.excluded[dp.relay] = now + cfg_.relay_exclude_ms;
        p.relay.reset();
        due(now);
    } else {
        due(last + cfg_.path_timeout_ms + 1);
    }
}

void node_core::set_role(relay_role_state st, std::string reason, uint64_t now) {
    if (st == role_ && reason == role_reason_) return;
    role_ = st;
    role_reason_ = std::move(reason);
    role_since_ms_ = now;
    next_dialback_ms_ = now;
    recheck_all_ = true;
    self_dirty_ = true;
    int lvl = st == relay_role_state::refused ? 2 : 1;
    log(lvl, std::string("relay role ") + to_string(st),
        {{"relay", cfg_.node_name}, {"why", role_reason_}});
    due(now);
}

std::vector<wg_endpoint> node_core::verified_addresses() const {
    std::vector<wg_endpoint> v;
    for (size_t i = 0; i < self_addrs_.size(); ++i) {
        if (self_verified_[i]) v.push_back(self_addrs_[i]);
    }
    return v;
}

void node_core::start_verifying(std::string why, uint64_t now) {
    self_verified_.assign(self_addrs_.size(), false);
    dialback_first_ms_ = 0;
    dialback_nonces_.clear();
    dialback_asked_.clear();
    set_role(relay_role_state::verifying, std::move(why), now);
}

void node_core::tick_role(uint64_t now) {
    if (role_ == relay_role_state::refused) {
        // A refusal is not final: a port forward or firewall rule may be added later. Check
        // again after role_retry_ms, doubling up to role_retry_max_ms (each check costs the
        // helpers a few probes and logs a warning when it fails again).
        uint64_t at = role_since_ms_ + role_retry_backoff_ms_;
        if (now < at) return due(at);
        role_retry_backoff_ms_ = std::min(role_retry_backoff_ms_ * 2, cfg_.role_retry_max_ms);
        return start_verifying("checking again whether advertiseAddress is reachable (refused " +
                                   std::to_string((now - role_since_ms_) / 1000) + " s ago)",
                               now);
    }
    if (role_ != relay_role_state::verifying) return;
    size_t verified = std::count(self_verified_.begin(), self_verified_.end(), true);
    auto list = [&](bool want_verified) {
        std::string s;
        for (size_t i = 0; i < self_addrs_.size(); ++i) {
            if (self_verified_[i] == want_verified)
                s += (s.empty() ? "" : ", ") + self_addrs_[i].str();
        }
        return s;
    };
    if (!self_addrs_.empty() && verified == self_addrs_.size()) {
        return set_role(relay_role_state::active, "advertiseAddress reachable: " + list(true), now);
    }
    // One reachable address is enough to serve; a second family can take a while to find a
    // helper that speaks it (and may never be reachable), which must not keep the relay idle.
    if (verified > 0) {
        return set_role(relay_role_state::active,
                        "advertiseAddress reachable: " + list(true) +
                            " (not dialled back yet: " + list(false) + ")",
                        now);
    }
    // Listed nodes get dialback_timeout_ms from being listed. A node that only offers itself
    // (no relayNodes) counts from its first request: the first node of a cluster has nobody to
    // ask until others arrive, and must not be refused for being early.
    const uint64_t verify_from = offering() ? dialback_first_ms_ : role_since_ms_;
    const bool timing = !offering() || dialback_first_ms_ != 0;
    if (timing && now >= verify_from + cfg_.dialback_timeout_ms) {
        std::string secs = std::to_string(cfg_.dialback_timeout_ms / 1000);
        std::string who;
        for (const auto& n : dialback_asked_) who += (who.empty() ? "" : ", ") + n;
        return set_role(relay_role_state::refused,
                        dialback_asked_.empty()
                            ? "no other node could be asked to dial back " + list(false) +
                                  " within " + secs + " s"
                            : "advertiseAddress " + list(false) +
                                  " not reachable from other nodes: no dial-back from " + who +
                                  " within " + secs + " s",
                        now);
    }
    if (timing) due(verify_from + cfg_.dialback_timeout_ms);
    if (now < next_dialback_ms_) {
        due(next_dialback_ms_);
        return;
    }
    next_dialback_ms_ = now + cfg_.dialback_interval_ms;
    due(next_dialback_ms_);
    // Helpers: other relays that answer us, then peers we reach directly, then nodes registered
    // with us (answered at the address their HELLO came from).
    // Offering ourselves (no relayNodes): only a helper reached at a public address proves
    // anything (a LAN neighbour reaches a firewalled global IPv6 address too).
    const bool public_only = offering();
    std::vector<std::pair<std::string, wg_endpoint>> helpers;
    auto add = [&](std::string name, const wg_endpoint& ep) {
        if (!public_only || !ep.address.is_private()) helpers.emplace_back(std::move(name), ep);
    };
    for (const auto& r : relays_) {
        if (r.self || !relay_up(r, now)) continue;
        if (auto ep = relay_endpoint(r, now)) add(r.spec.name, *ep);
    }
    for (const auto& [id, p] : peers_) {
        if (helpers.size() >= cfg_.dialback_helpers) break;
        if (relay_by_id(id)) continue;
        for (const auto& c : p.candidates) {
            if (c.last_pong_ms && now <= c.last_pong_ms + cfg_.path_timeout_ms &&
                (!public_only || !c.ep.address.is_private())) {
                add(p.dp.name, c.ep);
                break;
            }
        }
    }
    for (const auto& [id, reg] : registered_) {
        if (helpers.size() >= cfg_.dialback_helpers) break;
        if (relay_by_id(id) || now > reg.last_hello_ms + 3 * cfg_.hello_interval_ms) continue;
        add(name_of(id), reg.from);
    }
    if (helpers.size() > cfg_.dialback_helpers) helpers.resize(cfg_.dialback_helpers);
    if (helpers.empty()) {
        // Nobody to ask yet (everyone is starting): look again soon rather than in a second.
        next_dialback_ms_ = now + cfg_.fast_ping_interval_ms;
        due(next_dialback_ms_);
        return;
    }
    if (!dialback_first_ms_) dialback_first_ms_ = now;
    for (size_t i = 0; i < self_addrs_.size(); ++i) {
        if (self_verified_[i]) continue;
        for (const auto& [name, ep] : helpers) {
            // Any helper: it sends the probe from a fresh socket of the target's family,
            // whatever family we reach it on.
            uint64_t nonce;
            rng_(std::span(reinterpret_cast<uint8_t*>(&nonce), sizeof nonce));
            dialback_nonces_[nonce] = i;
            send(dialback_request_msg{nonce, self_addrs_[i]}, ep, 0, now);
            if (std::find(dialback_asked_.begin(), dialback_asked_.end(), name) ==
                dialback_asked_.end()) {
                dialback_asked_.push_back(name);
            }
        }
    }
}

void node_core::on_dialback_request(const control_message& m, const dialback_request_msg& b,
                                    uint64_t now) {
    // Probes go only to the cluster's control port (no reflection to arbitrary services), and at
    // a bounded rate.
    if (b.target.port != cfg_.control_port) return;
    if (now >= probe_window_ms_ + 1000) {
        probe_window_ms_ = now;
        probes_in_window_ = 0;
    }
    if (++probes_in_window_ > cfg_.dialback_probes_per_s) return;
    aead_nonce nonce;
    rng_(nonce);
    auto d = ch_.send(dialback_probe_msg{b.nonce}, nonce, now);
    if (!d) return;
    outgoing_datagram o{normalize(b.target), 0, std::move(*d)};
    o.fresh_socket = true;
    out_.push_back(std::move(o));
    log(0, "dial-back probe sent", {{"peer", name_of(m.sender)}, {"endpoint", b.target.str()}});
}

void node_core::on_dialback_probe(const control_message& m, const dialback_probe_msg& b,
                                  uint64_t now) {
    auto it = dialback_nonces_.find(b.nonce);
    if (it == dialback_nonces_.end() || it->second >= self_verified_.size()) return;
    if (!self_verified_[it->second]) {
        self_verified_[it->second] = true;
        log(1, "advertiseAddress dialled back",
            {{"endpoint", self_addrs_[it->second].str()}, {"peer", name_of(m.sender)}});
    }
    due(now);
}

uint64_t node_core::on_datagram(std::span<const uint8_t> datagram, const wg_endpoint& from_raw,
                                uint64_t session_id, uint16_t via, uint64_t now) {
    note_wakeup(now);
    auto m = ch_.receive(datagram, now);
    if (!m) return next_deadline_;  // counted by the channel; never answered
    wg_endpoint from = normalize(from_raw);
    if (m->sender == identity_.id()) return next_deadline_;  // our own, looped back
    std::visit(
        [&](const auto& b) {
            using T = std::decay_t<decltype(b)>;
            if constexpr (std::is_same_v<T, ping_msg>) {
                on_ping(*m, b, from, session_id, now);
            } else if constexpr (std::is_same_v<T, pong_msg>) {
                on_pong(*m, b, now);
            } else if constexpr (std::is_same_v<T, hello_msg>) {
                if (!session_id) on_hello(*m, b, from, now);
            } else if constexpr (std::is_same_v<T, records_msg>) {
                if (!session_id) on_records(*m, b, now);
            } else if constexpr (std::is_same_v<T, relay_session_request_msg>) {
                if (!session_id) on_session_request(*m, b, from, via, now);
            } else if constexpr (std::is_same_v<T, relay_session_accept_msg>) {
                on_session_answer(*m, b.session_id, b.to, true, 0, now);
            } else if constexpr (std::is_same_v<T, relay_session_reject_msg>) {
                on_session_answer(*m, b.session_id, b.to, false, static_cast<uint8_t>(b.reason),
                                  now);
            } else if constexpr (std::is_same_v<T, dialback_request_msg>) {
                if (!session_id) on_dialback_request(*m, b, now);
            } else if constexpr (std::is_same_v<T, dialback_probe_msg>) {
                if (!session_id) on_dialback_probe(*m, b, now);
            }
        },
        m->body);
    due(now);
    return next_deadline_;
}

void node_core::on_ping(const control_message& m, const ping_msg& b, const wg_endpoint& from,
                        uint64_t session_id, uint64_t now) {
    send(pong_msg{b.seq, m.timestamp_us, from}, from, session_id, now);
    if (session_id) {
        auto it = peers_.find(m.sender);
        if (it != peers_.end()) {
            for (const auto& r : relays_) {
                if (r.id && !r.self &&
                    session_id_for(identity_.id(), m.sender, *r.id) == session_id) {
                    if (it->second.peer_relay != r.id) it->second.next_check_ms = 0;
                    it->second.peer_relay = r.id;
                    it->second.peer_relay_ms = now;
                }
            }
        }
    }
    if (!session_id) {
        auto it = peers_.find(m.sender);
        if (it != peers_.end()) {
            it->second.last_inbound_ms = now;
            it->second.next_check_ms = 0;
        }
    }
}

void node_core::on_pong(const control_message& m, const pong_msg& b, uint64_t now) {
    auto it = pending_.find(b.seq);
    if (it == pending_.end()) return;  // late, or not ours
    pending_ping p = it->second;
    double rtt = static_cast<double>(now - p.sent_ms);
    switch (p.kind) {
        case ping_kind::relay: {
            // By address: relays_ may have been rebuilt (indices moved) since the PING.
            relay_entry* rp = nullptr;
            size_t ai = 0;
            for (auto& rr : relays_) {
                for (size_t k = 0; k < rr.addrs.size() && !rp; ++k) {
                    if (rr.addrs[k].ep == p.ep) rp = &rr, ai = k;
                }
                if (rp) break;
            }
            if (!rp || rp->self) break;
            auto& r = *rp;
            // A found relay is the node its signed record names: an answer from another node at
            // that address (a stale record of a reinstalled node, a forged one) is no answer.
            if (r.origin == relay_origin::discovered && r.id && *r.id != m.sender) break;
            p.addr = ai;
            if (r.id && *r.id != m.sender) {
                log(2, "relay answered with a new node identity (reinstalled?)",
                    {{"relay", r.spec.name}, {"node_id", m.sender.short_hex()}});
            }
            if (!r.id || *r.id != m.sender) {
                self_dirty_ = true;
                recheck_all_ = true;
                relays_dirty_ = auto_relays();  // a bootstrap node: its record names it
            }
            r.id = m.sender;
            auto& a = r.addrs[p.addr];
            if (!a.last_pong_ms || now > a.last_pong_ms + cfg_.path_timeout_ms) recheck_all_ = true;
            a.last_pong_ms = now;
            pick_relay_address(r, now);
            a.rtt_ms = a.rtt_ms == 0 ? rtt : 0.75 * a.rtt_ms + 0.25 * rtt;
            a.reflexive = normalize(b.observed);
            break;
        }
        case ping_kind::direct: {
            if (m.sender != p.peer) break;
            auto pit = peers_.find(p.peer);
            if (pit == peers_.end() || p.index >= pit->second.candidates.size()) break;
            auto& c = pit->second.candidates[p.index];
            c.last_pong_ms = now;
            c.rtt_ms = c.rtt_ms == 0 ? rtt : 0.75 * c.rtt_ms + 0.25 * rtt;
            pit->second.next_check_ms = 0;
            break;
        }
        case ping_kind::inband: {
            if (m.sender != p.peer) break;
            auto pit = peers_.find(p.peer);
            if (pit == peers_.end()) break;
            auto& pe = pit->second;
            pe.last_inband_pong_ms = now;
            pe.inband_rtt_ms = pe.inband_rtt_ms == 0 ? rtt : 0.75 * pe.inband_rtt_ms + 0.25 * rtt;
            pe.next_check_ms = 0;
            break;
        }
        case ping_kind::user:
            if (m.sender != p.peer) break;
            ping_results_.push_back(ping_result{p.token, rtt});
            break;
    }
    pending_.erase(it);
}

void node_core::on_hello(const control_message& m, const hello_msg& b, const wg_endpoint& from,
                         uint64_t now) {
    if (!relay_like()) return;  // only relays are rendezvous points
    // Only found relays depend on records; with relayNodes nothing is copied per HELLO.
    auto before = auto_relays() ? relay_facts_of(store_.find(b.record.id())) : std::nullopt;
    auto put = store_.put(b.record, now);
    if (!put) {
        // Outdated seq is normal (a HELLO overtaken by a newer one); anything else is worth a line.
        if (!put.err().is(errc::already_exists)) {
            log(2, "registration refused", {{"peer", b.record.name}, {"error", put.err().message}});
        }
        return;
    }
    registered_[m.sender] = registration{from, now};
    if (*put != put_outcome::duplicate) note_record(b.record, before);
    if (*put == put_outcome::inserted) {
        log(1, "node registered", {{"peer", b.record.name}, {"endpoint", from.str()}});
    }
    if (*put != put_outcome::duplicate) push_record(b.record, m.sender, now);
    if (b.flags & hello_msg::flag_want_records) send_records(from, now);
}

void node_core::push_record(const peer_record& rec, const node_id& except, uint64_t now) {
    if (!relay_like()) return;
    for (auto it = registered_.begin(); it != registered_.end();) {
        // A node that stopped saying HELLO is no longer listening here.
        if (now > it->second.last_hello_ms + 3 * cfg_.hello_interval_ms) {
            it = registered_.erase(it);
            continue;
        }
        if (it->first != except && it->first != rec.id()) {
            send(records_msg{{rec}}, it->second.from, 0, now);
        }
        ++it;
    }
}

void node_core::send_records(const wg_endpoint& to, uint64_t now) {
    // Our own record first, then the store, packed into datagrams below the control size limit.
    std::vector<const peer_record*> all{&self_};
    store_.for_each([&](const peer_record& r) { all.push_back(&r); });
    records_msg batch;
    size_t size = envelope_size + 1;
    for (const auto* r : all) {
        auto enc = r->encode();
        if (!enc) continue;
        size_t n = 2 + enc->size();
        if (!batch.records.empty() &&
            (size + n > max_control_plaintext || batch.records.size() == 255)) {
            send(std::move(batch), to, 0, now);
            batch = records_msg{};
            size = envelope_size + 1;
        }
        batch.records.push_back(*r);
        size += n;
    }
    if (!batch.records.empty()) send(std::move(batch), to, 0, now);
}

void node_core::on_records(const control_message& m, const records_msg& b, uint64_t now) {
    // Records come from relays (the rendezvous); from anyone else they are ignored. The relay is
    // not trusted for their content: every record is verified against its own node's key.
    if (!relay_by_id(m.sender)) return;
    for (const auto& r : b.records) {
        if (r.id() == identity_.id()) continue;
        auto before = auto_relays() ? relay_facts_of(store_.find(r.id())) : std::nullopt;
        auto put = store_.put(r, now);
        if (put && *put != put_outcome::duplicate) note_record(r, before);
        if (!put && !put.err().is(errc::already_exists)) {
            log(0, "record refused", {{"peer", r.name}, {"error", put.err().message}});
        }
        // A relay passes on what it learned from another relay (nodes that reach only us).
        if (put && *put != put_outcome::duplicate) push_record(r, m.sender, now);
    }
}

void node_core::on_session_request(const control_message& m, const relay_session_request_msg& b,
                                   const wg_endpoint& from, uint16_t via, uint64_t now) {
    auto reject = [&](reject_reason why) {
        send(relay_session_reject_msg{b.session_id, b.from, b.to, why}, from, 0, now);
    };
    // Only a verified relay forwards (a listed node whose address nobody can reach must not
    // attract sessions it cannot carry).
    if (role_ != relay_role_state::active || !binder_) return reject(reject_reason::not_a_relay);
    // A node asks only for its own side: the request's `from` must be the authenticated sender.
    if (b.from != m.sender || b.to == b.from) return reject(reject_reason::unspecified);
    auto st = binder_->bind(b.session_id, b.from, b.to, from, via);
    if (!st) {
        log(2, "relay session refused",
            {{"peer", name_of(b.from)}, {"error", st.err().message}, {"endpoint", from.str()}});
        return reject(st.err().is(errc::exhausted) ? reject_reason::capacity
                                                   : reject_reason::unspecified);
    }
    send(relay_session_accept_msg{b.session_id, b.from, b.to}, from, 0, now);
}

void node_core::on_session_answer(const control_message& m, uint64_t session_id, const node_id& to,
                                  bool accepted, uint8_t reason, uint64_t now) {
    auto it = peers_.find(to);
    if (it == peers_.end()) return;
    auto& p = it->second;
    auto w = std::find_if(p.warm.begin(), p.warm.end(), [&](const auto& x) {
        return x.relay == m.sender && x.session_id == session_id;
    });
    if (w == p.warm.end()) return;
    p.next_check_ms = 0;
    if (accepted) {
        if (!w->accepted) {
            log(0, "relay session accepted", {{"peer", p.dp.name}, {"relay", name_of(m.sender)}});
        }
        w->accepted = true;
        if (auto* r = relay_by_id(m.sender)) r->reject_backoff_ms = 0;
        w->next_request_ms = now + cfg_.session_refresh_ms;
    } else {
        log(2, "relay session rejected; trying another relay",
            {{"peer", p.dp.name},
             {"relay", name_of(m.sender)},
             {"reason", std::to_string(reason)}});
        if (reason != static_cast<uint8_t>(reject_reason::not_a_relay)) {
            p.excluded[m.sender] = now + cfg_.relay_exclude_ms;
            p.rejected[m.sender] = now + cfg_.relay_exclude_ms;
        }
        if (p.relay && *p.relay == m.sender) p.relay.reset();
        p.warm.erase(w);
        if (reason == static_cast<uint8_t>(reject_reason::not_a_relay)) {
            // Listed but not serving (still verifying, or refused): no pair uses it for a while.
            // 1 s first (a relay being verified usually serves a moment later), doubling per
            // round of refusals up to 16 s (a refused relay is not asked by every pair forever).
            if (auto* r = relay_by_id(m.sender)) {
                if (now >= r->not_serving_until) {
                    r->reject_backoff_ms = r->reject_backoff_ms
                                               ? std::min<uint64_t>(2 * r->reject_backoff_ms, 16000)
                                               : cfg_.dialback_interval_ms;
                    r->not_serving_until = now + r->reject_backoff_ms;
                }
                recheck_all_ = true;
            }
        }
    }
}

result<uint64_t> node_core::ping(const node_id& peer, uint64_t now) {
    auto it = peers_.find(peer);
    if (it == peers_.end()) return error(errc::not_found, "no such peer");
    const auto& p = it->second;
    uint64_t token = next_token_++;
    pending_ping pp{ping_kind::user, peer};
    pp.token = token;
    if (p.dp.path == path_kind::direct) {
        // The control endpoint behind the direct path, or (learned) the last direct PING source
        // is not known here: probe every candidate; the first answer wins.
        bool sent = false;
        for (const auto& c : p.candidates) {
            if (p.dp.endpoint && c.ep.address != p.dp.endpoint->address) continue;
            send_ping(c.ep, 0, pp, now);
            sent = true;
        }
        if (!sent) {
            for (const auto& c : p.candidates) send_ping(c.ep, 0, pp, now);
        }
    } else if (p.dp.path == path_kind::relay) {
        send_ping(p.dp.relay_endpoint, p.dp.session_id, pp, now);
    } else {
        return error(errc::state_mismatch, "no path to " + p.dp.name + " yet");
    }
    due(now + cfg_.ping_timeout_ms);
    return token;
}

std::optional<node_id> node_core::resolve(const std::string& name_or_id) const {
    for (const auto& [id, p] : peers_) {
        if (p.dp.name == name_or_id || id.hex() == name_or_id) return id;
    }
    return std::nullopt;
}

std::vector<peer_dataplane> node_core::dataplane() const {
    std::vector<peer_dataplane> v;
    v.reserve(peers_.size());
    for (const auto& [id, p] : peers_) v.push_back(p.dp);
    return v;
}

std::vector<peer_view> node_core::peers() const {
    std::vector<peer_view> v;
    for (const auto& [id, p] : peers_) {
        peer_view pv;
        pv.id = id;
        pv.name = p.dp.name;
        pv.wg_public_key = p.dp.wg_public_key;
        pv.pod_cidrs = p.dp.allowed_ips;
        pv.path = p.dp.path;
        pv.learned = p.learned;
        pv.endpoint = p.dp.endpoint;
        if (p.dp.path == path_kind::relay) {
            pv.relay = p.dp.relay;
            pv.relay_name = name_of(p.dp.relay);
            pv.session_id = p.dp.session_id;
            pv.session_accepted = p.accepted;
            if (p.last_inband_pong_ms) pv.rtt_ms = p.inband_rtt_ms;
        } else if (p.dp.path == path_kind::direct) {
            for (const auto& c : p.candidates) {
                if (c.last_pong_ms && (!pv.rtt_ms || c.rtt_ms < *pv.rtt_ms)) pv.rtt_ms = c.rtt_ms;
            }
        }
        v.push_back(std::move(pv));
    }
    return v;
}

std::vector<relay_view> node_core::relays() const {
    std::vector<relay_view> v;
    // No clock here: "up" is judged at the last instant the core saw (the newest PONG or tick).
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
            rv.state = r.was_up && (!r.candidate || r.not_serving_until > last_tick_ms_)
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
        if (r.id) {
            for (const auto& [id, p] : peers_) {
                if (p.dp.path == path_kind::relay && p.dp.relay == *r.id) ++rv.load;
            }
        }
        v.push_back(std::move(rv));
    }
    return v;
}

}  // namespace mw::meshd
