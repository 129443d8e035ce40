#include "meshd/core/replay_window.hpp"

#include <algorithm>

namespace mw::meshd {

const char* to_string(replay_verdict v) noexcept {
    switch (v) {
        case replay_verdict::accept:
            return "accept";
        case replay_verdict::stale_epoch:
            return "stale_epoch";
        case replay_verdict::replay:
            return "replay";
    }
    return "unknown";
}

replay_window::replay_window(replay_config cfg) : cfg_(cfg) {
    if (cfg_.max_senders == 0) cfg_.max_senders = 1;
}

size_t replay_window::memory_bound(const replay_config& cfg) noexcept {
    // list node + map node + bucket, generously.
    return cfg.max_senders * (sizeof(sender_state) + 96);
}

void replay_window::reset(sender_state& s, uint64_t epoch, uint64_t counter) {
    s.epoch = epoch;
    s.highest = counter;
    s.bitmap.fill(0);
    s.bitmap[(counter / 64) % blocks] |= uint64_t{1} << (counter % 64);
}

replay_verdict replay_window::slide(sender_state& s, uint64_t counter) {
    const uint64_t block = counter / 64;
    if (counter > s.highest) {
        // Clear the blocks the window slides over (all of them after a long jump).
        const uint64_t top = s.highest / 64;
        const uint64_t n = std::min<uint64_t>(block - top, blocks);
        for (uint64_t i = 1; i <= n; ++i) s.bitmap[(top + i) % blocks] = 0;
        s.highest = counter;
    } else if (s.highest - counter > window_bits) {
        return replay_verdict::replay;  // too old to judge: refused, never accepted twice
    }
    uint64_t& word = s.bitmap[block % blocks];
    const uint64_t bit = uint64_t{1} << (counter % 64);
    if (word & bit) return replay_verdict::replay;
    word |= bit;
    return replay_verdict::accept;
}

replay_verdict replay_window::check(const node_id& sender, uint64_t epoch, uint64_t counter) {
    auto it = senders_.find(sender);
    if (it == senders_.end()) {
        if (senders_.size() >= cfg_.max_senders) {
            senders_.erase(lru_.back().id);
            lru_.pop_back();
            ++replaced_;
        }
        lru_.push_front(sender_state{sender});
        reset(lru_.front(), epoch, counter);
        senders_.emplace(sender, lru_.begin());
        return replay_verdict::accept;
    }
    sender_state& s = *it->second;
    if (epoch < s.epoch) return replay_verdict::stale_epoch;
    replay_verdict v = replay_verdict::accept;
    if (epoch > s.epoch) {
        reset(s, epoch, counter);
    } else {
        v = slide(s, counter);
    }
    if (v == replay_verdict::accept) lru_.splice(lru_.begin(), lru_, it->second);
    return v;
}

}  // namespace mw::meshd
