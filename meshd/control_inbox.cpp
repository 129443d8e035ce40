#include "meshd/control_inbox.hpp"

#include <algorithm>
#include <cstring>

namespace mw::meshd {

control_inbox::control_inbox(const control_inbox_config& cfg)
    : buckets_(cfg.buckets), ring_(std::max<size_t>(cfg.capacity, 1)) {}

size_t control_inbox::memory_bound(const control_inbox_config& cfg) noexcept {
    return std::max<size_t>(cfg.capacity, 1) * sizeof(slot) +
           source_buckets::memory_bound(cfg.buckets);
}

control_inbox::push_result control_inbox::push(std::span<const uint8_t> d, const wg_endpoint& from,
                                               uint64_t session_id, uint16_t via, uint64_t now_ms) {
    // The key outside the lock: a keyed hash of the address (and, in-band, the session: in-band
    // probes of many pairs come from one relay address).
    uint64_t key;
    if (session_id == 0) {
        key = buckets_.key_of(from.address);
    } else {
        uint8_t k[24];
        std::memcpy(k, from.address.data(), 16);
        std::memcpy(k + 16, &session_id, 8);
        key = buckets_.key_of(std::span<const uint8_t>(k, sizeof k));
    }
    std::lock_guard lock(mutex_);
    if (d.size() > max_inbox_datagram) {
        ++stats_.oversize;
        return push_result::dropped;
    }
    switch (buckets_.take(key, now_ms)) {
        case source_buckets::verdict::allowed:
            break;
        case source_buckets::verdict::limited:
            ++stats_.rate_limited;
            return push_result::dropped;
        case source_buckets::verdict::shared_limited:
            ++stats_.shared_limited;
            return push_result::dropped;
    }
    if (count_ == ring_.size()) {
        ++stats_.queue_full;
        return push_result::dropped;
    }
    slot& s = ring_[(head_ + count_) % ring_.size()];
    std::memcpy(s.bytes.data(), d.data(), d.size());
    s.size = d.size();
    s.from = from;
    s.session_id = session_id;
    s.via = via;
    ++count_;
    ++stats_.queued;
    stats_.high_water = std::max(stats_.high_water, count_);
    if (wake_pending_) return push_result::queued;
    wake_pending_ = true;
    return push_result::queued_wake;
}

bool control_inbox::pop(item& out) {
    std::lock_guard lock(mutex_);
    if (count_ == 0) {
        wake_pending_ = false;
        return false;
    }
    const slot& s = ring_[head_];
    out.bytes.assign(s.bytes.begin(), s.bytes.begin() + static_cast<ptrdiff_t>(s.size));
    out.from = s.from;
    out.session_id = s.session_id;
    out.via = s.via;
    head_ = (head_ + 1) % ring_.size();
    --count_;
    return true;
}

control_inbox_stats control_inbox::stats() const {
    std::lock_guard lock(mutex_);
    control_inbox_stats s = stats_;
    s.depth = count_;
    return s;
}

}  // namespace mw::meshd
