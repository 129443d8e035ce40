// The path MTU of one peer's direct path (issue 15): pmtu_prober on the route WireGuard uses.
//
// - A candidate in use (meshd set WireGuard's endpoint to it): padded PINGs to that control
//   address, which shares the route of the endpoint; its liveness is the candidate's own probes.
// - A learned path (the peer is behind a NAT and reached us first; WireGuard roams to the source
//   of its packets): the peer's PINGs from WireGuard's address (the counters' endpoint) come
//   from its NAT mapping there, on the same route. While the pair is active that mapping gets a
//   small PING every ping_interval_ms (liveness: a padded probe's loss counts only once a small
//   one sent after it came back) and the padded ones. The mapping is kept while it answers (a
//   peer's PINGs come from two sockets: control and relay uplink) and while it has WireGuard's
//   address; with no PING of WireGuard's address nothing is measured or applied.
// Not handled: WireGuard roaming off a candidate (docs/architecture.md, "MTU").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "meshd/core/core_context.hpp"
#include "meshd/core/pmtu_prober.hpp"
#include "meshd/core/probe_loss.hpp"
#include "meshd/core/probe_tracker.hpp"

namespace mw::meshd {

class direct_pmtu {
public:
    // probe::index of a small PING to a learned path's mapping (not a candidate's index).
    static constexpr size_t learned_probe_index = SIZE_MAX;

    // A candidate in use, active: the search on the route to `to` with the candidate's liveness.
    void probe_candidate(core_context& ctx, const node_id& id, const std::string& peer,
                         const wg_endpoint& to, const pmtu_path_signal& sig, uint64_t now);
    // A learned path, active: liveness and padded PINGs to the peer's mapping.
    void probe_learned(core_context& ctx, const node_id& id, const std::string& peer, uint64_t now);
    // The peer's direct PING came from `src` (normalized).
    void on_peer_ping(const wg_endpoint& src);
    // WireGuard's endpoint on a learned path, from its counters.
    void on_wireguard_endpoint(const wg_endpoint& ep) { wg_seen_ = normalize_endpoint(ep); }
    // A learned path's liveness PONG (pr.index == learned_probe_index): true if credited.
    bool on_liveness_pong(const probe& pr, double rtt, uint64_t now);
    // A padded PING's PONG: credited if it answers the route searched.
    bool on_padded_pong(core_context& ctx, const probe& pr, uint64_t now);
    // After a decision: the learned probing lives while a learned pair is active; WireGuard's
    // endpoint is followed only on a learned path; a path that is not direct has no MTU.
    void after_decision(bool learned, bool active, bool direct);

    // A route MTU a previous meshd applied (pmtu_prober::seed).
    void seed(unsigned mtu, unsigned max) { prober_.seed(mtu, max); }
    void clear() { prober_.clear(); }
    unsigned applied() const { return prober_.applied(); }
    std::optional<unsigned> measured() const { return prober_.measured(); }
    bool complete() const { return prober_.complete(); }

private:
    struct learned_probe {
        wg_endpoint ep;
        uint64_t since_ms = 0;  // probed since
        uint64_t next_ping_ms = 0;
        uint64_t last_pong_ms = 0;
        uint64_t answered_sent_ms = 0;
        double rtt_ms = 0;
        probe_loss loss;
    };
    void poll(core_context& ctx, const node_id& id, const std::string& peer, const wg_endpoint& to,
              const pmtu_path_signal& sig, uint64_t now);

    pmtu_prober prober_;
    // The source of the peer's last direct PING of wg_seen_'s address (any, while unknown).
    wg_endpoint inbound_from_;
    // WireGuard's endpoint on a learned path as its counters last showed it (port 0: unknown).
    wg_endpoint wg_seen_;
    std::unique_ptr<learned_probe> learned_;  // lazy: only while a learned pair is active
};

}  // namespace mw::meshd
