// replay_window (protocol v2): per-sender (epoch, counter) with a sliding bitmap window, no wall
// clock; newer epochs reset, older ones are refused; bounded sender table (least recently
// accepted sender replaced); a brute-force model check of the window against a set.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <set>

#include "meshd/core/replay_window.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;

namespace {

node_id sender(uint8_t n) {
    return meshd_test::identity(n).id();
}

constexpr auto ok = replay_verdict::accept;
constexpr auto replayed = replay_verdict::replay;

}  // namespace

TEST_CASE("replay_window: each counter once, in any order within the window") {
    replay_window w;
    auto a = sender(1);
    CHECK(w.check(a, 7, 0) == ok);
    CHECK(w.check(a, 7, 0) == replayed);
    CHECK(w.check(a, 7, 2) == ok);
    CHECK(w.check(a, 7, 1) == ok);  // late, inside the window
    CHECK(w.check(a, 7, 1) == replayed);
    CHECK(w.check(a, 7, 2) == replayed);
    // Another sender's counters are its own.
    CHECK(w.check(sender(2), 7, 1) == ok);
    CHECK(w.sender_count() == 2);
}

TEST_CASE("replay_window: window edges") {
    replay_window w;
    auto a = sender(1);
    const uint64_t top = 5000;
    CHECK(w.check(a, 1, top) == ok);
    CHECK(w.check(a, 1, top - replay_window::window_bits) == ok);  // the oldest still judged
    CHECK(w.check(a, 1, top - replay_window::window_bits) == replayed);
    CHECK(w.check(a, 1, top - replay_window::window_bits - 1) == replayed);  // below: refused
    CHECK(w.check(a, 1, 0) == replayed);
    // A jump further than the whole window clears it: old bits must not alias new counters.
    CHECK(w.check(a, 1, top + 64 * replay_window::blocks * 3 + 5) == ok);
    CHECK(w.check(a, 1, top + 64 * replay_window::blocks * 3 + 4) == ok);
    CHECK(w.check(a, 1, top + 64 * replay_window::blocks * 2 + 5) == replayed);  // below the window
    // Counters at block boundaries.
    replay_window v;
    for (uint64_t c : {63u, 64u, 127u, 128u, 0u, 1u}) CHECK(v.check(a, 1, c) == ok);
    for (uint64_t c : {63u, 64u, 127u, 128u, 0u, 1u}) CHECK(v.check(a, 1, c) == replayed);
    // The largest counter.
    CHECK(v.check(a, 1, UINT64_MAX) == ok);
    CHECK(v.check(a, 1, UINT64_MAX) == replayed);
    CHECK(v.check(a, 1, UINT64_MAX - 1) == ok);
}

TEST_CASE("replay_window: a newer epoch resets, an older one is refused") {
    replay_window w;
    auto a = sender(1);
    CHECK(w.check(a, 10, 500) == ok);
    CHECK(w.check(a, 11, 0) == ok);  // restarted: counters begin again
    CHECK(w.check(a, 11, 1) == ok);
    CHECK(w.check(a, 11, 0) == replayed);
    CHECK(w.check(a, 10, 501) == replay_verdict::stale_epoch);
    CHECK(w.check(a, 10, 0) == replay_verdict::stale_epoch);
    CHECK(w.check(a, 0, 0) == replay_verdict::stale_epoch);
    CHECK(std::string(to_string(replay_verdict::stale_epoch)) == "stale_epoch");
}

TEST_CASE("replay_window: matches a set model under random reordering") {
    // Counters 0..N shuffled within a bounded distance: everything inside the window is accepted
    // exactly once, duplicates never, nothing below the window ever.
    std::mt19937_64 rng(17);
    replay_window w;
    auto a = sender(1);
    std::vector<uint64_t> order;
    for (uint64_t c = 0; c < 20000; ++c) order.push_back(c);
    // Shuffled within blocks of 400: nothing arrives more than 399 places early or late.
    for (size_t start = 0; start < order.size(); start += 400) {
        auto end = order.begin() + std::min(order.size(), start + 400);
        std::shuffle(order.begin() + start, end, rng);
    }
    std::set<uint64_t> seen;
    uint64_t highest = 0;
    bool any = false;
    for (size_t i = 0; i < order.size(); ++i) {
        uint64_t c = order[i];
        const bool in_window = !any || c > highest || highest - c <= replay_window::window_bits;
        const bool want = in_window && !seen.count(c);
        REQUIRE((w.check(a, 3, c) == ok) == want);
        if (want) {
            seen.insert(c);
            if (!any || c > highest) highest = c;
            any = true;
        }
        // Replays of a random earlier counter are always refused.
        uint64_t old = order[rng() % (i + 1)];
        REQUIRE(w.check(a, 3, old) == replayed);
    }
    CHECK(seen.size() == order.size());  // reordering by < 400 is well inside the window
}

TEST_CASE("replay_window: bounded sender table replaces the least recently accepted sender") {
    replay_window w(replay_config{.max_senders = 2});
    CHECK(w.check(sender(1), 1, 0) == ok);
    CHECK(w.check(sender(2), 1, 0) == ok);
    CHECK(w.check(sender(1), 1, 1) == ok);  // 1 is now the more recent
    CHECK(w.check(sender(3), 1, 0) == ok);  // replaces 2
    CHECK(w.sender_count() == 2);
    CHECK(w.replaced() == 1);
    CHECK(w.check(sender(1), 1, 1) == replayed);  // 1 was kept
    CHECK(w.check(sender(2), 1, 0) == ok);        // 2 was forgotten (documented)
    CHECK(replay_window::memory_bound(replay_config{}) < 2u * 1024 * 1024);
}

TEST_CASE("replay_window: senders not admitted cannot push out admitted ones") {
    replay_window w(replay_config{.max_senders = 4, .max_unadmitted = 2});
    CHECK(w.check(sender(1), 1, 0, false) == ok);
    CHECK(w.check(sender(2), 1, 0, false) == ok);
    // A third unknown sender replaces the least recent unknown one, though the table has room.
    CHECK(w.check(sender(3), 1, 0, false) == ok);
    CHECK(w.unadmitted_count() == 2);
    CHECK(w.sender_count() == 2);
    CHECK(w.check(sender(1), 1, 0, false) == ok);  // 1 was forgotten, so this is new again
    // Known senders get the rest, and a flood of unknown ones never touches them.
    CHECK(w.check(sender(4), 1, 0, true) == ok);
    CHECK(w.check(sender(5), 1, 0, true) == ok);
    for (uint8_t i = 10; i < 100; ++i) CHECK(w.check(sender(i), 1, 0, false) == ok);
    CHECK(w.check(sender(4), 1, 0, true) == replayed);
    CHECK(w.check(sender(5), 1, 0, true) == replayed);
    // A full table takes an unknown sender's slot for a new known one.
    CHECK(w.check(sender(6), 1, 0, true) == ok);
    CHECK(w.unadmitted_count() == 1);
    CHECK(w.check(sender(4), 1, 0, true) == replayed);
    // An unknown sender that becomes admitted (its HELLO was accepted) moves to the known share.
    CHECK(w.check(sender(99), 1, 1, true) == ok);
    CHECK(w.unadmitted_count() == 0);
    CHECK(w.check(sender(99), 1, 2, false) == ok);
    CHECK(w.unadmitted_count() == 0);
    CHECK(w.sender_count() == 4);
}
