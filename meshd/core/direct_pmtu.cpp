#include "meshd/core/direct_pmtu.hpp"

#include <algorithm>

namespace mw::meshd {

void direct_pmtu::probe_candidate(core_context& ctx, const node_id& id, const std::string& peer,
                                  const wg_endpoint& to, const pmtu_path_signal& sig,
                                  uint64_t now) {
    poll(ctx, id, peer, to, sig, now);
}

void direct_pmtu::probe_learned(core_context& ctx, const node_id& id, const std::string& peer,
                                uint64_t now) {
    const auto& cfg = ctx.cfg;
    if (cfg.pmtu_max < path_mtu_config{}.base || inbound_from_.port == 0) return;
    if (wg_seen_.port && !(inbound_from_.address == wg_seen_.address)) {
        // WireGuard roamed to an address none of the peer's PINGs came from (yet): nothing to
        // measure its route on; nothing applied (the interface MTU, as before learned paths
        // were measured).
        learned_.reset();
        prober_.clear();
        return;
    }
    if (!learned_) learned_ = std::make_unique<learned_probe>();
    auto& l = *learned_;
    // The peer's PINGs may come from two sockets (its control socket's and, to a relay, its
    // relay uplink's mapping): both on the same route. The mapping probed is kept while it
    // answers; another is taken when it stopped (its liveness starts over). Never one of
    // another address than WireGuard's (it roamed: another route).
    if (l.ep.port == 0 || (wg_seen_.port && !(l.ep.address == wg_seen_.address)) ||
        (!(l.ep == inbound_from_) &&
         now >= std::max(l.last_pong_ms, l.since_ms) + cfg.path_timeout_ms)) {
        l = learned_probe{};
        l.ep = inbound_from_;
        l.since_ms = now;
    }
    // The path's liveness: a small PING every ping_interval_ms while active (the peer's own
    // PINGs prove only its direction).
    if (now >= l.next_ping_ms) {
        if (ctx.send_ping(l.ep, 0, probe{probe_kind::direct, id, learned_probe_index}, now)) {
            l.loss.sent(now);
        }
        l.next_ping_ms = now + cfg.ping_interval_ms;
    }
    ctx.due(l.next_ping_ms);
    l.loss.judge(now, std::max<uint64_t>(1000, static_cast<uint64_t>(2 * l.rtt_ms)));
    pmtu_path_signal sig;
    sig.ready = l.last_pong_ms != 0;
    sig.rtt_ms = sig.ready ? l.rtt_ms : 0;
    sig.loss = l.loss.loss();
    sig.alive_sent_ms = l.answered_sent_ms;
    poll(ctx, id, peer, l.ep, sig, now);
}

void direct_pmtu::on_peer_ping(const wg_endpoint& src) {
    // A learned path's MTU is measured on a mapping of WireGuard's address (another family's
    // route and headers differ).
    if (wg_seen_.port == 0 || src.address == wg_seen_.address) inbound_from_ = src;
}

bool direct_pmtu::on_liveness_pong(const probe& pr, double rtt, uint64_t now) {
    if (!learned_ || !(pr.ep == learned_->ep)) return false;  // another mapping's, or late
    auto& l = *learned_;
    l.last_pong_ms = now;
    l.answered_sent_ms = std::max(l.answered_sent_ms, pr.sent_ms);
    l.loss.answered(pr.sent_ms);
    l.rtt_ms = l.rtt_ms == 0 ? rtt : 0.75 * l.rtt_ms + 0.25 * rtt;
    return true;
}

bool direct_pmtu::on_padded_pong(core_context& ctx, const probe& pr, uint64_t now) {
    if (!(pr.ep == prober_.tracked())) return false;  // answered from another route's address
    prober_.ack(ctx, static_cast<unsigned>(pr.token), now);
    return true;
}

void direct_pmtu::after_decision(bool learned, bool active, bool direct) {
    if (!learned || !active) learned_.reset();
    if (!learned) wg_seen_ = wg_endpoint{};
    if (!direct) prober_.clear();
}

void direct_pmtu::poll(core_context& ctx, const node_id& id, const std::string& peer,
                       const wg_endpoint& to, const pmtu_path_signal& sig, uint64_t now) {
    const wg_endpoint ep = normalize_endpoint(to);
    prober_.track(ep, 0, now);  // another address: another route
    auto r = prober_.poll(ctx, sig, now);
    if (r.send) {
        probe pr{probe_kind::pmtu, id};
        pr.token = r.send->size;
        // The datagram as large as WireGuard's data message for that inner size (16-byte
        // header, padded inner packet, 16-byte tag) on the same route.
        ctx.send_padded_ping(to, pr, r.send->wire_size + 32, now);
    }
    prober_.log(ctx, r, {{"peer", peer}, {"endpoint", ep.str()}, {"path", "direct"}});
}

}  // namespace mw::meshd
