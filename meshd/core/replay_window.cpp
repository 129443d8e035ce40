#include "meshd/core/replay_window.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "meshd/core/sodium_init.hpp"

namespace mw::meshd {

const char* to_string(replay_verdict v) noexcept {
    switch (v) {
        case replay_verdict::accept:
            return "accept";
        case replay_verdict::stale:
            return "stale";
        case replay_verdict::future:
            return "future";
        case replay_verdict::below_floor:
            return "below_floor";
        case replay_verdict::replay:
            return "replay";
        case replay_verdict::table_full:
            return "table_full";
    }
    return "unknown";
}

replay_window::replay_window(replay_config cfg) : cfg_(cfg) {
    if (cfg_.per_sender == 0) cfg_.per_sender = 1;
    if (cfg_.max_senders == 0) cfg_.max_senders = 1;
}

size_t replay_window::memory_bound(const replay_config& cfg) noexcept {
    // entries + sender_state + hash node (id, pointers) with some allocator slack.
    return cfg.max_senders * (cfg.per_sender * sizeof(entry) + sizeof(sender_state) + 64);
}

replay_verdict replay_window::check(const node_id& sender, uint64_t ts,
                                    std::span<const uint8_t> nonce, uint64_t now, bool admitted) {
    // Written as differences so that hostile timestamps near 2^64 cannot overflow.
    if (ts < now && now - ts > cfg_.window_ms) return replay_verdict::stale;
    if (ts > now && ts - now > cfg_.window_ms) return replay_verdict::future;

    auto it = senders_.find(sender);
    if (it == senders_.end()) {
        auto full = [&] {
            return senders_.size() >= cfg_.max_senders ||
                   (!admitted && unadmitted_ >= cfg_.max_unadmitted);
        };
        if (full()) {
            expire(now);
            if (full()) return replay_verdict::table_full;
        }
        it = senders_.emplace(sender, sender_state{}).first;
        it->second.entries.reserve(cfg_.per_sender);
        it->second.admitted = admitted;
        if (!admitted) ++unadmitted_;
    } else if (admitted && !it->second.admitted) {
        it->second.admitted = true;
        --unadmitted_;
    }
    sender_state& s = it->second;
    if (s.floor_set && ts <= s.floor) return replay_verdict::below_floor;

    // A hash of the nonce, not the nonce itself: 8 bytes per entry, and a caller using
    // structured (counter) nonces still gets well-spread values.
    ensure_sodium();
    uint8_t h[crypto_generichash_BYTES_MIN];
    crypto_generichash(h, sizeof h, nonce.data(), nonce.size(), nullptr, 0);
    uint64_t nh;
    std::memcpy(&nh, h, sizeof nh);

    for (const auto& e : s.entries) {
        if (e.timestamp == ts && e.nonce_hash == nh) return replay_verdict::replay;
    }
    // Entries that fell out of the window can go: their replays are refused as stale.
    std::erase_if(s.entries, [&](const entry& e) { return e.timestamp + cfg_.window_ms < now; });
    if (s.entries.size() >= cfg_.per_sender) {
        auto oldest = std::min_element(
            s.entries.begin(), s.entries.end(),
            [](const entry& a, const entry& b) { return a.timestamp < b.timestamp; });
        if (oldest->timestamp >= ts) {
            // The new message is older than everything remembered: treat it as below the floor
            // we would have to raise to make room.
            return replay_verdict::below_floor;
        }
        s.floor = s.floor_set ? std::max(s.floor, oldest->timestamp) : oldest->timestamp;
        s.floor_set = true;
        *oldest = s.entries.back();
        s.entries.pop_back();
        // Drop every other entry at or below the new floor: they can no longer matter.
        std::erase_if(s.entries, [&](const entry& e) { return e.timestamp <= s.floor; });
    }
    s.entries.push_back({ts, nh});
    s.newest = std::max(s.newest, ts);
    return replay_verdict::accept;
}

void replay_window::expire(uint64_t now) {
    std::erase_if(senders_, [&](const auto& kv) {
        if (kv.second.newest + cfg_.window_ms >= now) return false;
        if (!kv.second.admitted) --unadmitted_;
        return true;
    });
}

}  // namespace mw::meshd
