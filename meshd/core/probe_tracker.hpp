// The PINGs a node core has in flight (DESIGN §7 liveness): which probe each request id belongs
// to, where it went, which node should answer, when it was sent, and how many went unanswered.
// The relay, direct, in-band and meshctl probes all go through it.
//
// A PONG counts only if it answers a pending request id, comes from the address the PING went to
// (and through the same relay session, for in-band probes) and, when we knew which node should
// answer, from that node. Request ids are random (the caller's RNG): a PSK holder cannot guess
// them, and a PONG that fails a check leaves the probe pending for the real answer.
//
// Pure: no clock; `now` is passed in. The caller draws the request id, add()s the probe and sends
// the PING, and hands each PONG to take().
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <utility>

#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/core_types.hpp"
#include "meshd/core/node_id.hpp"

namespace mw::meshd {

// pmtu: a relayed pair's padded in-band probe (path_mtu.hpp); its size is in `token`.
enum class probe_kind : uint8_t { relay, direct, inband, user, pmtu };

// What a PING probed, so its PONG can be credited.
struct probe {
    probe_kind kind = probe_kind::relay;
    node_id peer;             // the node expected to answer (relay: its ID if known; zero: anyone)
    size_t index = 0;         // relay: relay index; direct: candidate index
    size_t addr = 0;          // relay: address index
    wg_endpoint ep;           // the address probed (set by core_context::send_ping)
    uint64_t session_id = 0;  // in-band: the relay session it went through (set by send_ping)
    uint64_t sent_ms = 0;
    uint64_t token = 0;  // user: meshctl's token; pmtu: the probe's size
};

class probe_tracker {
public:
    // Records a probe sent at `now` under `request_id` (random, nonzero). False (nothing
    // recorded) if that id is already pending.
    bool add(uint64_t request_id, probe p, uint64_t now);
    // The probe a PONG answers, forgotten here; nullopt if late (already expired), not ours, or
    // from the wrong address, session or node (then the probe stays pending and the PONG is
    // counted in misdirected()).
    std::optional<probe> take(uint64_t request_id, const wg_endpoint& from, uint64_t session_id,
                              const node_id& sender);
    // Forgets the probes older than timeout_ms, counting them as lost by kind. Returns when the
    // oldest probe still in flight times out (UINT64_MAX: none).
    uint64_t expire(uint64_t now, uint64_t timeout_ms);
    // Forgets, unanswered and uncounted, the probes sent at or before `t` (a stall of our own
    // process would be measured as their RTT). Returns how many.
    size_t forget_sent_until(uint64_t t);

    size_t in_flight() const noexcept { return pending_.size(); }
    // PONGs for a pending request id from the wrong address, session or node (forged or
    // reflected), and for no pending request at all.
    uint64_t misdirected() const noexcept { return misdirected_; }
    uint64_t unknown() const noexcept { return unknown_; }
    const probe_loss_counts& losses() const noexcept { return losses_; }

private:
    std::map<uint64_t, probe> pending_;  // by request id
    // (sent_ms, request id) in the order add()ed, so oldest first (`now` does not go back):
    // expire() pops from the front instead of walking every probe in flight at each tick (1,000
    // simulated nodes: a few thousand probes in flight per core, a tick per datagram). Entries of
    // probes answered or forgotten stay until they reach the front (at most a timeout's worth of
    // adds) and are skipped there: their id is gone from pending_, or taken again by a later
    // probe (sent_ms differs).
    std::deque<std::pair<uint64_t, uint64_t>> order_;
    uint64_t misdirected_ = 0;
    uint64_t unknown_ = 0;
    probe_loss_counts losses_;
};

}  // namespace mw::meshd
