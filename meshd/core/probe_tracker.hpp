// The PINGs a node core has in flight (DESIGN §7 liveness): which probe each sequence number
// belongs to, when it was sent, and how many went unanswered. The relay, direct, in-band and
// meshctl probes all go through it; a later DHT's requests can too.
//
// Pure: no clock; `now` is passed in. The caller sends the PING with the sequence number add()
// returns and hands the PONG's sequence number to take().
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>

#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/core_types.hpp"
#include "meshd/core/node_id.hpp"

namespace mw::meshd {

enum class probe_kind : uint8_t { relay, direct, inband, user };

// What a PING probed, so its PONG can be credited.
struct probe {
    probe_kind kind = probe_kind::relay;
    node_id peer;      // direct/inband/user: the peer; relay: unused
    size_t index = 0;  // relay: relay index; direct: candidate index
    size_t addr = 0;   // relay: address index
    wg_endpoint ep;    // relay: the address probed (indices move when the relay list is rebuilt)
    uint64_t sent_ms = 0;
    uint64_t token = 0;  // user: meshctl's token
};

class probe_tracker {
public:
    // Records a probe sent at `now`; returns the PING's sequence number.
    uint64_t add(probe p, uint64_t now);
    // The same under a request id the caller chose (random: sealed in-band probes); false if the
    // id is in flight already.
    bool add_as(uint64_t id, probe p, uint64_t now);
    // The probe a PONG answers, forgotten here; nullopt if late (already expired) or not ours.
    std::optional<probe> take(uint64_t seq);
    // Forgets the probes older than timeout_ms, counting them as lost by kind. Returns when the
    // oldest probe still in flight times out (UINT64_MAX: none).
    uint64_t expire(uint64_t now, uint64_t timeout_ms);
    // Forgets, unanswered and uncounted, the probes sent at or before `t` (a stall of our own
    // process would be measured as their RTT). Returns how many.
    size_t forget_sent_until(uint64_t t);

    size_t in_flight() const noexcept { return pending_.size(); }
    const probe_loss_counts& losses() const noexcept { return losses_; }

private:
    std::map<uint64_t, probe> pending_;  // by sequence number
    uint64_t next_seq_ = 1;
    probe_loss_counts losses_;
};

}  // namespace mw::meshd
