// probe_loss (issue 14 §5): the loss estimate over judged probes and the interval it calls for;
// lazy_probe_loss, made at the first probe.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "meshd/core/probe_loss.hpp"

using mw::meshd::probe_loss;

TEST_CASE("probe_loss: answered probes are no loss; a clean link keeps the longest interval") {
    probe_loss l;
    for (uint64_t t = 0; t < 10'000; t += 100) {
        l.sent(t);
        l.answered(t);  // even late answers count, as long as the probe was not judged yet
        l.judge(t, 400);
    }
    CHECK(l.loss() == 0);
    CHECK(l.interval_for(400, 100, 25) == 100);
}

TEST_CASE("probe_loss: answers in flight are not losses; silence after the last answer is none") {
    // RTT 400 ms, a probe every 100 ms: 4 always in flight, none lost.
    probe_loss m;
    for (uint64_t t = 0; t < 5'000; t += 100) {
        m.sent(t);
        if (t >= 400) m.answered(t - 400);
        m.judge(t, 800);
    }
    CHECK(m.loss() == 0);
    CHECK(m.judged() >= 40);

    // The target dies at 2 s: its silence from then on is not counted (no probe after it was
    // answered), so the estimate stays what the link had, and the next target is not probed
    // faster because of a death.
    probe_loss d;
    for (uint64_t t = 0; t < 10'000; t += 100) {
        d.sent(t);
        if (t < 2'000) d.answered(t);
        d.judge(t, 800);
    }
    CHECK(d.loss() == 0);
    // One answer after a gap: the unanswered probes before it were lost.
    d.sent(10'000);
    d.answered(10'000);
    d.judge(10'000, 800);
    CHECK(d.loss() > 0.05);
}

TEST_CASE("probe_loss: beyond max_forgiven_loss the link is broken: no faster probing") {
    std::mt19937_64 rng(9);
    std::bernoulli_distribution lost(0.8);
    probe_loss l;
    for (uint64_t t = 0; t < 200'000; t += 50) {
        l.sent(t);
        if (!lost(rng)) l.answered(t);
        l.judge(t, 400);
    }
    CHECK(l.loss() > probe_loss::max_forgiven_loss);
    CHECK(l.interval_for(400, 100, 25) == 100);
}

TEST_CASE(
    "probe_loss: the estimate follows the loss rate; the interval keeps false timeouts rare") {
    std::mt19937_64 rng(5);
    for (double p : {0.05, 0.185, 0.34}) {
        CAPTURE(p);
        probe_loss l;
        std::bernoulli_distribution lost(p);
        double sum = 0;
        int n = 0;
        for (uint64_t t = 0; t < 2'000'000; t += 50) {
            l.sent(t);
            if (!lost(rng)) l.answered(t);
            l.judge(t, 400);
            if (t > 100'000) sum += l.loss(), ++n;
        }
        CHECK(std::abs(sum / n - p) < 0.02);
        const uint64_t iv = l.interval_for(400, 100, 25);
        CHECK(iv < 100);
        // All probes in a 400 ms window lost by chance, at the true rate: rare (the estimate is
        // a little off either way), for what the 25 ms floor allows.
        const double all_lost = std::pow(p, 400.0 / static_cast<double>(iv));
        if (iv > 25) CHECK(all_lost <= 1e-6);
        // At the estimate: the target exactly.
        if (iv > 25) CHECK(std::pow(l.loss(), std::floor(400.0 / iv)) <= 1e-7 * 1.0001);
        MESSAGE("loss " << p << ": estimate " << sum / n << ", interval " << iv
                        << " ms, P(a 400 ms window all lost) " << all_lost);
    }
}

TEST_CASE(
    "probe_loss: a full ring drops its oldest probe unjudged; forget_pending judges nothing") {
    probe_loss l;
    for (uint64_t t = 0; t < probe_loss::max_pending; ++t) l.sent(t);
    l.sent(1000);  // the 65th: the oldest (sent at 0) goes, unjudged
    CHECK(l.judged() == 0);
    l.answered(0);  // gone: ignored
    CHECK(l.judged() == 0);
    l.answered(1000);  // every probe before it is now lost once judged
    l.judge(100'000, 1);
    CHECK(l.judged() == probe_loss::max_pending);
    CHECK(l.loss() > 0.9);
    l.sent(100'001);
    l.forget_pending();
    l.answered(100'001);  // forgotten: ignored
    CHECK(l.judged() == probe_loss::max_pending);
}

TEST_CASE("lazy_probe_loss: nothing held before the first probe sent; then as probe_loss") {
    mw::meshd::lazy_probe_loss lazy;
    probe_loss eager;
    // Before any probe: answers, judging and forgetting hold nothing; a clean link's interval.
    lazy.answered(0);
    lazy.judge(10'000, 800);
    lazy.forget_pending();
    CHECK_FALSE(lazy.engaged());
    CHECK(lazy.loss() == 0);
    CHECK(lazy.judged() == 0);
    CHECK(lazy.interval_for(3500, 1000, 100, 20) == 1000);
    // From the first probe on it follows probe_loss exactly (here: every third probe lost).
    for (uint64_t t = 20'000; t < 60'000; t += 100) {
        lazy.sent(t);
        eager.sent(t);
        if (t % 300 != 0) {
            lazy.answered(t);
            eager.answered(t);
        }
        lazy.judge(t, 800);
        eager.judge(t, 800);
    }
    CHECK(lazy.engaged());
    CHECK(lazy.loss() == eager.loss());
    CHECK(lazy.loss() > 0.2);
    CHECK(lazy.judged() == eager.judged());
    CHECK(lazy.interval_for(3500, 1000, 100, 20) == eager.interval_for(3500, 1000, 100, 20));
    CHECK(lazy.interval_for(3500, 1000, 100, 20) < 1000);
}
