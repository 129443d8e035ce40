// replay_window: freshness window, exact-repeat detection, bounded per-sender memory that fails
// closed (floor), bounded sender table that never forgets a sender whose replays could still pass.
#include <doctest/doctest.h>

#include <array>

#include "meshd/core/replay_window.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;
using meshd_test::t0;

namespace {

std::array<uint8_t, 24> nonce(uint32_t n) {
    std::array<uint8_t, 24> x{};
    for (int i = 0; i < 4; ++i) x[i] = static_cast<uint8_t>(n >> (8 * i));
    return x;
}

node_id sender(uint8_t n) {
    return meshd_test::identity(n).id();
}

}  // namespace

TEST_CASE("replay_window: accepts fresh messages once") {
    replay_window w;
    auto a = sender(1);
    CHECK(w.check(a, t0, nonce(1), t0) == replay_verdict::accept);
    CHECK(w.check(a, t0, nonce(1), t0) == replay_verdict::replay);
    CHECK(w.check(a, t0, nonce(1), t0 + 29'000) == replay_verdict::replay);
    // Same timestamp, other nonce: a different message.
    CHECK(w.check(a, t0, nonce(2), t0) == replay_verdict::accept);
    // Same nonce from another sender is that sender's business.
    CHECK(w.check(sender(2), t0, nonce(1), t0) == replay_verdict::accept);
    CHECK(w.sender_count() == 2);
}

TEST_CASE("replay_window: stale and future timestamps") {
    replay_window w(replay_config{.window_ms = 30'000});
    auto a = sender(1);
    CHECK(w.check(a, t0 - 30'000, nonce(1), t0) == replay_verdict::accept);  // edge: inside
    CHECK(w.check(a, t0 - 30'001, nonce(2), t0) == replay_verdict::stale);
    CHECK(w.check(a, t0 + 30'000, nonce(3), t0) == replay_verdict::accept);
    CHECK(w.check(a, t0 + 30'001, nonce(4), t0) == replay_verdict::future);
    // A message accepted once is stale when replayed after the window.
    CHECK(w.check(a, t0 + 30'000, nonce(3), t0 + 60'001) == replay_verdict::stale);
    CHECK(w.check(a, 0, nonce(5), t0) == replay_verdict::stale);
    CHECK(w.check(a, ~0ull, nonce(6), t0) == replay_verdict::future);
}

TEST_CASE("replay_window: full per-sender memory raises the floor and fails closed") {
    replay_window w(replay_config{.window_ms = 30'000, .per_sender = 4});
    auto a = sender(1);
    for (uint32_t i = 0; i < 4; ++i) {
        CHECK(w.check(a, t0 + i, nonce(i), t0) == replay_verdict::accept);
    }
    // Reordered within capacity is fine.
    CHECK(w.check(a, t0 + 10, nonce(10), t0) == replay_verdict::accept);     // evicts t0+0
    CHECK(w.check(a, t0 + 0, nonce(0), t0) == replay_verdict::below_floor);  // its replay
    CHECK(w.check(a, t0 + 0, nonce(99), t0) == replay_verdict::below_floor);
    CHECK(w.check(a, t0 + 1, nonce(1), t0) == replay_verdict::replay);  // still remembered
    CHECK(w.check(a, t0 + 5, nonce(5), t0) == replay_verdict::accept);  // evicts t0+1
    CHECK(w.check(a, t0 + 1, nonce(1), t0) == replay_verdict::below_floor);
    // Older than everything remembered while full: refused rather than forgetting something.
    CHECK(w.check(a, t0 + 4, nonce(44), t0) == replay_verdict::accept);  // evicts t0+2
    CHECK(w.check(a, t0 + 2, nonce(22), t0) == replay_verdict::below_floor);
}

TEST_CASE("replay_window: a burst with strictly increasing timestamps is accepted, replays not") {
    replay_window w(replay_config{.per_sender = 16});
    auto a = sender(1);
    uint64_t last = 0;
    std::vector<uint64_t> stamps;
    for (uint32_t i = 0; i < 1000; ++i) {
        uint64_t ts = next_send_timestamp(last, t0);  // same ms for all: the helper spreads them
        stamps.push_back(ts);
        CHECK(w.check(a, ts, nonce(i), t0) == replay_verdict::accept);
    }
    CHECK(stamps.back() == t0 + 999);
    for (uint32_t i = 0; i < 1000; ++i) {
        CHECK(w.check(a, stamps[i], nonce(i), t0) != replay_verdict::accept);
    }
    uint64_t l2 = t0 + 5;
    CHECK(next_send_timestamp(l2, t0 + 100) == t0 + 100);
}

TEST_CASE("replay_window: bounded sender table; only out-of-window senders are forgotten") {
    replay_window w(replay_config{.window_ms = 1000, .per_sender = 8, .max_senders = 2});
    CHECK(w.check(sender(1), t0, nonce(1), t0) == replay_verdict::accept);
    CHECK(w.check(sender(2), t0 + 500, nonce(1), t0 + 500) == replay_verdict::accept);
    CHECK(w.check(sender(3), t0 + 600, nonce(1), t0 + 600) == replay_verdict::table_full);
    // Sender 1's newest message is now out of the window: its slot can be reused.
    CHECK(w.check(sender(3), t0 + 1001, nonce(1), t0 + 1001) == replay_verdict::accept);
    CHECK(w.sender_count() == 2);
    // Sender 1 was forgotten, but its old message is stale, so the replay still fails.
    CHECK(w.check(sender(1), t0, nonce(1), t0 + 1001) == replay_verdict::stale);
    // Sender 2 was kept: its replay is caught.
    CHECK(w.check(sender(2), t0 + 500, nonce(1), t0 + 1001) == replay_verdict::replay);
    w.expire(t0 + 10'000);
    CHECK(w.sender_count() == 0);
    CHECK(replay_window::memory_bound(replay_config{}) < 8u * 1024 * 1024);
    CHECK(std::string(to_string(replay_verdict::table_full)) == "table_full");
}

TEST_CASE("replay_window: senders not admitted hold at most their share of the table") {
    replay_window w(
        replay_config{.window_ms = 1000, .per_sender = 8, .max_senders = 4, .max_unadmitted = 2});
    CHECK(w.check(sender(1), t0, nonce(1), t0, false) == replay_verdict::accept);
    CHECK(w.check(sender(2), t0, nonce(1), t0, false) == replay_verdict::accept);
    // A third unknown sender: refused, though the table has room.
    CHECK(w.check(sender(3), t0, nonce(1), t0, false) == replay_verdict::table_full);
    CHECK(w.unadmitted_count() == 2);
    // Known senders still get the rest.
    CHECK(w.check(sender(4), t0, nonce(1), t0, true) == replay_verdict::accept);
    CHECK(w.check(sender(5), t0, nonce(1), t0, true) == replay_verdict::accept);
    CHECK(w.check(sender(6), t0, nonce(1), t0, true) == replay_verdict::table_full);
    // An unknown sender that becomes admitted (its HELLO was accepted) frees its share.
    CHECK(w.check(sender(1), t0 + 1, nonce(2), t0 + 1, true) == replay_verdict::accept);
    CHECK(w.unadmitted_count() == 1);
    CHECK(w.check(sender(1), t0 + 2, nonce(3), t0 + 2, false) == replay_verdict::accept);
    CHECK(w.unadmitted_count() == 1);
    // Expiry keeps the count.
    w.expire(t0 + 10'000);
    CHECK(w.unadmitted_count() == 0);
    CHECK(w.check(sender(3), t0 + 10'000, nonce(1), t0 + 10'000, false) == replay_verdict::accept);
}
