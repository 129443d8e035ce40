// control_inbox: the bounded, per-source rate-limited queue between the socket threads and the
// core's thread (issue 17).
#include <doctest/doctest.h>
#include <sys/socket.h>

#include <cstring>
#include <thread>
#include <vector>

#include "meshd/control_inbox.hpp"

using namespace mw::meshd;
using push_result = control_inbox::push_result;

namespace {
mw::wg_endpoint ep(const char* s) {
    return mw::wg_endpoint::parse(s).value();
}
std::vector<uint8_t> datagram(uint8_t tag, size_t n = 100) {
    return std::vector<uint8_t>(n, tag);
}
}  // namespace

TEST_CASE("control_inbox: FIFO, one wakeup per idle period, buffers reused") {
    control_inbox in;
    auto d1 = datagram(1), d2 = datagram(2, 300);
    CHECK(in.push(d1, ep("192.0.2.1:51821"), 0, 3, 0) == push_result::queued_wake);
    CHECK(in.push(d2, ep("192.0.2.2:51821"), 7, 0, 0) == push_result::queued);
    control_inbox::item it;
    REQUIRE(in.pop(it));
    CHECK(it.bytes == d1);
    CHECK(it.from == ep("192.0.2.1:51821"));
    CHECK(it.via == 3);
    REQUIRE(in.pop(it));
    CHECK(it.bytes == d2);
    CHECK(it.session_id == 7);
    CHECK_FALSE(in.pop(it));
    // Drained: the next push wakes the consumer again.
    CHECK(in.push(d1, ep("192.0.2.1:51821"), 0, 0, 0) == push_result::queued_wake);
    CHECK(in.stats().queued == 3);
    CHECK(in.stats().depth == 1);
    // A padded probe of a full 1500-byte tunnel MTU fits; one byte more does not.
    CHECK(max_inbox_datagram == 1532);
    auto big = datagram(8, max_inbox_datagram);
    CHECK(in.push(big, ep("192.0.2.1:51821"), 7, 0, 0) == push_result::queued);
    in.pop(it);
    CHECK(in.pop(it));
    CHECK(it.bytes == big);
    CHECK(in.push(datagram(9, max_inbox_datagram + 1), ep("192.0.2.1:51821"), 0, 0, 0) ==
          push_result::dropped);
    CHECK(in.stats().oversize == 1);
}

TEST_CASE("control_inbox: bounded; a full queue drops and counts, memory stays at the bound") {
    control_inbox_config c;
    c.capacity = 16;
    c.buckets.rate = 1'000'000;
    c.buckets.burst = 1'000'000;
    control_inbox in(c);
    auto d = datagram(5, max_control_datagram);
    int queued = 0;
    for (int i = 0; i < 1000; ++i)
        queued += in.push(d, ep("192.0.2.1:51821"), 0, 0, 0) != push_result::dropped;
    CHECK(queued == 16);
    CHECK(in.stats().queue_full == 984);
    CHECK(in.stats().high_water == 16);
    CHECK(control_inbox::memory_bound(c) >= 16 * max_control_datagram);
    CHECK(control_inbox::memory_bound(c) < 16 * max_control_datagram + 1024 * 1024);
}

TEST_CASE("control_inbox: a flooding source is rate-limited; another source still gets in") {
    control_inbox_config c;
    c.capacity = 4096;
    c.buckets.rate = 100;
    c.buckets.burst = 100;
    control_inbox in(c);
    control_inbox::item it;
    auto d = datagram(1);
    uint64_t honest_in = 0, honest_sent = 0;
    for (uint64_t t = 0; t < 2000; ++t) {
        for (int i = 0; i < 300; ++i) (void)in.push(d, ep("198.51.100.9:40000"), 0, 0, t);
        if (t % 50 == 0) {
            ++honest_sent;
            honest_in += in.push(d, ep("192.0.2.1:51821"), 0, 0, t) != push_result::dropped;
        }
        while (in.pop(it)) {
        }
    }
    CHECK(honest_in == honest_sent);
    auto s = in.stats();
    CHECK(s.rate_limited >= 2000 * 300 - 400);
    CHECK(s.queued <= 1 + 100 + 200 + honest_sent);
    // Spoofed ever-new sources: only the shared newcomers' bucket's worth.
    control_inbox_config c2;
    c2.buckets.shared_rate = 10;
    c2.buckets.shared_burst = 10;
    control_inbox spoofed(c2);
    int passed = 0;
    for (uint32_t i = 0; i < 10'000; ++i) {
        auto a = mw::ip_address::from_bytes(AF_INET, &i, 4).value();
        passed += spoofed.push(d, mw::wg_endpoint{a, 51821}, 0, 0, i / 10) != push_result::dropped;
        while (spoofed.pop(it)) {
        }
    }
    CHECK(passed <= 10 + 10);  // burst + 1 s of rate
    CHECK(spoofed.stats().shared_limited >= 10'000 - 20);
}

TEST_CASE("control_inbox: one producer thread, one consumer, nothing lost below the bound") {
    control_inbox_config c;
    c.capacity = 64;
    c.buckets.rate = 10'000'000;
    c.buckets.burst = 10'000'000;
    control_inbox in(c);
    constexpr int n = 20'000;
    std::thread producer([&] {
        for (int i = 0; i < n; ++i) {
            std::vector<uint8_t> d(8);
            std::memcpy(d.data(), &i, sizeof i);
            while (in.push(d, ep("192.0.2.1:51821"), 0, 0, 0) == push_result::dropped) {
                std::this_thread::yield();
            }
        }
    });
    control_inbox::item it;
    int next = 0;
    bool ordered = true;
    while (next < n) {
        if (!in.pop(it)) {
            std::this_thread::yield();
            continue;
        }
        int v;
        std::memcpy(&v, it.bytes.data(), sizeof v);
        ordered &= v == next;
        ++next;
    }
    producer.join();
    CHECK(ordered);
    CHECK(in.stats().queued == uint64_t(n));
}
