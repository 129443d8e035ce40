#include "meshd/core/path_mtu.hpp"

#include <algorithm>
#include <utility>

namespace mw::meshd {

path_mtu::path_mtu(path_mtu_config config)
    : config_(config), lo_(config.base), hi_(config.max + 1), mtu_(config.max) {
    if (config_.max < config_.base) config_.max = config_.base;
    if (config_.max_probes == 0) config_.max_probes = 1;
    if (config_.granularity == 0) config_.granularity = 1;
    hi_ = config_.max + 1;
    mtu_ = config_.max;
    if (search_done()) phase_ = phase::complete;
}

void path_mtu::reset(uint64_t now_ms) {
    raise_after_confirm_ = false;
    phase_ = phase::searching;
    lo_ = config_.base;
    hi_ = config_.max + 1;
    mtu_ = config_.max;
    inflight_ = tries_ = 0;
    next_ms_ = now_ms;
    if (search_done()) finish(now_ms);
}

void path_mtu::reset_confirming(uint64_t now_ms, unsigned size) {
    reset(now_ms);
    if (size < config_.base || size >= config_.max) return;
    phase_ = phase::complete;
    lo_ = mtu_ = size;
    hi_ = config_.max + 1;
    next_ms_ = now_ms;       // the confirmation first, whenever the caller probes next
    raise_ms_ = UINT64_MAX;  // then, once it is answered, the upward search (on_ack)
    raise_after_confirm_ = true;
}

bool path_mtu::search_done() const noexcept {
    return lo_ >= config_.max || hi_ - lo_ <= config_.granularity;
}

unsigned path_mtu::candidate() const noexcept {
    if (hi_ > config_.max) return config_.max;  // the top first: most paths carry it
    return lo_ + (hi_ - lo_) / 2;
}

void path_mtu::finish(uint64_t now_ms) {
    phase_ = phase::complete;
    mtu_ = lo_ >= config_.max ? config_.max : lo_;
    inflight_ = tries_ = 0;
    next_ms_ = now_ms + config_.confirm_interval_ms;
    raise_ms_ = now_ms + config_.raise_interval_ms;
}

uint64_t path_mtu::next_deadline() const noexcept {
    uint64_t t = inflight_ ? sent_ms_ + config_.probe_timeout_ms : next_ms_;
    if (phase_ == phase::complete && !inflight_ && mtu_ < config_.max) t = std::min(t, raise_ms_);
    return t;
}

void path_mtu::lost(uint64_t now_ms) {
    const unsigned size = inflight_;
    inflight_ = tries_ = 0;
    ++counters_.sizes_failed;
    if (phase_ == phase::complete) {
        // The confirmed MTU no longer gets through: a black hole. Down to base, search again.
        ++counters_.black_holes;
        raise_after_confirm_ = false;
        phase_ = phase::searching;
        lo_ = config_.base;
        hi_ = size;
        mtu_ = config_.base;
    } else {
        hi_ = std::min(hi_, size);
        lo_ = std::min(lo_, hi_ - 1);
        mtu_ = lo_;
    }
    next_ms_ = now_ms;
    if (search_done()) finish(now_ms);
}

std::optional<unsigned> path_mtu::next_probe(uint64_t now_ms) {
    if (inflight_) {
        if (now_ms < sent_ms_ + config_.probe_timeout_ms) return std::nullopt;
        if (tries_ >= config_.max_probes) {
            lost(now_ms);
        } else {
            ++tries_;
            ++counters_.probes_sent;
            sent_ms_ = now_ms;
            return inflight_;
        }
    }
    if (phase_ == phase::complete) {
        if (mtu_ < config_.max && now_ms >= raise_ms_) {
            // Search upward from what works: has the path grown?
            phase_ = phase::searching;
            lo_ = mtu_;
            hi_ = config_.max + 1;
            next_ms_ = now_ms;
        } else if (now_ms >= next_ms_) {
            inflight_ = mtu_;  // confirm the current MTU
        } else {
            return std::nullopt;
        }
    }
    if (phase_ == phase::searching) {
        if (now_ms < next_ms_) return std::nullopt;
        inflight_ = candidate();
    }
    tries_ = 1;
    ++counters_.probes_sent;
    sent_ms_ = now_ms;
    return inflight_;
}

void path_mtu::on_ack(unsigned size, uint64_t now_ms) {
    if (!inflight_ || size != inflight_) return;
    ++counters_.probes_acked;
    inflight_ = tries_ = 0;
    if (phase_ == phase::complete) {  // confirmed
        next_ms_ = now_ms + config_.confirm_interval_ms;
        if (std::exchange(raise_after_confirm_, false)) raise_ms_ = now_ms;
        return;
    }
    lo_ = std::max(lo_, size);
    if (hi_ <= config_.max) mtu_ = lo_;  // something failed: the largest answered
    next_ms_ = now_ms;
    if (search_done()) finish(now_ms);
}

}  // namespace mw::meshd
