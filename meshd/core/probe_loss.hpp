// The loss rate of a stream of probes, and the probe interval it calls for (issue 14 §5).
//
// Fast liveness declares a relay dead after `timeout` without any answer (relay_directory:
// fast_relay_timeout_ms, 400 ms). With a probe every 100 ms that is 4 probes in a row lost, which
// on a clean link never happens by chance, but on a lossy one does: with 5 % loss per hop and
// direction a round trip through a LAN uplink and a relay uplink loses ~19 % of probes, and 4 in
// a row go every ~770 probes, so a pair with traffic failed over ~50 times an hour for nothing
// (sim_lossy_test). Waiting longer would break the failover budget (< 1 s); probing more often
// keeps it: interval_for() picks the interval at which `timeout` holds enough probes that all of
// them being lost by chance has probability below false_timeout_probability — at most
// max_interval (clean links: today's 100 ms, no extra cost) and at least min_interval.
//
// Beyond max_forgiven_loss the link is not noisy but broken: interval_for() then gives the
// longest interval, as before this adaptation, so such a relay or path fails over as quickly as
// it did (at 80 % loss, 4 probes all lost in 41 % of the windows) instead of being kept alive by
// ever faster probing (review of the first version).
//
// The estimate is an exponentially weighted mean over probe outcomes (weight 1/256: about the
// last 256 probes, 10 s at 40 ms; a shorter memory is too noisy at these rates — at 1/32 a 19 %
// loss read anywhere from 10 to 30 %, and an underestimate is a false failover). A probe counts as
// lost only once it stayed unanswered for `wait_ms` (judge()), so answers in flight on a slow link
// are not losses. Pure: times in, nothing else.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace mw::meshd {

class probe_loss {
public:
    static constexpr double weight = 1.0 / 256;
    static constexpr double false_timeout_probability = 1e-7;
    static constexpr size_t max_pending = 64;
    static constexpr double max_forgiven_loss = 0.5;

    // A probe sent at `sent_ms` (times increase). With max_pending unanswered, the oldest is
    // dropped unjudged (a long, slow path: its answer may still come).
    void sent(uint64_t sent_ms);
    // The answer to the probe sent at `sent_ms`; ignored if that probe was judged already.
    void answered(uint64_t sent_ms);
    // Probes unanswered for `wait_ms` at `now`, and older than the newest answered one, are lost.
    void judge(uint64_t now, uint64_t wait_ms);
    // Forgets the probes in flight without judging them (the target was declared dead: its
    // silence from then on is not the link's loss rate).
    void forget_pending() { count_ = 0; }
    double loss() const noexcept { return loss_; }
    size_t judged() const noexcept { return judged_; }

    // See the header comment. timeout_ms >= max_interval_ms >= min_interval_ms > 0. A shorter
    // interval than max is rounded down to a multiple of `granularity_ms` (the caller's timer
    // granularity: core_context rounds deadlines up to 20 ms, which would turn 50 ms into 60 and
    // leave fewer probes in the timeout than counted).
    uint64_t interval_for(uint64_t timeout_ms, uint64_t max_interval_ms, uint64_t min_interval_ms,
                          uint64_t granularity_ms = 1) const;

private:
    void add(bool lost);
    void pop_front(bool judge_lost);

    struct slot {
        uint64_t sent_ms = 0;
        bool answered = false;
    };
    std::array<slot, max_pending> ring_{};
    size_t head_ = 0, count_ = 0;      // the oldest pending probe, how many
    uint64_t newest_answered_ms_ = 0;  // send time of the newest probe answered
    double loss_ = 0;
    size_t judged_ = 0;
};

// A probe_loss made at the first probe sent: its ring of pending probes is ~1 KB, and most pairs
// never send one of the probes it judges (idle pairs, pairs on another kind of path, a relay's
// peers); a 1,000-node mesh has 10^6 pairs. Until then the loss is 0 and interval_for() the
// longest, as for a clean link.
class lazy_probe_loss {
public:
    void sent(uint64_t sent_ms) {
        if (!p_) p_ = std::make_unique<probe_loss>();
        p_->sent(sent_ms);
    }
    void answered(uint64_t sent_ms) {
        if (p_) p_->answered(sent_ms);
    }
    void judge(uint64_t now, uint64_t wait_ms) {
        if (p_) p_->judge(now, wait_ms);
    }
    void forget_pending() {
        if (p_) p_->forget_pending();
    }
    double loss() const noexcept { return p_ ? p_->loss() : 0; }
    size_t judged() const noexcept { return p_ ? p_->judged() : 0; }
    bool engaged() const noexcept { return p_ != nullptr; }
    uint64_t interval_for(uint64_t timeout_ms, uint64_t max_interval_ms, uint64_t min_interval_ms,
                          uint64_t granularity_ms = 1) const {
        return p_ ? p_->interval_for(timeout_ms, max_interval_ms, min_interval_ms, granularity_ms)
                  : max_interval_ms;
    }

private:
    std::unique_ptr<probe_loss> p_;
};

}  // namespace mw::meshd
