#include "meshd/core/node_core.hpp"

#include <algorithm>

#include "meshd/core/sodium_init.hpp"
#include "meshd/core/wire_codec.hpp"

namespace mw::meshd {

node_core::node_core(node_core_config cfg, const node_identity& identity, psk_sealer sealer,
                     rng_fn rng, relay_binder* binder, record_store_config store_cfg)
    : ctx_(std::move(cfg), identity, std::move(sealer), std::move(rng)),
      // Our role changed: a serving node takes no relayed paths, and our record says it serves.
      role_(ctx_, binder,
            [this] {
                paths_.relays_changed();
                members_.mark_self_dirty();
            }),
      // A new or changed record may add, drop or re-address a found relay, and is pushed on
      // to a few direct neighbours.
      members_(ctx_, role_, store_cfg,
               [this](const peer_record& rec, const std::optional<relay_facts>& before) {
                   directory_.note_record(rec, before);
                   if (ctx_.cfg.anti_entropy) ae_.note_changed(rec.id(), node_id{});
               }),
      // The relays or their liveness changed: every pair is decided again; what our record says
      // about the relays we are attached to changed: it is signed again.
      directory_(
          ctx_, members_.store(), [this] { paths_.relays_changed(); },
          [this] { members_.mark_self_dirty(); }),
      election_(ctx_, directory_),
      paths_(ctx_, members_.store(), directory_, election_, role_),
      ae_(ctx_, members_,
          anti_entropy_config{.interval_ms = ctx_.cfg.anti_entropy_interval_ms,
                              .max_interval_ms = ctx_.cfg.anti_entropy_max_interval_ms,
                              .max_neighbours = ctx_.cfg.anti_entropy_neighbours,
                              .push_fanout = ctx_.cfg.anti_entropy_fanout},
          [this](const control_message& m, uint64_t request_id, const cookie_bytes& cookie,
                 const wg_endpoint& from,
                 uint64_t now) { return source_proven(m, request_id, cookie, from, now); }) {
    ensure_sodium();
    // A rendezvous that keeps its records in sync with us by anti-entropy is not asked for
    // every record at every HELLO (docs/architecture.md "Membership").
    directory_.defer_hello = [this](const node_id& id, uint64_t now) {
        return ctx_.cfg.anti_entropy && ae_.defer_hello(id, now);
    };
    // A relay answers our HELLO with what we lack, not with every record (membership.hpp).
    directory_.add_digest = [this](hello_msg& h) {
        const auto& d = members_.digest();
        h.flags |= hello_msg::flag_digest;
        h.count = d.count();
        h.digest = d.digest();
    };
    ctx_.name_of = [this](const node_id& id) { return directory_.name_of(id); };
    // Replay-table slots beyond a share for unknown senders only for nodes whose record we hold.
    ctx_.channel().set_admission(
        [this](const node_id& id) { return members_.store().find(id) != nullptr; });
    // Revoked and (requireNode) unlisted senders cost no pair key and no replay slot.
    ctx_.channel().set_refusal([this](const node_id& id) { return ctx_.revoked(id); });
    // A recipient we have not heard from yet: its key is in its verified record.
    ctx_.channel().set_key_source([this](const node_id& id) -> std::optional<wg_key> {
        if (const peer_record* r = members_.store().find(id)) return r->wg_public_key;
        return std::nullopt;
    });
    for (const auto& a : ctx_.cfg.bootstrap) {
        offer_endpoint(std::nullopt, wg_endpoint{a, ctx_.cfg.control_port}, learned_via::bootstrap,
                       0);
    }
    auto relays = std::move(ctx_.cfg.relays);
    ctx_.cfg.relays.clear();
    bool listed = std::exchange(ctx_.cfg.relay_role, false);
    set_relays(std::move(relays), listed, 0);
}

void node_core::set_relays(std::vector<relay_spec> relays, bool relay_role, uint64_t now) {
    auto& cfg = ctx_.cfg;
    if (relays == cfg.relays && relay_role == cfg.relay_role && !directory_.empty()) return;
    bool was_listed = cfg.relay_role;
    cfg.relays = std::move(relays);
    cfg.relay_role = relay_role;
    directory_.rebuild(now, true);
    role_.on_relay_config(relay_role, was_listed, directory_.self_addresses(), now);
    members_.mark_self_dirty();
    paths_.relays_changed();
    ctx_.due(now);
}

void node_core::set_endpoints(std::vector<wg_endpoint> endpoints, uint64_t now) {
    if (endpoints == ctx_.cfg.endpoints) return;
    ctx_.cfg.endpoints = std::move(endpoints);
    members_.mark_self_dirty();
    if (auto_relays()) {
        directory_.rebuild(now, false);  // a bootstrap address may have become ours
        role_.update_auto(now);
    }
    ctx_.due(now);
}

void node_core::set_cluster_keys(psk_sealer sealer, uint64_t now) {
    ctx_.set_cluster_keys(std::move(sealer));
    ctx_.due(now);
}

void node_core::set_revoked(std::vector<node_id> revoked, uint64_t now) {
    std::sort(revoked.begin(), revoked.end());
    revoked.erase(std::unique(revoked.begin(), revoked.end()), revoked.end());
    if (revoked == ctx_.cfg.revoked) return;
    const bool unrevoked = std::any_of(
        ctx_.cfg.revoked.begin(), ctx_.cfg.revoked.end(),
        [&](const node_id& id) { return !std::binary_search(revoked.begin(), revoked.end(), id); });
    ctx_.cfg.revoked = std::move(revoked);
    // Their records go now (their peers with them, as when a record expires); from here on
    // nothing of theirs is accepted: not their messages, not their records from a relay.
    if (size_t n = members_.drop_revoked(); n > 0) {
        ctx_.log(1, "revoked nodes removed", {{"count", std::to_string(n)}});
        directory_.note_records_expired();
    }
    // A node taken off the list: its record, dropped here, is still at the relays, and it does
    // not HELLO again unless it noticed (a probe of its went unanswered; at idle relays are
    // probed every 2 minutes). HELLO now: our digest differs from the relay's, which answers
    // with the records we lack, not at our next regular HELLO (5 minutes).
    if (unrevoked) {
        directory_.hello_now(now);
        ask_readmitted(now);
    }
    ctx_.due(now);
}

void node_core::ask_readmitted(uint64_t now) {
    // Serving as a relay, we dropped the node's record and registration, and it does not know
    // (its datagrams were dropped unanswered): it would HELLO again only at its regular HELLO,
    // 5 minutes away. Ask it at the address it registered from (proven by its HELLO's cookie
    // then), one small sealed datagram per node and admission, never in answer to the node.
    for (const auto& d : members_.take_readmitted()) {
        if (!ctx_.channel().learn_key(d.key)) continue;
        ctx_.log(1, "asking a readmitted node for its record",
                 {{"peer", d.id.short_hex()}, {"endpoint", d.from.str()}});
        ctx_.send(hello_wanted_msg{}, d.id, d.from, 0, now);
    }
}

void node_core::set_listed(std::optional<std::vector<node_id>> listed, uint64_t now) {
    if (listed) {
        std::sort(listed->begin(), listed->end());
        listed->erase(std::unique(listed->begin(), listed->end()), listed->end());
    }
    const bool require = listed.has_value();
    if (require == ctx_.cfg.require_listed && (!listed || *listed == ctx_.cfg.listed)) return;
    // Listed now where it was not (or the requirement lifted): as an un-revoked node, asked for.
    const bool admitted =
        (ctx_.cfg.require_listed && !require) ||
        (require && std::any_of(listed->begin(), listed->end(), [&](const node_id& id) {
             return !std::binary_search(ctx_.cfg.listed.begin(), ctx_.cfg.listed.end(), id);
         }));
    ctx_.cfg.require_listed = require;
    ctx_.cfg.listed = listed ? std::move(*listed) : std::vector<node_id>{};
    if (size_t n = members_.drop_revoked(); n > 0) {
        ctx_.log(1, "nodes without a Kubernetes Node removed", {{"count", std::to_string(n)}});
        directory_.note_records_expired();
    }
    if (admitted) {
        directory_.hello_now(now);
        ask_readmitted(now);
    }
    ctx_.due(now);
}

void node_core::set_bootstrap(std::vector<ip_address> bootstrap, uint64_t now) {
    if (bootstrap == ctx_.cfg.bootstrap) return;
    ctx_.cfg.bootstrap = std::move(bootstrap);
    withdraw_endpoints(learned_via::bootstrap, now);
    for (const auto& a : ctx_.cfg.bootstrap) {
        offer_endpoint(std::nullopt, wg_endpoint{a, ctx_.cfg.control_port}, learned_via::bootstrap,
                       now);
    }
    if (auto_relays()) directory_.rebuild(now, false);
    ctx_.due(now);
}

result<put_outcome> node_core::offer_record(const peer_record& rec, learned_via via, uint64_t now,
                                            uint64_t max_remaining_ms) {
    auto put = members_.offer_record(rec, via, ctx_.id(), now, max_remaining_ms);
    ctx_.due(now);
    return put;
}

void node_core::offer_endpoint(const std::optional<node_id>& id, const wg_endpoint& ep,
                               learned_via via, uint64_t now) {
    if (id) {
        paths_.add_candidate(*id, ep, via, now);  // filtered there (endpoint_filter.hpp)
    } else {
        if (!ctx_.endpoint_allowed(ep, to_string(via))) return;
        directory_.offer_rendezvous(ep, via);
        ctx_.due(now);
    }
}

void node_core::withdraw_endpoints(learned_via via, uint64_t now) {
    directory_.withdraw_rendezvous(via);
    paths_.withdraw_candidates(via, now);
}

uint64_t node_core::start(uint64_t now) {
    if (ctx_.channel().epoch() == 0) ctx_.channel().set_epoch(now / 1000);
    role_.start(now);
    ctx_.set_next_deadline(UINT64_MAX);  // the constructor's due(0): starting is not waking late
    refresh_self(now, true);
    ctx_.log(1, "node core started",
             {{"peer", ctx_.cfg.node_name},
              {"node_id", ctx_.id().short_hex()},
              {"relays", std::to_string(directory_.all().size())},
              {"relay_role", ctx_.cfg.relay_role ? "listed" : "no"}});
    return tick(now);
}

void node_core::refresh_self(uint64_t now, bool force) {
    // New content goes to the relays now rather than at the next HELLO, and to a few direct
    // neighbours.
    if (members_.refresh_self(directory_.attachments(now), force, now)) {
        directory_.hello_now(now);
        if (ctx_.cfg.anti_entropy) ae_.note_changed(ctx_.id(), ctx_.id());
    }
}

void node_core::note_wakeup(uint64_t now) {
    const uint64_t deadline = ctx_.next_deadline();
    if (deadline == UINT64_MAX || now <= deadline + ctx_.cfg.stall_ms) return;
    const uint64_t late = now - deadline;
    directory_.shift_clocks(late, now);
    paths_.shift_clocks(late, now);
    // Pings in flight across the stall would measure the stall as RTT (and get re-signed into
    // our record): forget them, unanswered and uncounted; the next probes follow at once.
    ctx_.probes().forget_sent_until(deadline);
    ++stalls_;
    ctx_.set_next_deadline(now);  // credited once: the calls that follow this wakeup are not late
    ctx_.log(1, "woken late; relay liveness paused for the stall",
             {{"late_ms", std::to_string(late)}});
}

// The tick order matters: expiry first (a record that went may drop a relay), then our role
// (it may start or stop serving), the relay list and liveness, our record (it lists the relays
// we are attached to), and last the peers (they read all of the above).
std::vector<outgoing_datagram> node_core::take_outgoing() {
    auto v = ctx_.take_outgoing();
    for (const auto& o : v) {
        ++traffic_.tx_packets;
        traffic_.tx_bytes += o.bytes.size() + (o.session_id ? relay_data_header_size : 0);
    }
    return v;
}

void node_core::measure_traffic(uint64_t now) {
    if (!traffic_mark_ms_ || now < traffic_mark_ms_) {
        traffic_mark_ms_ = now;
        traffic_mark_ = traffic_;
        return;
    }
    const uint64_t w = now - traffic_mark_ms_;
    if (w < ctx_.cfg.traffic_window_ms) return;
    const double s = static_cast<double>(w) / 1000.0;
    traffic_rate_ = control_traffic_rate{
        static_cast<double>(traffic_.rx_packets - traffic_mark_.rx_packets) / s,
        static_cast<double>(traffic_.rx_bytes - traffic_mark_.rx_bytes) / s,
        static_cast<double>(traffic_.tx_packets - traffic_mark_.tx_packets) / s,
        static_cast<double>(traffic_.tx_bytes - traffic_mark_.tx_bytes) / s, w};
    traffic_mark_ms_ = now;
    traffic_mark_ = traffic_;
}

uint64_t node_core::tick(uint64_t now) {
    note_wakeup(now);
    measure_traffic(now);
    ctx_.set_next_deadline(UINT64_MAX);
    last_tick_ms_ = now;
    if (now >= next_expire_ms_) {
        if (members_.expire(now)) directory_.note_records_expired();
        next_expire_ms_ = now + 5000;
    }
    ctx_.due(next_expire_ms_);
    ctx_.due(ctx_.cookies().tick(now));
    if (uint64_t t = ctx_.probes().expire(now, ctx_.cfg.ping_timeout_ms); t != UINT64_MAX) {
        ctx_.due(t);
    }
    role_.tick([this](bool public_only, size_t max,
                      uint64_t t) { return dialback_helpers(public_only, max, t); },
               now);
    if (directory_.dirty()) directory_.rebuild(now, false);
    // Relays in some active relayed pair's warm set are probed fast (failover budget); the
    // relays idle pairs send through at the NAT-keepalive rate, the rest slower. Each distinct
    // relay once (peer_paths::uses).
    const auto& uses = paths_.uses(now);
    for (const auto& relay : uses.warm_active) directory_.keep_fast(relay, now);
    for (const auto& relay : uses.used) directory_.keep_used(relay);
    directory_.tick(members_.self(), now);
    refresh_self(now, false);
    ctx_.due(members_.self_refresh_due());
    paths_.tick(now);
    // Last: the neighbours are the paths and rendezvous just decided.
    if (ctx_.cfg.anti_entropy) {
        if (now >= next_neighbour_scan_ms_) {
            ae_.set_neighbours(direct_neighbours(now), now);
            next_neighbour_scan_ms_ = now + 1000;
        }
        ctx_.due(next_neighbour_scan_ms_);
        ae_.tick(now);
    }
    if (ctx_.next_deadline() <= now) ctx_.set_next_deadline(now + core_context::tick_quantum_ms);
    return ctx_.next_deadline();
}

std::vector<anti_entropy::neighbour> node_core::direct_neighbours(uint64_t now) const {
    std::vector<anti_entropy::neighbour> v;
    // A serving relay's clients register with it (HELLO): it keeps no rounds of its own.
    if (role_.serving()) return v;
    // Rendezvous that answer (relays we register with excluded: they send us every record).
    for (const auto& r : directory_.all()) {
        if (r.self || !r.id || r.candidate || !directory_.up(r, now)) continue;
        if (auto ep = directory_.endpoint(r, now)) v.push_back({*r.id, *ep});
    }
    // Peers with a direct path that answers; an idle pair's, which sends no probes, while its
    // decision holds (peer_paths::answering), else the island would lose its rounds at idle.
    for (const auto& [id, p] : paths_.all()) {
        if (const relay_entry* r = directory_.by_id(id); r && r->candidate) continue;
        if (const auto* c = paths_.answering(p, now)) v.push_back({id, c->ep});
    }
    return v;
}

// Helpers for our dial-back: other relays that answer us, then peers we reach directly, then
// nodes registered with us (answered at the address their HELLO came from).
relay_role::helper_list node_core::dialback_helpers(bool public_only, size_t max,
                                                    uint64_t now) const {
    relay_role::helper_list helpers;
    auto add = [&](std::string name, const node_id& id, const wg_endpoint& ep) {
        if (!public_only || !ep.address.is_private()) {
            helpers.push_back(relay_role::helper{std::move(name), id, ep});
        }
    };
    for (const auto& r : directory_.all()) {
        if (r.self || !r.id || !directory_.up(r, now)) continue;
        if (auto ep = directory_.endpoint(r, now)) add(r.spec.name, *r.id, *ep);
    }
    for (const auto& [id, p] : paths_.all()) {
        if (helpers.size() >= max) break;
        if (directory_.by_id(id)) continue;
        for (const auto& c : p.candidates) {
            if (c.last_pong_ms && now <= c.last_pong_ms + ctx_.cfg.path_timeout_ms &&
                (!public_only || !c.ep.address.is_private())) {
                add(p.dp.name, id, c.ep);
                break;
            }
        }
    }
    for (const auto& [id, reg] : members_.registrations()) {
        if (helpers.size() >= max) break;
        if (directory_.by_id(id) || now > reg.last_hello_ms + members_.registration_ms()) continue;
        add(ctx_.name_of(id), id, reg.from);
    }
    if (helpers.size() > max) helpers.resize(max);
    return helpers;
}

// The handler table: each message type goes to the part that owns what it changes.
uint64_t node_core::on_datagram(std::span<const uint8_t> datagram, const wg_endpoint& from_raw,
                                uint64_t session_id, uint16_t via, uint64_t now) {
    note_wakeup(now);
    ++traffic_.rx_packets;
    traffic_.rx_bytes += datagram.size() + (session_id ? relay_data_header_size : 0);
    if (session_id && peek_probe_index(datagram)) {
        // A sealed in-band probe (shaped like WireGuard data, never a control datagram).
        if (auto user =
                paths_.on_probe_frame(session_id, normalize_endpoint(from_raw), datagram, now)) {
            ping_results_.push_back(ping_result{user->first.token, user->second});
        }
        ctx_.due(now);
        return ctx_.next_deadline();
    }
    const auto before = ctx_.channel().counters();
    auto m = ctx_.channel().receive(datagram, now);
    if (!m) {  // counted by the channel; never answered
        const auto& after = ctx_.channel().counters();
        if (after.auth_failed != before.auth_failed) {
            ctx_.note_unauthenticated(normalize_endpoint(from_raw),
                                      after.retired_key != before.retired_key, now);
        }
        return ctx_.next_deadline();
    }
    wg_endpoint from = normalize_endpoint(from_raw);
    if (ctx_.revoked(m->sender)) {
        ++revoked_drops_;  // never answered; counted (meshwire_control_dropped_total)
        return ctx_.next_deadline();
    }
    const bool in_band = session_id != 0;
    // Only a PING may name no recipient, and its sender is not proven (control_channel.hpp):
    // it gets its PONG (no larger than the PING) and nothing else.
    const bool anonymous = m->recipient.is_zero();
    // Serving as a relay: hearing the node (pair-tag authenticated, at this address) keeps its
    // idle sessions bound here (issue 18).
    if (!in_band && !anonymous) role_.on_heard(m->sender, from);
    std::visit(
        [&](const auto& b) {
            using T = std::decay_t<decltype(b)>;
            if constexpr (std::is_same_v<T, ping_msg>) {
                if (anonymous && !ctx_.channel().learn_key(m->sender_key)) return;
                // The PONG is never larger than the PING (wire_codec ping_padding) and carries
                // the cookie that proves this source in the sender's next request.
                ctx_.send(pong_msg{b.request_id, ctx_.cookies().make(m->sender, from), from},
                          m->sender, from, session_id, now);
                if (!anonymous) paths_.on_ping(m->sender, session_id, from, now);
            } else if constexpr (std::is_same_v<T, pong_msg>) {
                on_pong(*m, b, from, session_id, now);
            } else if constexpr (std::is_same_v<T, hello_msg>) {
                if (!in_band && source_proven(*m, b.request_id, b.cookie, from, now)) {
                    members_.on_hello(*m, b, from, now);
                }
            } else if constexpr (std::is_same_v<T, records_msg>) {
                // Records come from relays and rendezvous (answers to our HELLOs, their pushes)
                // and from anti-entropy partners; from anyone else they are ignored.
                if (in_band) return;
                const relay_entry* r = directory_.by_id(m->sender);
                const bool by_ae =
                    ctx_.cfg.anti_entropy &&
                    (!r || (!r->candidate && r->lan_neighbour && ae_.speaks(m->sender)));
                if (r && !by_ae) {
                    directory_.on_hello_answer(m->sender, b.request_id, now);
                    members_.on_records(*m, b,
                                        r->origin == relay_origin::bootstrap
                                            ? learned_via::bootstrap
                                            : learned_via::relay,
                                        now);
                } else if (by_ae) {
                    ae_.on_records(*m, b, now);
                }
            } else if constexpr (std::is_same_v<T, ae_digest_msg>) {
                if (!in_band && ctx_.cfg.anti_entropy) ae_.on_digest(*m, b, from, now);
            } else if constexpr (std::is_same_v<T, ae_summary_msg>) {
                if (!in_band && ctx_.cfg.anti_entropy) ae_.on_summary(*m, b, from, now);
            } else if constexpr (std::is_same_v<T, ae_want_msg>) {
                if (!in_band && ctx_.cfg.anti_entropy) ae_.on_want(*m, b, from, now);
            } else if constexpr (std::is_same_v<T, relay_session_request_msg>) {
                // Session state only for admitted nodes: the sender's record must be here (it
                // HELLOs us first). Dropped unanswered (a REJECT would exclude us for 30 s); an
                // honest node asks again within session_retry_ms.
                if (in_band) return;
                if (!members_.store().find(m->sender)) {
                    ++ctx_.admission.session_unknown_sender;
                    return;
                }
                if (source_proven(*m, b.request_id, b.cookie, from, now)) {
                    role_.on_session_request(*m, b, from, via, now);
                }
            } else if constexpr (std::is_same_v<T, relay_session_accept_msg>) {
                if (!in_band && b.from == ctx_.id()) {
                    paths_.on_session_answer(m->sender, b.request_id, from, b.session_id, b.to,
                                             true, 0, now);
                }
            } else if constexpr (std::is_same_v<T, relay_session_kept_msg>) {
                // Before its ACCEPT: the relay keeps the session while it hears us.
                if (!in_band) directory_.on_session_kept(m->sender, b.keep_ms, now);
            } else if constexpr (std::is_same_v<T, hello_wanted_msg>) {
                if (!in_band) directory_.on_hello_wanted(m->sender, now);
            } else if constexpr (std::is_same_v<T, relay_session_reject_msg>) {
                if (!in_band && b.from == ctx_.id()) {
                    paths_.on_session_answer(m->sender, b.request_id, from, b.session_id, b.to,
                                             false, static_cast<uint8_t>(b.reason), now);
                }
            } else if constexpr (std::is_same_v<T, dialback_request_msg>) {
                if (!in_band) role_.on_dialback_request(*m, b, now);
            } else if constexpr (std::is_same_v<T, dialback_probe_msg>) {
                if (!in_band) role_.on_dialback_probe(*m, b, now);
            } else if constexpr (std::is_same_v<T, cookie_reply_msg>) {
                if (!in_band) on_cookie_reply(*m, b, from, now);
            }
        },
        m->body);
    ctx_.due(now);
    return ctx_.next_deadline();
}

bool node_core::source_proven(const control_message& m, uint64_t request_id,
                              const cookie_bytes& cookie, const wg_endpoint& from, uint64_t now) {
    if (ctx_.cookies().valid(cookie, m.sender, from)) return true;
    // Unproven source (a first request, an old cookie, or a spoofed address): one small answer,
    // no state (cookie_jar.hpp).
    ctx_.channel().count_cookie_sent();
    ctx_.send(cookie_reply_msg{request_id, ctx_.cookies().make(m.sender, from)}, m.sender, from, 0,
              now);
    return false;
}

void node_core::on_cookie_reply(const control_message& m, const cookie_reply_msg& b,
                                const wg_endpoint& from, uint64_t now) {
    auto r = ctx_.cookies().on_reply(b.request_id, m.sender, from, b.cookie, now);
    if (!r) return;  // not for a request of ours to that node at that address
    ctx_.channel().count_cookie_required();
    // Again at once, with the new cookie, unless the request carried that one already.
    if (!r->retry) return;
    const auto* req = &r->answered;
    if (req->kind == cookie_jar::request_kind::hello) {
        directory_.hello_now(now);
    } else if (req->kind == cookie_jar::request_kind::anti_entropy) {
        ae_.on_cookie(m.sender, now);
    } else {
        paths_.retry_session_request(m.sender, b.request_id, now);
    }
    ctx_.due(now);
}

void node_core::on_pong(const control_message& m, const pong_msg& b, const wg_endpoint& from,
                        uint64_t session_id, uint64_t now) {
    // Counts only for a pending request, from the probed address (and session) and node.
    auto p = ctx_.probes().take(b.request_id, from, session_id, m.sender);
    if (!p) return;  // late, not ours, or forged
    if (session_id == 0 && b.cookie != cookie_bytes{})
        ctx_.cookies().store(m.sender, p->ep, b.cookie);
    double rtt = static_cast<double>(now - p->sent_ms);
    switch (p->kind) {
        case probe_kind::relay: {
            // Bound again at once when it restarted (its table is gone), saw us at another address
            // (a NAT rebound us: our sessions there are bound at the old one) or answered after
            // it was lost (it may have stopped hearing us and dropped a kept session).
            bool rebind = directory_.note_epoch(m.sender, m.epoch, now);
            rebind |= directory_.on_pong(*p, m.sender, rtt, b.observed, now);
            if (rebind) paths_.rebind_sessions(m.sender, now);
            break;
        }
        case probe_kind::direct:
        case probe_kind::inband:
        case probe_kind::pmtu:  // a direct path's padded PING (relayed ones answer in-band)
            paths_.on_pong(*p, m.sender, rtt, now,
                           p->kind == probe_kind::direct ? &b.observed : nullptr);
            break;
        case probe_kind::user:
            if (m.sender == p->peer) ping_results_.push_back(ping_result{p->token, rtt});
            break;
    }
}

void node_core::on_wireguard_counters(const std::vector<wg_peer_counters>& peers,
                                      uint64_t read_ms) {
    paths_.on_wireguard_counters(peers, read_ms);
    ctx_.due(read_ms);
}

void node_core::on_relayed_before(const std::vector<wg_key>& peers, uint64_t now) {
    for (const auto& k : peers) paths_.relayed_before(node_id::of(k), now);
    ctx_.due(now);
}

void node_core::on_route_mtus_before(const std::map<ip_prefix, unsigned>& routes, uint64_t now) {
    paths_.route_mtus_before(routes, now);
}

void node_core::on_traffic(const wg_key& peer, uint64_t now) {
    paths_.on_traffic(node_id::of(peer), now);
    ctx_.due(now);
}

result<uint64_t> node_core::ping(const node_id& peer, uint64_t now) {
    return paths_.ping(peer, now);
}

std::vector<peer_view> node_core::peers() const {
    auto v = paths_.views();
    // Relayed for want of a direct answer while our own NAT maps per destination: say so (no
    // peer behind a NAT can reach such a mapping; the relays' reports tell, nat_behaviour).
    const nat_view n = nat();
    auto dependent = [](const nat_family_view& f) {
        return f.mapping == nat_mapping::endpoint_dependent;
    };
    auto unusable = [&](const nat_family_view& f) {
        return dependent(f) || f.mapping == nat_mapping::unknown;
    };
    const bool symmetric_here =
        (dependent(n.ipv4) || dependent(n.ipv6)) && unusable(n.ipv4) && unusable(n.ipv6);
    for (auto& pv : v) {
        if (symmetric_here && pv.reason == path_reason::no_direct_answer) {
            pv.reason = path_reason::symmetric_nat_here;
        }
        // How its record reached us, and who offered its endpoints (mDNS, Kubernetes).
        pv.sources =
            static_cast<learned_via_set>(members_.learned_of(pv.id) | paths_.offered_via(pv.id));
        if (const auto* rec = members_.store().find(pv.id)) pv.record_seq = rec->seq;
        // No clock here either: what is left at the last instant the core saw.
        if (auto exp = members_.store().expires_at(pv.id)) {
            pv.record_expires_in_ms = *exp > last_tick_ms_ ? *exp - last_tick_ms_ : 0;
        }
    }
    return v;
}

std::vector<relay_view> node_core::relays() const {
    // No clock here: "up" is judged at the last instant the core saw (the newest PONG or tick).
    auto v = directory_.views(last_tick_ms_);
    for (auto& rv : v) {
        if (rv.id) rv.load = paths_.relayed_through(*rv.id);
    }
    return v;
}

nat_view node_core::nat() const {
    const auto obs = directory_.nat_observations(last_tick_ms_);
    return classify_nat(obs, ctx_.cfg.endpoints, ctx_.cfg.control_port);
}

}  // namespace mw::meshd
