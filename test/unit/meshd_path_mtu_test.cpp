// path_mtu: the per-path MTU search (issue 15). A simulated path carries probes up to `limit`.
#include "meshd/core/path_mtu.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "meshd/core/pmtu_prober.hpp"

using mw::meshd::path_mtu;
using mw::meshd::path_mtu_config;

namespace {

// Runs the search against a path carrying inner packets up to `limit` (probes above it are
// lost), ticking 100 ms, until `until_ms`. Returns the probe sizes sent, in order.
std::vector<unsigned> run(path_mtu& p, unsigned& limit, uint64_t& now, uint64_t until_ms) {
    std::vector<unsigned> sent;
    for (; now < until_ms; now += 100) {
        while (auto size = p.next_probe(now)) {
            sent.push_back(*size);
            if (*size <= limit)
                p.on_ack(*size, now + 20);
            else
                break;  // lost: wait for the timeout
        }
    }
    return sent;
}

}  // namespace

TEST_CASE("path_mtu: a path carrying the interface MTU is confirmed with one probe") {
    path_mtu p;  // base 1280, max 1408
    unsigned limit = 1408;
    uint64_t now = 0;
    p.reset(now);
    CHECK(p.mtu() == 1408);  // optimistic until something fails
    auto sent = run(p, limit, now, 2000);
    REQUIRE(sent.size() == 1);
    CHECK(sent[0] == 1408);
    CHECK(p.state() == path_mtu::phase::complete);
    CHECK(p.mtu() == 1408);
    CHECK(p.next_deadline() == 20 + p.config().confirm_interval_ms);
}

TEST_CASE("path_mtu: a 1400-byte hop (1308 inside) is found within the granularity") {
    path_mtu p;
    unsigned limit = 1308;
    uint64_t now = 0;
    p.reset(now);
    auto sent = run(p, limit, now, 60000);
    CHECK(p.state() == path_mtu::phase::complete);
    CHECK(p.mtu() <= 1308);
    CHECK(p.mtu() + p.config().granularity >= 1308);
    // The top size was tried max_probes times, then the search halved the interval.
    REQUIRE(sent.size() >= 3);
    CHECK(sent[0] == 1408);
    CHECK(sent[1] == 1408);
    CHECK(sent[2] == 1408);
    CHECK(p.counters().sizes_failed >= 1);
    for (unsigned s : sent) CHECK((s >= 1280 && s <= 1408));
    // Nothing above the limit was ever reported as the MTU while searching: mtu() only falls
    // to answered sizes once something failed.
}

TEST_CASE("path_mtu: a lost probe is retried before the size counts as failed") {
    path_mtu_config c;
    c.probe_timeout_ms = 1000;
    path_mtu p(c);
    p.reset(0);
    CHECK(p.next_probe(0) == 1408u);
    CHECK_FALSE(p.next_probe(999).has_value());
    CHECK(p.next_probe(1000) == 1408u);  // second try
    p.on_ack(1408, 1100);                // the second one got through
    CHECK(p.state() == path_mtu::phase::complete);
    CHECK(p.mtu() == 1408);
    CHECK(p.counters().sizes_failed == 0);
    p.on_ack(1408, 1200);  // a late duplicate answer changes nothing
    CHECK(p.counters().probes_acked == 1);
}

TEST_CASE("path_mtu: a black hole after completion falls to base, then finds the new MTU") {
    path_mtu p;
    unsigned limit = 1408;
    uint64_t now = 0;
    p.reset(now);
    run(p, limit, now, 1000);
    REQUIRE(p.mtu() == 1408);
    limit = 1350;  // the path shrinks (a link MTU lowered mid-stream)
    uint64_t shrink = now;
    // The next confirmation fails: max_probes timeouts, then base while searching.
    run(p, limit, now, shrink + p.config().confirm_interval_ms + 3500);
    CHECK(p.counters().black_holes == 1);
    run(p, limit, now, now + 30000);
    CHECK(p.state() == path_mtu::phase::complete);
    CHECK(p.mtu() <= 1350);
    CHECK(p.mtu() + p.config().granularity >= 1350);
}

TEST_CASE("path_mtu: the raise timer finds a path that grew; reset starts over") {
    path_mtu_config c;
    c.raise_interval_ms = 60000;
    c.confirm_interval_ms = 20000;
    path_mtu p(c);
    unsigned limit = 1300;
    uint64_t now = 0;
    p.reset(now);
    run(p, limit, now, 30000);
    REQUIRE(p.state() == path_mtu::phase::complete);
    unsigned small = p.mtu();
    CHECK(small <= 1300);
    limit = 1408;
    run(p, limit, now, 120000);
    CHECK(p.mtu() == 1408);
    CHECK(small < p.mtu());

    p.reset(now);
    CHECK(p.state() == path_mtu::phase::searching);
    CHECK(p.mtu() == 1408);
    CHECK(p.next_probe(now) == 1408u);
}

TEST_CASE("path_mtu: a path that carries only base ends at base") {
    path_mtu p;
    unsigned limit = 1280;
    uint64_t now = 0;
    p.reset(now);
    run(p, limit, now, 120000);
    CHECK(p.state() == path_mtu::phase::complete);
    CHECK(p.mtu() >= 1280);
    CHECK(p.mtu() <= 1280 + p.config().granularity);
}

TEST_CASE("path_mtu: overdue() names the probe next_probe() would count lost") {
    path_mtu_config c;
    c.probe_timeout_ms = 1000;
    path_mtu m(c);
    m.reset(0);
    CHECK_FALSE(m.overdue(0));
    REQUIRE(m.next_probe(0) == c.max);
    CHECK_FALSE(m.overdue(999));
    CHECK(m.overdue(1000) == 0u);
    m.set_probe_timeout(250);
    CHECK(m.overdue(250) == 0u);
    m.on_ack(c.max, 300);
    CHECK_FALSE(m.overdue(5000));
}

TEST_CASE("pmtu_prober: tries per size grow with the path's loss") {
    using mw::meshd::pmtu_prober;
    CHECK(pmtu_prober::tries_for_loss(0) == 3);
    CHECK(pmtu_prober::tries_for_loss(0.009) == 3);
    CHECK(pmtu_prober::tries_for_loss(0.1) == 6);    // 0.1^6 = 1e-6
    CHECK(pmtu_prober::tries_for_loss(0.34) == 13);  // 0.34^13 = 8e-7
    CHECK(pmtu_prober::tries_for_loss(0.6) == pmtu_prober::max_tries);
    for (double loss : {0.05, 0.2, 0.3, 0.45}) {
        const unsigned n = pmtu_prober::tries_for_loss(loss);
        CHECK(std::pow(loss, n) <= pmtu_prober::false_loss_probability);
    }
}

TEST_CASE("path_mtu: reset_confirming confirms the size in use first, then searches upward") {
    path_mtu_config c;  // 1280..1408, granularity 8
    path_mtu m(c);
    m.reset_confirming(0, 1296);
    CHECK(m.mtu() == 1296);
    CHECK(m.state() == path_mtu::phase::complete);
    // Whenever the caller probes first (here late: the new path was not ready), the
    // confirmation comes before any upward search.
    REQUIRE(m.next_probe(3000) == 1296u);
    m.on_ack(1296, 3010);
    CHECK(m.mtu() == 1296);
    // Then upward: the next probe is the top.
    CHECK(m.next_probe(3020) == c.max);
    // A new path that does not carry it: three lost tries are a black hole, down to base.
    path_mtu n(c);
    n.reset_confirming(0, 1296);
    uint64_t now = 0;
    for (int i = 0; i < 3; ++i) {
        REQUIRE(n.next_probe(now) == 1296u);
        now += c.probe_timeout_ms;
    }
    CHECK_FALSE(n.next_probe(now) == 1296u);
    CHECK(n.mtu() == c.base);
    CHECK(n.counters().black_holes == 1);
    // Out of range: an ordinary reset.
    path_mtu o(c);
    o.reset_confirming(0, c.max);
    CHECK(o.state() == path_mtu::phase::searching);
    CHECK(o.next_probe(0) == c.max);
}
