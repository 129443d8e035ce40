// Replay protection for opened control messages, per sender node ID.
//
// Rules (checked after the AEAD opened, so only PSK holders reach this):
//   1. |timestamp - now| <= window_ms, else stale / from the future.
//   2. timestamp > the sender's floor, else too old to judge (see 4).
//   3. (timestamp, nonce) not seen before from this sender, else replay.
//   4. Each sender keeps at most per_sender remembered messages. When full, the entry with the
//      lowest timestamp is forgotten and the floor rises to its timestamp, so anything at or below
//      it is refused: memory is bounded and we fail closed, never open. Senders therefore stamp
//      messages with strictly increasing timestamps (next_send_timestamp); then only messages
//      reordered by more than per_sender positions are lost.
//   5. At most max_senders senders are tracked. A new sender may take the slot of a sender whose
//      newest message is older than the window (its replays are stale anyway); if none exists the
//      message is refused (table_full). No sender state is ever dropped while a replay of its
//      messages could still pass rule 1.
//   6. Admission (issue 17): the caller says whether a sender is admitted (the core: a node whose
//      record it holds). Senders not admitted may hold at most max_unadmitted of the slots, so
//      a PSK holder's free identities (a sender ID is all a message needs) cannot take the
//      slots of the cluster's known nodes. A sender becomes admitted when a later message says
//      so (its HELLO was accepted); it never loses that while it has a slot.
//
// Memory bound: max_senders * (per_sender * 16 + ~96) bytes; defaults (4096 senders x 64 entries)
// about 4.6 MB, allocated only as senders appear.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "meshd/core/node_id.hpp"

namespace mw::meshd {

struct replay_config {
    uint64_t window_ms = 30'000;
    size_t per_sender = 64;
    size_t max_senders = 4096;
    size_t max_unadmitted = 1024;  // of max_senders
};

enum class replay_verdict {
    accept,
    stale,        // older than now - window
    future,       // newer than now + window
    below_floor,  // older than what this sender's bounded memory can still judge
    replay,       // exact repeat
    table_full,   // too many live senders; refused rather than forgetting someone
};

const char* to_string(replay_verdict v) noexcept;

class replay_window {
public:
    explicit replay_window(replay_config cfg = {});

    // Checks a message and, when accepted, remembers it. `nonce` is the AEAD nonce.
    replay_verdict check(const node_id& sender, uint64_t timestamp_us,
                         std::span<const uint8_t> nonce, uint64_t now_ms, bool admitted = true);

    // Forgets senders with nothing inside the window (call periodically; check() also does it
    // when the table is full).
    void expire(uint64_t now_ms);

    size_t sender_count() const noexcept { return senders_.size(); }
    size_t unadmitted_count() const noexcept { return unadmitted_; }
    const replay_config& config() const noexcept { return cfg_; }
    static size_t memory_bound(const replay_config& cfg) noexcept;

private:
    struct entry {
        uint64_t timestamp;
        uint64_t nonce_hash;
    };
    struct sender_state {
        uint64_t floor = 0;  // timestamps <= floor are refused (when floor_set)
        bool floor_set = false;
        uint64_t newest = 0;  // highest accepted timestamp
        bool admitted = true;
        std::vector<entry> entries;  // capacity per_sender, unordered
    };

    replay_config cfg_;
    std::unordered_map<node_id, sender_state> senders_;
    size_t unadmitted_ = 0;  // senders_ entries with admitted == false
};

// The sender side of rule 4: a timestamp that is now_ms unless that would not be strictly
// greater than the previous one. `last` is the caller's per-socket state.
inline uint64_t next_send_timestamp(uint64_t& last, uint64_t now_ms) noexcept {
    last = now_ms > last ? now_ms : last + 1;
    return last;
}

}  // namespace mw::meshd
