#include "meshd/core/probe_loss.hpp"

#include <algorithm>
#include <cmath>

namespace mw::meshd {

void probe_loss::add(bool lost) {
    // The first outcomes weigh more (a plain mean until `weight` takes over), so a fresh
    // estimate is not stuck near its start value of 0 for 32 probes.
    ++judged_;
    const double w = std::max(weight, 1.0 / static_cast<double>(judged_));
    loss_ += w * ((lost ? 1.0 : 0.0) - loss_);
}

void probe_loss::pop_front(bool judge_lost) {
    const slot& s = ring_[head_];
    if (!s.answered && judge_lost) add(true);
    head_ = (head_ + 1) % max_pending;
    --count_;
}

void probe_loss::sent(uint64_t sent_ms) {
    if (count_ == max_pending) pop_front(false);
    ring_[(head_ + count_) % max_pending] = slot{sent_ms, false};
    ++count_;
}

void probe_loss::answered(uint64_t sent_ms) {
    for (size_t i = 0; i < count_; ++i) {
        slot& s = ring_[(head_ + i) % max_pending];
        if (s.sent_ms == sent_ms && !s.answered) {
            s.answered = true;
            newest_answered_ms_ = std::max(newest_answered_ms_, sent_ms);
            add(false);
            break;
        }
    }
    while (count_ && ring_[head_].answered) pop_front(false);
}

void probe_loss::judge(uint64_t now, uint64_t wait_ms) {
    while (count_ && ring_[head_].sent_ms + wait_ms <= now &&
           ring_[head_].sent_ms < newest_answered_ms_) {
        pop_front(true);
    }
}

uint64_t probe_loss::interval_for(uint64_t timeout_ms, uint64_t max_interval_ms,
                                  uint64_t min_interval_ms, uint64_t granularity_ms) const {
    if (loss_ <= 0 || loss_ > max_forgiven_loss) return max_interval_ms;
    // n probes all lost: loss^n <= p  <=>  n >= log(p) / log(loss).
    const double n = std::ceil(std::log(false_timeout_probability) / std::log(loss_));
    const double interval = static_cast<double>(timeout_ms) / std::max(1.0, n);
    uint64_t iv = static_cast<uint64_t>(interval);
    if (iv >= max_interval_ms) return max_interval_ms;
    if (granularity_ms > 1) iv -= iv % granularity_ms;
    return std::clamp<uint64_t>(iv, min_interval_ms, max_interval_ms);
}

}  // namespace mw::meshd
