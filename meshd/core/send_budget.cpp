#include "meshd/core/send_budget.hpp"

#include <algorithm>

namespace mw::meshd {

send_budget::send_budget(double rate_per_s, double burst, size_t max_tracked)
    : rate_per_s_(rate_per_s),
      burst_(std::max(1.0, burst)),
      max_tracked_(std::max<size_t>(1, max_tracked)) {}

bool send_budget::take(const ip_address& dst, uint64_t now_ms) {
    auto it = buckets_.find(dst);
    if (it == buckets_.end()) {
        if (buckets_.size() >= max_tracked_) {
            // The address idle longest goes. O(n), but only for a new address while full.
            auto oldest = std::min_element(
                buckets_.begin(), buckets_.end(),
                [](const auto& a, const auto& b) { return a.second.last_ms < b.second.last_ms; });
            buckets_.erase(oldest);
        }
        it = buckets_.emplace(dst, bucket{burst_, now_ms}).first;
    }
    bucket& b = it->second;
    if (now_ms > b.last_ms) {
        b.tokens = std::min(
            burst_, b.tokens + static_cast<double>(now_ms - b.last_ms) * rate_per_s_ / 1000.0);
        b.last_ms = now_ms;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
}

}  // namespace mw::meshd
