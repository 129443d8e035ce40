// Replay protection for authenticated control messages, per sender, without wall clocks.
//
// Every sender stamps its messages with (epoch, counter): the epoch is its boot epoch (persisted,
// strictly increasing across restarts: boot_epoch.hpp), the counter starts at 0 in each epoch and
// grows by one per message it sends, to anyone. Per sender the receiver keeps the newest epoch,
// the highest counter seen in it and a bitmap of the window_bits counters below that
// (WireGuard's sliding window, RFC 6479 style, in 64-bit blocks):
//   - newer epoch: the sender restarted; its state is reset and the message accepted;
//   - older epoch: refused (stale_epoch);
//   - same epoch: a counter above the highest is accepted and slides the window; one inside the
//     window is accepted once; one below the window, or seen before, is refused (replay).
// check() must only be called for a message whose sender is proven (the pair tag verified):
// the state of a sender moves only on its own messages, so no one can raise another's floor.
//
// Why a window of 960 counters and not WireGuard's 2048 or the 128 of a first draft: the counter
// is per sender, not per pair, so between two messages to us a busy relay may have sent a few
// hundred to others; reordering by less than that must not lose the later-sent one. 16 blocks:
// 128 bytes per sender.
//
// At most max_senders senders are kept. When full, a new sender replaces the one that has gone
// longest without an accepted message; that sender's messages become replayable to us until it
// sends again (a replayed message still needs its original pair tag, so only the original
// sender's own messages can be replayed). Memory: max_senders * ~200 bytes (4096: ~0.8 MB).
//
// Admission (issue 17): the caller says whether a sender is admitted (the core: a node whose
// record it holds). A new identity costs a PSK holder one key pair, so senders not admitted hold
// at most max_unadmitted slots and, beyond that, replace each other (least recently accepted
// first), never an admitted sender; a full table replaces an unadmitted sender before an admitted
// one. So a flood of fresh identities can make at most max_unadmitted admitted senders'
// messages replayable, once. A sender becomes admitted when a later message says so (its HELLO
// was accepted) and keeps that while it has a slot.
//
// Pure: no clock.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <list>
#include <unordered_map>

#include "meshd/core/node_id.hpp"

namespace mw::meshd {

struct replay_config {
    size_t max_senders = 4096;
    size_t max_unadmitted = 1024;  // of max_senders
};

enum class replay_verdict {
    accept,
    stale_epoch,  // an epoch older than the sender's newest: a message from before its restart
    replay,       // seen before, or below the window
};

const char* to_string(replay_verdict v) noexcept;

class replay_window {
public:
    static constexpr size_t blocks = 16;
    static constexpr uint64_t window_bits = (blocks - 1) * 64;  // 960 counters below the highest

    explicit replay_window(replay_config cfg = {});

    // Checks (epoch, counter) from a proven sender and, when accepted, remembers it.
    replay_verdict check(const node_id& sender, uint64_t epoch, uint64_t counter,
                         bool admitted = true);

    size_t sender_count() const noexcept { return senders_.size(); }
    size_t unadmitted_count() const noexcept { return lru_[0].size(); }
    // Senders pushed out by new ones when the table was full.
    uint64_t replaced() const noexcept { return replaced_; }
    const replay_config& config() const noexcept { return cfg_; }
    static size_t memory_bound(const replay_config& cfg) noexcept;

private:
    struct sender_state {
        node_id id;
        bool admitted = true;
        uint64_t epoch = 0;
        uint64_t highest = 0;  // highest counter accepted in epoch
        std::array<uint64_t, blocks> bitmap{};
    };
    static void reset(sender_state& s, uint64_t epoch, uint64_t counter);
    static replay_verdict slide(sender_state& s, uint64_t counter);
    void evict_oldest(bool admitted);

    replay_config cfg_;
    uint64_t replaced_ = 0;
    // Most recently accepted first; [0] senders not admitted, [1] admitted.
    std::array<std::list<sender_state>, 2> lru_;
    std::unordered_map<node_id, std::list<sender_state>::iterator> senders_;
};

}  // namespace mw::meshd
