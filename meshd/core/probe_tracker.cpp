#include "meshd/core/probe_tracker.hpp"

#include <algorithm>
#include <iterator>

namespace mw::meshd {

bool probe_tracker::add(uint64_t request_id, probe p, uint64_t now) {
    p.sent_ms = now;
    if (!pending_.emplace(request_id, p).second) return false;
    order_.emplace_back(now, request_id);
    return true;
}

std::optional<probe> probe_tracker::take(uint64_t request_id, const wg_endpoint& from,
                                         uint64_t session_id, const node_id& sender) {
    auto it = pending_.find(request_id);
    if (it == pending_.end()) {
        ++unknown_;
        return std::nullopt;
    }
    const probe& q = it->second;
    if (from != q.ep || session_id != q.session_id || (!q.peer.is_zero() && sender != q.peer)) {
        ++misdirected_;
        return std::nullopt;
    }
    probe p = q;
    pending_.erase(it);
    return p;
}

uint64_t probe_tracker::expire(uint64_t now, uint64_t timeout_ms) {
    while (!order_.empty()) {
        const auto [sent_ms, request_id] = order_.front();
        auto it = pending_.find(request_id);
        if (it == pending_.end() || it->second.sent_ms != sent_ms) {
            order_.pop_front();  // answered or forgotten
            continue;
        }
        if (now < sent_ms + timeout_ms) return sent_ms + timeout_ms;
        switch (it->second.kind) {
            case probe_kind::relay:
                ++losses_.relay;
                break;
            case probe_kind::direct:
                ++losses_.direct;
                break;
            case probe_kind::inband:
                ++losses_.inband;
                break;
            case probe_kind::user:
                ++losses_.user;
                break;
            case probe_kind::pmtu:
                ++losses_.pmtu;
                break;
        }
        pending_.erase(it);
        order_.pop_front();
    }
    return UINT64_MAX;
}

size_t probe_tracker::forget_sent_until(uint64_t t) {
    size_t n = 0;
    for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->second.sent_ms <= t) {
            it = pending_.erase(it);
            ++n;
        } else {
            it = std::next(it);
        }
    }
    return n;
}

}  // namespace mw::meshd
