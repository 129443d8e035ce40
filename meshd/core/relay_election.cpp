#include "meshd/core/relay_election.hpp"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace mw::meshd {

namespace {

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

uint64_t relay_session_id(const node_id& a, const node_id& b, const node_id& relay) {
    uint64_t v = pair_hash("meshwire relay session v1", a, b, relay);
    return v ? v : 1;  // 0 means "not in a session" everywhere
}

uint64_t relay_rendezvous_score(const node_id& a, const node_id& b, const node_id& relay) {
    return pair_hash("meshwire relay choice v1", a, b, relay);
}

relay_ranking rank_relays(std::vector<relay_candidate> cands, const std::optional<node_id>& current,
                          const election_params& p) {
    relay_ranking out;
    if (cands.empty()) return out;
    double best = cands[0].score;
    for (const auto& c : cands) best = std::min(best, c.score);
    double spread = std::max(p.spread_abs_ms, best * p.spread_rel);
    std::sort(cands.begin(), cands.end(), [&](const relay_candidate& a, const relay_candidate& b) {
        bool ga = a.score <= best + spread, gb = b.score <= best + spread;
        if (ga != gb) return ga;
        if (ga) return a.hash < b.hash;
        return a.score < b.score;
    });
    for (const auto& c : cands) {
        if (current && c.id == *current) out.current_score = c.score;
    }
    if (cands.size() > p.warm_relays) cands.resize(p.warm_relays);
    for (size_t i = 0; i < cands.size(); ++i) {
        const auto& c = cands[i];
        if (current && c.id == *current) {
            double margin = std::max(p.switch_abs_ms, c.score * p.switch_rel);
            if (!(cands[0].score + margin < c.score)) out.use = i;
        }
    }
    out.warm = std::move(cands);
    return out;
}

void wg_progress::note_ours(uint64_t tx, uint64_t rx, uint64_t read_ms) {
    if (our_read_ms && tx < our_tx) {
        restart();  // the device was recreated: counters start again
        tx_mark = tx;
        hold_until_ms = read_ms + restart_hold_ms;
    }
    bool grew = our_read_ms && tx > our_tx && tx > tx_mark;
    our_tx = tx;
    our_rx = rx;
    if (!our_read_ms) tx_mark = tx;
    our_read_ms = read_ms;
    if (grew) {
        recent_ms[growth_readings % recent_readings] = read_ms;
        ++growth_readings;
        if (!pending_since_ms) pending_since_ms = read_ms;
    }
}

void wg_progress::note_peers(uint64_t rx, uint64_t read_ms) {
    if (peer_reported && rx < peer_rx) hold_until_ms = read_ms + restart_hold_ms;
    if (!peer_reported || rx != peer_rx) {
        // Something of ours arrived (or the peer's counters restarted): judged afresh.
        tx_mark = our_tx;
        growth_readings = 0;
        pending_since_ms = 0;
    }
    peer_reported = true;
    peer_rx = rx;
    peer_read_ms = std::max(peer_read_ms, read_ms);
}

void wg_progress::restart() {
    tx_mark = our_tx;
    growth_readings = 0;
    pending_since_ms = 0;
}

unsigned wg_progress::readings_for_loss(double round_trip_loss) {
    if (round_trip_loss <= 0 || round_trip_loss >= probe_loss::max_forgiven_loss)
        return min_readings;
    // loss^n <= p  <=>  n >= log(p) / log(loss)
    double n = std::ceil(std::log(false_stall_probability) / std::log(round_trip_loss));
    return static_cast<unsigned>(std::clamp(n, double(min_readings), double(max_readings)));
}

unsigned wg_progress::covered_readings(uint64_t lag_ms) const {
    // The ring holds the newest readings; those the peer's reading is too early for are among
    // them (readings come 2 s apart). All of the ring too new: none counted (no verdict).
    const unsigned held = std::min<unsigned>(growth_readings, recent_readings);
    unsigned too_new = 0;
    for (unsigned i = 0; i < held; ++i) too_new += recent_ms[i] + lag_ms > peer_read_ms;
    if (too_new == recent_readings) return 0;
    return growth_readings - too_new;
}

bool wg_progress::stalled(const wg_stall_rule& rule) const {
    return pending_since_ms && peer_reported && peer_read_ms >= pending_since_ms + rule.stall_ms &&
           peer_read_ms >= hold_until_ms && covered_readings(rule.lag_ms) >= rule.readings;
}

wg_stall_rule relay_election::stall_rule(const relayed_pair& p) const {
    // Our packet reaches the peer within the path's round trip (an upper bound of one way;
    // 1 s before there is one) plus jitter.
    const uint64_t rtt =
        p.inband_rtt_ms > 0 ? static_cast<uint64_t>(p.inband_rtt_ms) : uint64_t{1000};
    return {ctx_.cfg.wg_stall_ms, wg_progress::readings_for_loss(p.inband_loss.loss()), rtt + 250};
}

uint64_t relay_election::strike(relayed_pair& p, const node_id& relay) const {
    uint32_t& n = p.strikes[relay];
    n = std::min<uint32_t>(n + 1, 6);
    return ctx_.cfg.relay_exclude_ms << (n - 1);
}

probe_frame_body relay_election::wg_report(const relayed_pair& p, uint64_t now) {
    probe_frame_body b;
    if (p.wg.our_read_ms) {
        b.wg_rx_bytes = p.wg.our_rx;
        b.wg_reading_age_ms = static_cast<uint32_t>(
            std::min<uint64_t>(now - std::min(now, p.wg.our_read_ms), UINT32_MAX - 1));
    }
    return b;
}

relay_election::relay_election(core_context& ctx, relay_directory& relays)
    : ctx_(ctx), relays_(relays) {}

void relay_election::release(relayed_pair& p) {
    if (p.relay || !p.warm.empty()) {
        p.relay.reset();
        p.session_id = 0;
        p.warm.clear();
    }
    // A relayed path's MTU says nothing about the next one.
    p.pmtu.clear();
}

void relay_election::probe_path_mtu(const node_id& id, relayed_pair& p, const peer_record& rec,
                                    uint64_t now, peer_dataplane& dp) {
    // Only sealed probes can be padded (a legacy peer gets none), and only an active pair
    // probes: the path in use, while something uses it. An idle pair keeps what it learned; a
    // confirmation due meanwhile is sent when it turns active again.
    if (p.active && p.keys && !p.legacy_probes) {
        p.pmtu.track(dp.relay_endpoint, p.session_id, now);
        pmtu_path_signal sig;
        // Probed once the session carried an in-band probe sent after we took it (both ends
        // bound it; a late answer through the previous relay says nothing).
        sig.ready = p.inband_answered_sent_ms >= p.relay_since_ms && p.last_inband_pong_ms;
        sig.rtt_ms = sig.ready ? p.inband_rtt_ms : 0;
        sig.loss = p.inband_loss.loss();
        sig.alive_sent_ms = p.inband_answered_sent_ms;
        auto r = p.pmtu.poll(ctx_, sig, now);
        if (r.send) {
            probe pr{probe_kind::pmtu, id};
            pr.token = r.send->size;
            probe_frame_body body = wg_report(p, now);
            body.size = r.send->wire_size;
            ctx_.send_probe_ping(dp.relay_endpoint, p.session_id, *p.keys, pr, body, now);
        }
        p.pmtu.log(ctx_, r,
                   {{"peer", rec.name}, {"relay", ctx_.name_of(dp.relay)}, {"path", "relay"}});
    }
    dp.path_mtu = p.pmtu.applied();
}

void relay_election::on_pmtu_ack(relayed_pair& p, unsigned size, uint64_t now) {
    p.pmtu.ack(ctx_, size, now);
}

void relay_election::choose(const node_id& id, relayed_pair& p, const peer_record& rec,
                            uint64_t now, peer_dataplane& dp) {
    const auto& cfg = ctx_.cfg;
    std::vector<relay_candidate> cands;
    bool ignore_refusals = false;
    auto collect = [&](bool honour_exclusions) {
        for (size_t i = 0; i < rec.relays.size(); ++i) {
            const relay_entry* r = relays_.by_id(rec.relays[i]);
            // Both ends list it: both compute the same candidates (each samples its own found
            // relays, relay_directory.hpp).
            if (!r || r->self || !r->candidate || !relays_.listed(rec.relays[i])) continue;
            if (!(ignore_refusals
                      ? relays_.up(*r, now) && (!r->fast || relays_.usable_fast(*r, now))
                      : relays_.usable(*r, now)))
                continue;
            if (honour_exclusions) {
                auto ex = p.excluded.find(rec.relays[i]);
                if (ex != p.excluded.end() && now < ex->second) {
                    ctx_.due(ex->second);
                    continue;
                }
                // It failed other pairs of ours too: a black hole is not tried by every pair.
                if (relays_.failing(*r, now)) continue;
            }
            double mine =
                r->published_rtt != peer_record::unknown_rtt ? r->published_rtt : relays_.rtt(*r);
            double theirs = rec.relay_rtt(i) != peer_record::unknown_rtt ? rec.relay_rtt(i) : mine;
            cands.push_back(
                {*r->id, mine + theirs, relay_rendezvous_score(ctx_.id(), id, rec.relays[i])});
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
    relay_ranking rk =
        rank_relays(std::move(cands), p.relay,
                    election_params{cfg.warm_relays, cfg.switch_abs_ms, cfg.switch_rel,
                                    cfg.spread_abs_ms, cfg.spread_rel});
    const relay_candidate use = rk.warm[rk.use];
    // Candidates passed up() above, so they have a live address; checked all the same, so that a
    // relay without one can never be dereferenced (issue 14 §8): no relay path this tick then.
    const relay_entry* use_entry = relays_.by_id(use.id);
    const std::optional<wg_endpoint> use_ep =
        use_entry ? relays_.endpoint(*use_entry, now) : std::nullopt;
    if (!use_ep) return;

    // The warm set, and the relay the peer sends through (even if we excluded it or rank it
    // lower), or its frames would find no session on our side.
    std::vector<const relay_entry*> set;
    set.reserve(rk.warm.size() + 1);
    for (const auto& c : rk.warm) set.push_back(relays_.by_id(c.id));
    if (p.peer_relay && now <= p.peer_relay_ms + cfg.path_timeout_ms) {
        bool in = false;
        for (const auto& c : rk.warm) in |= c.id == *p.peer_relay;
        const relay_entry* r = relays_.by_id(*p.peer_relay);
        if (!in && r && !r->self && relays_.up(*r, now)) set.push_back(r);
    }
    // Warm sessions follow the set, keeping the state of those that stay.
    std::vector<relayed_pair::warm_session> warm;
    for (const relay_entry* r : set) {
        const std::optional<wg_endpoint> ep = r ? relays_.endpoint(*r, now) : std::nullopt;
        if (!ep || !r->id) continue;  // up() a moment ago, as above: not expected
        relayed_pair::warm_session w{*r->id, relay_session_id(ctx_.id(), id, *r->id), *ep};
        if (auto rj = p.rejected.find(w.relay); rj != p.rejected.end() && now < rj->second) {
            w.next_request_ms = rj->second;
        }
        for (const auto& o : p.warm) {
            if (o.relay == w.relay) {
                w.accepted = o.accepted;
                w.next_request_ms = o.next_request_ms;
                w.request_id = o.request_id;
                w.prev_request_id = o.prev_request_id;
                w.kept = o.kept;
                if (!(o.ep == w.ep)) {
                    w.next_request_ms = now;  // rebind from the new address
                    w.kept = false;
                }
            }
        }
        warm.push_back(w);
    }
    p.warm = std::move(warm);
    for (auto& w : p.warm) {
        // Kept while idle only: traffic resumed (today's active refresh takes over, starting
        // now, which also proves the session is still there) or the relay no longer announces.
        if (w.kept && (p.active || !relays_.keeps_sessions(w.relay))) {
            w.kept = false;
            w.next_request_ms = std::min(w.next_request_ms, now);
        }
        if (now >= w.next_request_ms) {
            w.kept = false;
            w.prev_request_id = w.request_id;
            w.request_id = ctx_.random_u64();
            relay_session_request_msg req;
            req.request_id = w.request_id;
            const wg_endpoint ep = normalize_endpoint(w.ep);
            req.cookie = ctx_.cookies().for_responder(w.relay, ep);
            ctx_.cookies().note_request(req.request_id,
                                        {cookie_jar::request_kind::session, w.relay, ep, now});
            req.session_id = w.session_id;
            req.from = ctx_.id();
            req.to = id;
            ctx_.send(req, w.relay, w.ep, 0, now);
            // An idle pair's refresh is retried like a request until the relay answers
            // (on_session_answer moves it to the next refresh): refreshes are rare at idle
            // (idle_session_refresh_ms), so one lost datagram must not let the session expire.
            w.next_request_ms =
                now + (!w.accepted || !p.active ? cfg.session_retry_ms : cfg.session_refresh_ms);
        }
        ctx_.due(w.next_request_ms);
    }

    dp.path = path_kind::relay;
    dp.relay = use.id;
    dp.relay_endpoint = *use_ep;
    dp.session_id = relay_session_id(ctx_.id(), id, dp.relay);
    for (const auto& w : p.warm) {
        if (w.relay != dp.relay && w.accepted) dp.standby.emplace_back(w.session_id, w.ep);
    }
    if (!p.relay || *p.relay != dp.relay) {
        ++selections_;
        if (p.relay) {
            const relay_entry* old = relays_.by_id(*p.relay);
            if (!old || !relays_.usable(*old, now)) ++failovers_;
            char scores[64];
            std::snprintf(scores, sizeof scores, "%.1f", use.score);
            std::string from_score = "gone";
            if (rk.current_score >= 0) {
                char b2[32];
                std::snprintf(b2, sizeof b2, "%.1f", rk.current_score);
                from_score = b2;
            }
            ctx_.log(1, "relay switched",
                     {{"peer", rec.name},
                      {"relay", ctx_.name_of(dp.relay)},
                      {"previous_relay", ctx_.name_of(*p.relay)},
                      {"path", "relay"},
                      {"rtt_sum_ms", std::string(scores) + " (was " + from_score + ")"}});
        }
        p.relay = dp.relay;
        p.session_id = dp.session_id;
        p.relay_since_ms = now;
        p.last_inband_pong_ms = 0;
        p.next_inband_ms = now;
        p.inband_loss.forget_pending();  // sent through the previous session
        p.wg.restart();
    }
    p.accepted = false;
    for (const auto& w : p.warm) {
        if (w.relay == dp.relay) p.accepted = w.accepted;
    }
    if (p.keys) dp.probe_index = p.keys->recv_index;
    // In-band probes only while the pair is active (idle: no probes of its own; the relays'
    // slow probes and the first probes after traffic resumes judge it).
    if (p.active && now >= p.next_inband_ms) {
        if (p.keys && !p.legacy_probes) {
            ctx_.send_probe_ping(dp.relay_endpoint, p.session_id, *p.keys,
                                 probe{probe_kind::inband, id}, wg_report(p, now), now);
        } else {
            ctx_.send_ping(dp.relay_endpoint, p.session_id, probe{probe_kind::inband, id}, now);
        }
        p.inband_loss.sent(now);
        p.next_inband_ms =
            now + p.inband_loss.interval_for(cfg.path_timeout_ms, cfg.ping_interval_ms,
                                             std::min(min_inband_interval_ms, cfg.ping_interval_ms),
                                             core_context::tick_quantum_ms);
    }
    if (p.active) ctx_.due(p.next_inband_ms);
    probe_path_mtu(id, p, rec, now, dp);
    // A probe unanswered for twice the path's RTT (at least a second) is lost.
    p.inband_loss.judge(now, std::max<uint64_t>(1000, static_cast<uint64_t>(2 * p.inband_rtt_ms)));
    // End to end: the relay answers us, but nothing comes back through it from the peer. Give
    // the session a fair start (both ends must bind), then exclude it for this pair.
    // It carries the pair (an in-band PONG since we took it, and WireGuard not stalled): its
    // earlier failures are forgiven.
    if (p.last_inband_pong_ms > p.relay_since_ms && p.wg.growth_readings == 0)
        p.strikes.erase(dp.relay);
    // Judged from the start of the active spell at the earliest: an idle pair sent no probes.
    uint64_t last = std::max(
        {p.last_inband_pong_ms, p.relay_since_ms + 2 * cfg.path_timeout_ms, p.active_since});
    auto rj = p.rejected.find(dp.relay);
    if (!p.active) {
        // Idle: no verdict (nothing was sent to judge it by).
    } else if (!p.accepted && rj != p.rejected.end() && now < rj->second) {
        // Waiting to ask again a relay that rejected us (all others excluded): it cannot carry
        // anything before then, which is no news; no end-to-end verdict on it meanwhile.
        ctx_.due(rj->second);
    } else if (now > last + cfg.path_timeout_ms) {
        ctx_.log(
            2, "relayed path silent end to end; trying another relay",
            {{"peer", rec.name},
             {"relay", ctx_.name_of(dp.relay)},
             {"path", "relay"},
             {"probe_loss", std::to_string(static_cast<int>(100 * p.inband_loss.loss())) + "%"}});
        p.inband_loss.forget_pending();
        p.excluded[dp.relay] = now + strike(p, dp.relay);
        relays_.note_pair_failure(dp.relay, id, now);
        p.relay.reset();
        ctx_.due(now);
    } else if (p.wg.stalled(stall_rule(p))) {
        // The probes answer, but our WireGuard does not get through: the relay drops what it
        // can tell is not a probe (or everything but small frames). Excluded like a silent one.
        ctx_.log(
            2, "relay carries probes but not WireGuard; trying another relay",
            {{"peer", rec.name},
             {"relay", ctx_.name_of(dp.relay)},
             {"path", "relay"},
             {"wg_tx_unacknowledged", std::to_string(p.wg.our_tx - p.wg.tx_mark)},
             {"readings", std::to_string(p.wg.growth_readings)},
             {"probe_loss", std::to_string(static_cast<int>(100 * p.inband_loss.loss())) + "%"}});
        ++wg_stalls_;
        p.excluded[dp.relay] = now + strike(p, dp.relay);
        relays_.note_pair_failure(dp.relay, id, now);
        p.relay.reset();
        p.wg.restart();
        ctx_.due(now);
    } else {
        ctx_.due(last + cfg.path_timeout_ms + 1);
    }
}

bool relay_election::on_session_answer(relayed_pair& p, const std::string& peer_name,
                                       const node_id& relay, uint64_t request_id,
                                       const wg_endpoint& from, uint64_t session_id, bool accepted,
                                       uint8_t reason, uint64_t now) {
    // An answer counts only for an outstanding request to that relay, from the address it went
    // to: a forged REJECT needs the request's random id, which only the relay saw.
    auto w = std::find_if(p.warm.begin(), p.warm.end(), [&](const auto& x) {
        return x.relay == relay && x.session_id == session_id && request_id != 0 &&
               (x.request_id == request_id || x.prev_request_id == request_id) &&
               normalize_endpoint(x.ep) == from;
    });
    if (w == p.warm.end()) return false;
    if (accepted) {
        if (!w->accepted) {
            ctx_.log(0, "relay session accepted",
                     {{"peer", peer_name}, {"relay", ctx_.name_of(relay)}});
        }
        w->accepted = true;
        relays_.on_session_accepted(relay);
        if (!p.active && relays_.keeps_sessions(relay)) {
            // The relay keeps it while it hears our PINGs: no idle refresh (issue 18).
            if (!w->kept) {
                ctx_.log(0, "relay session kept; no idle refresh",
                         {{"peer", peer_name}, {"relay", ctx_.name_of(relay)}});
            }
            w->kept = true;
            w->next_request_ms = now + ctx_.cfg.kept_session_refresh_ms;
            return true;
        }
        w->kept = false;
        w->next_request_ms =
            now + (p.active ? ctx_.cfg.session_refresh_ms : ctx_.cfg.idle_session_refresh_ms);
        return true;
    }
    ctx_.log(
        2, "relay session rejected; trying another relay",
        {{"peer", peer_name}, {"relay", ctx_.name_of(relay)}, {"reason", std::to_string(reason)}});
    if (reason != static_cast<uint8_t>(reject_reason::not_a_relay)) {
        p.excluded[relay] = now + ctx_.cfg.relay_exclude_ms;
        p.rejected[relay] = now + ctx_.cfg.relay_exclude_ms;
    }
    if (p.relay && *p.relay == relay) p.relay.reset();
    p.warm.erase(w);
    if (reason == static_cast<uint8_t>(reject_reason::not_a_relay))
        relays_.on_not_serving(relay, now);
    return true;
}

}  // namespace mw::meshd
