// Path MTU search for one peer path (issue 15, in the spirit of RFC 8899 DPLPMTUD): the largest
// inner packet that crosses the path in use, found with padded probes that the other end must
// answer, never from ICMP (which NATs and firewalls drop). Pure: the caller sends the probes
// (padded to the size asked for, authenticated like any control datagram), reports the answers
// and the time, and applies mtu() (e.g. as the route MTU of the peer's pod CIDRs).
//
// Sizes are inner sizes (what a pod may send: the tunnel MTU), between `base` (always assumed to
// work: IPv6's 1280) and `max` (the WireGuard interface MTU). The search tries `max` first (most
// paths carry it), then halves the interval between the largest size answered and the smallest
// that failed (`max_probes` probes unanswered within `probe_timeout_ms` each) until they are
// within `granularity`. While nothing has failed, mtu() is `max` (optimistic: a path change must
// not cut throughput before anything is known); once a size failed, it is the largest answered.
// When complete, the current MTU is probed again every `confirm_interval_ms`: if that fails
// (a black hole: the path shrank), mtu() falls to `base` and the search starts over; every
// `raise_interval_ms` a search upward checks whether the path grew. A path change (another relay,
// direct <-> relay, a new endpoint) calls reset().
#pragma once

#include <cstdint>
#include <optional>

namespace mw::meshd {

struct path_mtu_config {
    unsigned base = 1280;
    unsigned max = 1408;
    unsigned granularity = 8;
    unsigned max_probes = 3;  // RFC 8899 MAX_PROBES
    uint64_t probe_timeout_ms = 1000;
    uint64_t confirm_interval_ms = 30000;
    uint64_t raise_interval_ms = 600000;  // RFC 8899 PMTU_RAISE_TIMER
};

struct path_mtu_counters {
    uint64_t probes_sent = 0;
    uint64_t probes_acked = 0;
    uint64_t sizes_failed = 0;  // sizes given up after max_probes unanswered probes
    uint64_t black_holes = 0;   // the confirmed MTU stopped working
};

class path_mtu {
public:
    enum class phase { searching, complete };

    explicit path_mtu(path_mtu_config config = {});

    // The path changed: forget what was learned and search again, starting now.
    void reset(uint64_t now_ms);
    // The path changed while `size` is in use (applied from the previous path): confirm it on
    // this path first, as a complete search would (lost: a black hole, down to base), then search
    // upward from it.
    void reset_confirming(uint64_t now_ms, unsigned size);
    // The size of the probe to send now, if one is due (a retry after a timeout is a new call).
    std::optional<unsigned> next_probe(uint64_t now_ms);
    // The other end answered a probe of `size`. Answers to sizes not in flight are ignored.
    void on_ack(unsigned size, uint64_t now_ms);

    unsigned mtu() const noexcept { return mtu_; }
    phase state() const noexcept { return phase_; }
    // When next_probe() may next return a size.
    uint64_t next_deadline() const noexcept;
    const path_mtu_counters& counters() const noexcept { return counters_; }
    const path_mtu_config& config() const noexcept { return config_; }
    // The path's round trip is known (or changed): a probe counts as lost after `ms` from now on.
    void set_probe_timeout(uint64_t ms) noexcept { config_.probe_timeout_ms = ms; }
    // The path's loss is known: a size counts as failed after `n` unanswered probes.
    void set_max_probes(unsigned n) noexcept { config_.max_probes = n ? n : 1; }
    // A probe is in flight and its answer is overdue (next_probe() would count it lost): when
    // that probe was sent. nullopt otherwise.
    std::optional<uint64_t> overdue(uint64_t now_ms) const noexcept {
        if (!inflight_ || now_ms < sent_ms_ + config_.probe_timeout_ms) return std::nullopt;
        return sent_ms_;
    }

private:
    unsigned candidate() const noexcept;
    bool search_done() const noexcept;
    void finish(uint64_t now_ms);
    void lost(uint64_t now_ms);

    path_mtu_config config_;
    phase phase_ = phase::searching;
    unsigned lo_;                       // largest size answered (base is assumed)
    unsigned hi_;                       // smallest size that failed; max + 1 while none did
    unsigned mtu_;                      // what to apply now
    unsigned inflight_ = 0;             // probe size in flight, 0 when none
    unsigned tries_ = 0;                // probes of inflight_ sent
    uint64_t sent_ms_ = 0;              // the last of them
    uint64_t next_ms_ = 0;              // next probe (complete: the confirmation)
    uint64_t raise_ms_ = 0;             // next upward search (complete, mtu < max)
    bool raise_after_confirm_ = false;  // reset_confirming: search upward once confirmed
    path_mtu_counters counters_;
};

}  // namespace mw::meshd
