// Admission (issue 17): what the core refuses to allocate state for, counted, and the throttle
// that keeps a PSK holder from turning refusals into a flood of warn-level log lines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "meshd/core/node_id.hpp"

namespace mw::meshd {

// Refusals by reason; the metrics export them with these fixed labels.
struct admission_counters {
    uint64_t new_identity_rate_limited = 0;   // relay: a source over its new-identity budget
    uint64_t store_full = 0;                  // a new identity, the store full of established nodes
    uint64_t records_evicted = 0;             // young or silent records evicted for a new one
    uint64_t session_unknown_sender = 0;      // relay: session request from a node without a record
    uint64_t dialback_requester_limited = 0;  // helper: one requester over its probe budget
    uint64_t dialback_limited = 0;            // helper: all requesters over the global budget
    uint64_t log_lines_suppressed = 0;  // repeated refusal lines not logged (see log_throttle)
};

// Logs a refusal once per (sender, reason) per interval, and at most max_lines lines per interval
// in all (many identities must not make many lines either); the rest are counted. Bounded: at
// most max_keys remembered keys; when full, keys older than the interval are forgotten, and a new
// key beyond that is suppressed rather than remembered.
class log_throttle {
public:
    explicit log_throttle(uint64_t interval_ms = 60'000, size_t max_lines = 20,
                          size_t max_keys = 256)
        : interval_ms_(interval_ms), max_lines_(max_lines), max_keys_(max_keys) {}

    // True: log this one (and the caller may say how many were suppressed, `suppressed`).
    bool should_log(const node_id& sender, const std::string& reason, uint64_t now_ms,
                    uint64_t* suppressed = nullptr) {
        if (now_ms >= window_start_ + interval_ms_) {
            window_start_ = now_ms;
            lines_ = 0;
        }
        auto key = std::make_pair(sender, reason);
        auto it = seen_.find(key);
        if (it != seen_.end() && now_ms < it->second.logged_ms + interval_ms_) {
            ++it->second.suppressed;
            ++total_suppressed_;
            return false;
        }
        if (lines_ >= max_lines_) {
            ++total_suppressed_;
            if (it != seen_.end()) ++it->second.suppressed;
            return false;
        }
        if (it == seen_.end()) {
            if (seen_.size() >= max_keys_) {
                std::erase_if(seen_, [&](const auto& kv) {
                    return now_ms >= kv.second.logged_ms + interval_ms_;
                });
            }
            if (seen_.size() >= max_keys_) {
                ++total_suppressed_;
                return false;
            }
            it = seen_.emplace(key, entry{}).first;
        }
        if (suppressed) *suppressed = it->second.suppressed;
        it->second = entry{now_ms, 0};
        ++lines_;
        return true;
    }
    uint64_t suppressed() const noexcept { return total_suppressed_; }

private:
    struct entry {
        uint64_t logged_ms = 0;
        uint64_t suppressed = 0;  // since the last line for this key
    };
    uint64_t interval_ms_;
    size_t max_lines_, max_keys_;
    uint64_t window_start_ = 0;
    size_t lines_ = 0;
    uint64_t total_suppressed_ = 0;
    std::map<std::pair<node_id, std::string>, entry> seen_;
};

}  // namespace mw::meshd
