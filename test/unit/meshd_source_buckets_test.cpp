// source_buckets: per-source token buckets behind a shared newcomers' bucket, in a fixed table.
#include <doctest/doctest.h>

#include "meshd/core/source_buckets.hpp"

using namespace mw::meshd;
using verdict = source_buckets::verdict;

namespace {
mw::ip_address ip_of(const char* s) {
    return mw::ip_address::parse(s).value();
}
}  // namespace

TEST_CASE("source_buckets: a source is held to its rate and burst, and refills over time") {
    source_buckets b({.rate = 10, .burst = 5, .shared_rate = 100, .shared_burst = 100});
    const uint64_t k = b.key_of(ip_of("192.0.2.1"));
    int ok = 0;
    for (int i = 0; i < 20; ++i) ok += b.allow(k, 1000);
    // The first datagram is paid by the shared bucket, then the source's own burst of 5.
    CHECK(ok == 6);
    CHECK(b.take(k, 1000) == verdict::limited);
    CHECK(b.allow(k, 1099) == false);  // 10/s: one token per 100 ms
    CHECK(b.allow(k, 1100) == true);
    CHECK(b.allow(k, 1100) == false);
    // A long pause refills to the burst, never beyond it.
    ok = 0;
    for (int i = 0; i < 20; ++i) ok += b.allow(k, 100'000);
    CHECK(ok == 5);
}

TEST_CASE("source_buckets: a heavy source does not starve another one") {
    source_buckets b({.rate = 100, .burst = 100, .shared_rate = 10, .shared_burst = 10});
    const uint64_t flood = b.key_of(ip_of("198.51.100.7")), honest = b.key_of(ip_of("192.0.2.1"));
    uint64_t passed = 0, honest_passed = 0;
    for (uint64_t t = 0; t < 10'000; ++t) {  // 10 s: the flood 300 per ms, honest 1 per 100 ms
        for (int i = 0; i < 300; ++i) passed += b.allow(flood, t);
        if (t % 100 == 0) honest_passed += b.allow(honest, t);
    }
    CHECK(passed <= 100 + 1 + 100 * 10);  // burst + newcomer token + rate x 10 s
    CHECK(passed >= 900);
    CHECK(honest_passed == 100);
}

TEST_CASE("source_buckets: spoofed new sources cost only the shared rate and evict nobody active") {
    source_buckets b({.rate = 100,
                      .burst = 100,
                      .shared_rate = 50,
                      .shared_burst = 50,
                      .max_sources = 64,
                      .idle_ms = 2000});
    const uint64_t honest = b.key_of(ip_of("192.0.2.1"));
    REQUIRE(b.allow(honest, 0));
    uint64_t spoofed_passed = 0, honest_passed = 0, honest_sent = 0;
    uint32_t n = 0;
    for (uint64_t t = 0; t < 20'000; ++t) {
        for (int i = 0; i < 30; ++i) {  // 30,000 new sources per second
            ++n;
            uint8_t a[4] = {10, uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n)};
            spoofed_passed += b.allow(b.key_of(std::span<const uint8_t>(a, 4)), t);
        }
        if (t % 1000 == 500) {  // the honest source once a second: it keeps its slot
            ++honest_sent;
            honest_passed += b.allow(honest, t);
        }
    }
    CHECK(spoofed_passed <= 50 + 50 * 20);
    CHECK(spoofed_passed >= 50 * 19);
    CHECK(honest_passed == honest_sent);
    CHECK(b.size() <= 64);
    // A source silent for idle_ms can lose its slot: afterwards it is a newcomer again.
    CHECK(b.size() == 64);
}

TEST_CASE("source_buckets: IPv6 sources count per /64; keys depend on the seed") {
    source_buckets a({.hash_seed = 1}), b({.hash_seed = 2});
    CHECK(a.key_of(ip_of("2001:db8::1")) == a.key_of(ip_of("2001:db8::ffff:1")));
    CHECK(a.key_of(ip_of("2001:db8::1")) != a.key_of(ip_of("2001:db8:0:1::1")));
    CHECK(a.key_of(ip_of("192.0.2.1")) != a.key_of(ip_of("192.0.2.2")));
    // IPv4 peers of a dual-stack socket are their IPv4 address, not one shared /64.
    CHECK(a.key_of(ip_of("::ffff:192.0.2.1")) == a.key_of(ip_of("192.0.2.1")));
    CHECK(a.key_of(ip_of("::ffff:192.0.2.1")) != a.key_of(ip_of("::ffff:192.0.2.2")));
    CHECK(a.key_of(ip_of("192.0.2.1")) != b.key_of(ip_of("192.0.2.1")));
}

TEST_CASE("source_buckets: memory bound covers the table") {
    source_bucket_config c{.max_sources = 4096};
    CHECK(source_buckets::memory_bound(c) >= 4096 * 32);
    CHECK(source_buckets::memory_bound(c) < 1024 * 1024);
}
