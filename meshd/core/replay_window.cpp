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
    cfg_.max_unadmitted = std::min(cfg_.max_unadmitted, cfg_.max_senders);
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

void replay_window::evict_oldest(bool admitted) {
    auto& list = lru_[admitted ? 1 : 0];
    senders_.erase(list.back().id);
    list.pop_back();
    ++replaced_;
}

replay_verdict replay_window::check(const node_id& sender, uint64_t epoch, uint64_t counter,
                                    bool admitted) {
    auto it = senders_.find(sender);
    if (it == senders_.end()) {
        if (!admitted && lru_[0].size() >= cfg_.max_unadmitted && !lru_[0].empty()) {
            evict_oldest(false);
        } else if (senders_.size() >= cfg_.max_senders) {
            evict_oldest(!lru_[0].empty() ? false : true);
        }
        auto& list = lru_[admitted ? 1 : 0];
        list.push_front(sender_state{.id = sender, .admitted = admitted});
        reset(list.front(), epoch, counter);
        senders_.emplace(sender, list.begin());
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
    if (v != replay_verdict::accept) return v;
    auto& from = lru_[s.admitted ? 1 : 0];
    if (admitted) s.admitted = true;  // its HELLO was accepted: now counts as admitted
    auto& to = lru_[s.admitted ? 1 : 0];
    to.splice(to.begin(), from, it->second);  // list iterators stay valid across splice
    return v;
}

}  // namespace mw::meshd
