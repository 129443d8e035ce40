// The path MTU search of one pair's path in use (issue 15), for both kinds of path: a relayed
// pair (relay_election: padded in-band probe frames through the relay session) and a direct one
// (peer_paths: padded PINGs to the peer's control address, which shares the route of its
// WireGuard endpoint). It decides when to probe and with what size, what to apply, and counts
// and logs; the caller sends the probe and reports its answer.
//
// - The search is made at an active pair's first poll (until then ~50 bytes), from
//   node_core_config::pmtu_max (the interface MTU; 0: off) and pmtu_confirm_interval_ms.
// - The wire size of a probe of inner size S is what WireGuard sends for an inner packet of S
//   bytes: padded to a multiple of 16, at most the interface MTU (wireguard-go and the kernel
//   alike), so a route MTU found this way never black-holes its own padded packets.
// - Loss is not size: an unanswered padded probe counts as failed only once a small probe of the
//   pair (in-band or direct), sent after it, was answered; until then the search holds. The
//   tries per size grow with the small probes' loss (a size is given up after losing all of
//   them by chance at most 1 in 10^6 times: 3 on a clean path, 6 at 10 %, 13 at 34 %). Before
//   the path carried one small probe (a fresh relay session) nothing is probed.
// - A try is lost after three of the path's round trips (at least 250 ms; 1 s until one is
//   known): a black hole on a clean path in use costs the confirmation interval plus three
//   of those (more tries on a lossy one, each also waiting for a small probe to come back).
// - Applied only once the peer answered a padded probe: a node from before padded probes
//   answers none. A search that ends without one answer stops probing, and starts again after
//   raise_interval_ms (the peer may have been upgraded).
// - What is applied changes when a search completes, and at a black hole (the confirmed MTU of
//   the path in use stopped getting through: 1280 at once, so TCP recovers), never halfway
//   through a search: a pod keeps a "too big" for 10 minutes. A new path (another relay
//   session or address: track()) keeps the MTU applied and confirms it there first: if the new
//   path is smaller that is a black hole (1280 at once); if not, the search then looks upward.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/path_mtu.hpp"

namespace mw::meshd {

class core_context;

// What the path MTU searches of all pairs did (metrics).
struct pmtu_totals {
    uint64_t probes_sent = 0;
    uint64_t probes_acked = 0;
    uint64_t black_holes = 0;  // a confirmed MTU stopped working: it fell to 1280
    uint64_t changes = 0;      // a pair's applied path MTU changed
};

// What the caller knows of the path from its small probes.
struct pmtu_path_signal {
    double rtt_ms = 0;           // 0: not measured
    double loss = 0;             // round-trip loss of the small probes
    uint64_t alive_sent_ms = 0;  // the newest small probe answered: when it was sent (0: none)
    bool ready = true;           // the path carried a small probe since it was taken
};

class pmtu_prober {
public:
    struct probe_size {
        unsigned size;       // the inner size tried: what the answer acknowledges
        unsigned wire_size;  // WireGuard's padded inner size for it: what the probe carries
    };
    struct poll_result {
        std::optional<probe_size> send;  // a probe to send now
        bool black_hole = false;         // the confirmed MTU stopped working (log it)
        bool applied_changed = false;    // applied() changed (log it)
    };

    // The path the search measures: another one (address or relay session) starts it again.
    void track(const wg_endpoint& ep, uint64_t session_id, uint64_t now);
    // An active pair's decision: a probe when one is due.
    poll_result poll(core_context& ctx, const pmtu_path_signal& path, uint64_t now);
    // Logs what poll() reported, with the caller's fields (peer, relay or endpoint, path): a
    // black hole as a warning, a change of the applied MTU as info.
    void log(core_context& ctx, const poll_result& r,
             std::vector<std::pair<std::string, std::string>> fields) const;
    // The peer answered our probe of `size` on the tracked path.
    void ack(core_context& ctx, unsigned size, uint64_t now);
    // The MTU a previous meshd applied to the peer's routes (read back at start): applied from
    // now on, as if a search had found it, and confirmed at the pair's first active poll (a
    // smaller path is then a black hole: 1280 at once) before the search looks upward. Only
    // before anything was measured, and only below the interface MTU.
    void seed(unsigned mtu, unsigned max);
    // No such path any more: forget it all (nothing applied).
    void clear();

    // The path it measures (track()): answers from anywhere else are not its.
    const wg_endpoint& tracked() const noexcept { return ep_; }
    // The route MTU to apply (0: none, the interface MTU holds).
    unsigned applied() const noexcept { return applied_; }
    // For meshctl: the MTU as measured (nullopt until the peer answered one probe).
    std::optional<unsigned> measured() const;
    bool complete() const;

    // Losing all of a size's tries by chance at most this often: per confirmation, and an
    // active pair confirms 720 times an hour (1e-6: one false black hole in ~1,400 active
    // pair-hours on a lossy path, each pinning the pods at 1280 for 10 minutes).
    static constexpr double false_loss_probability = 1e-6;
    static constexpr unsigned max_tries = 20;
    static unsigned tries_for_loss(double loss);

private:
    bool gave_up() const;
    bool update_applied(unsigned max, bool black_hole);

    std::unique_ptr<path_mtu> search_;
    wg_endpoint ep_;
    uint64_t session_id_ = 0;
    bool answered_ = false;
    uint64_t gave_up_ms_ = 0;  // when a search ended without one answer (0: it did not)
    unsigned applied_ = 0;
};

}  // namespace mw::meshd
