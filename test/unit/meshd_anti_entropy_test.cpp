// Anti-entropy (anti_entropy.hpp, record_digest.hpp): the digest is order-free and changes in
// exactly the bucket of a changed record; two cores that reach each other directly end with the
// same records, newest seq each, by sending only what the other lacks; in steady state a round
// is one DIGEST and its reply; SUMMARY/WANT outside an exchange are counted and dropped.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <vector>

#include "meshd/core/node_core.hpp"
#include "meshd/core/record_digest.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;
using meshd_test::identity;
using meshd_test::psk;
using meshd_test::record;
using meshd_test::sealer;
using meshd_test::t0;

TEST_CASE("record_digest: order-free; a changed seq changes its bucket and the digest only") {
    record_digest a, b;
    for (uint8_t n = 1; n <= 40; ++n) a.add(identity(n).id(), n);
    for (uint8_t n = 40; n >= 1; --n) b.add(identity(n).id(), n);
    CHECK(a.count() == 40);
    CHECK(a.digest() == b.digest());
    CHECK(a.buckets() == b.buckets());
    record_digest c;
    for (uint8_t n = 1; n <= 40; ++n) c.add(identity(n).id(), n == 7 ? 8 : n);
    CHECK(c.digest() != a.digest());
    auto ba = a.buckets(), bc = c.buckets();
    for (size_t k = 0; k < ae_buckets; ++k) {
        CAPTURE(k);
        CHECK((ba[k] != bc[k]) == (k == record_digest::bucket_of(identity(7).id())));
    }
    // One record fewer: another count and digest.
    record_digest d;
    for (uint8_t n = 1; n <= 39; ++n) d.add(identity(n).id(), n);
    CHECK(d.count() == 39);
    CHECK(d.digest() != a.digest());
    d.clear();
    CHECK(d.count() == 0);
    CHECK(d.digest() == record_digest{}.digest());
}

TEST_CASE("record_digest: bucket ranges tile the node ID space") {
    for (size_t k = 0; k < ae_buckets; ++k) {
        auto [first, last] = record_digest::bucket_range(k);
        CHECK(record_digest::bucket_of(first) == k);
        CHECK(record_digest::bucket_of(last) == k);
        CHECK(first < last);
        if (k + 1 < ae_buckets) {
            // The next bucket starts right after this one ends.
            auto next = record_digest::bucket_range(k + 1).first;
            CHECK(last < next);
            auto b = last.bytes();
            for (size_t i = b.size(); i-- > 0;) {
                if (++b[i] != 0) break;
            }
            CHECK(node_id(b) == next);
        }
    }
    for (uint8_t n = 1; n < 50; ++n) {
        auto id = identity(n).id();
        auto [first, last] = record_digest::bucket_range(record_digest::bucket_of(id));
        CHECK_FALSE(id < first);
        CHECK_FALSE(last < id);
    }
}

namespace {

// Two cores on one LAN, no relays, each with the other's record: they reach each other directly
// and run anti-entropy. Datagrams between their endpoints are delivered (after `delay_ms`),
// everything else is dropped; bytes and RECORDS entries are counted per direction.
struct pair_fixture {
    struct end {
        std::unique_ptr<node_core> core;
        mw::wg_endpoint ep;
        uint64_t deadline = 0;
    };
    end a, b;
    uint64_t now = t0;
    struct flight {
        uint64_t at;
        int to;  // 0: a, 1: b
        mw::wg_endpoint from;
        std::vector<uint8_t> bytes;
    };
    std::vector<flight> air;
    std::map<msg_type, size_t> sent[2];  // datagrams by type, from a (0) and from b (1)
    size_t records_sent[2] = {0, 0};     // RECORDS entries

    static node_core_config config(const std::string& name, const mw::wg_endpoint& ep) {
        node_core_config c;
        c.node_name = name;
        c.endpoints = {ep};
        c.record_lifetime_ms = 6 * 3'600'000;  // no re-sign of our own within a test
        return c;
    }
    pair_fixture() {
        a.ep = mw::wg_endpoint::parse("192.168.7.1:51821").value();
        b.ep = mw::wg_endpoint::parse("192.168.7.2:51821").value();
        a.core = std::make_unique<node_core>(config("a", a.ep), identity(101), sealer(),
                                             meshd_test::test_rng(1));
        b.core = std::make_unique<node_core>(config("b", b.ep), identity(102), sealer(),
                                             meshd_test::test_rng(2));
        a.deadline = a.core->start(now);
        b.deadline = b.core->start(now);
    }
    void introduce() {
        REQUIRE(a.core->offer_record(b.core->self_record(), learned_via::cache, now));
        REQUIRE(b.core->offer_record(a.core->self_record(), learned_via::cache, now));
    }
    void collect(int from_idx) {
        end& e = from_idx == 0 ? a : b;
        end& other = from_idx == 0 ? b : a;
        for (auto& d : e.core->take_outgoing()) {
            if (!(d.to == other.ep) || d.session_id) continue;
            auto m = open_message(sealer(), d.bytes);
            REQUIRE(m);
            ++sent[from_idx][m->message.type()];
            if (auto* r = std::get_if<records_msg>(&m->message.body))
                records_sent[from_idx] += r->records.size();
            air.push_back(flight{now + 1, 1 - from_idx, e.ep, std::move(d.bytes)});
        }
        e.core->take_log();
    }
    void run_for(uint64_t ms) {
        const uint64_t end_ms = now + ms;
        while (now < end_ms) {
            now += 1;
            for (auto it = air.begin(); it != air.end();) {
                if (it->at <= now) {
                    end& e = it->to == 0 ? a : b;
                    e.deadline = e.core->on_datagram(it->bytes, it->from, 0, 0, now);
                    it = air.erase(it);
                } else {
                    ++it;
                }
            }
            for (end* e : {&a, &b}) {
                if (now >= e->deadline) e->deadline = e->core->tick(now);
            }
            collect(0);
            collect(1);
        }
    }
    static std::map<node_id, uint64_t> seqs(const node_core& c) {
        std::map<node_id, uint64_t> m;
        c.store().for_each_with_id([&](const node_id& id, const peer_record& r) { m[id] = r.seq; });
        m[c.id()] = c.self_record().seq;
        return m;
    }
    void reset_counts() {
        sent[0].clear();
        sent[1].clear();
        records_sent[0] = records_sent[1] = 0;
    }
};

}  // namespace

TEST_CASE("anti_entropy: two direct neighbours exchange only what the other lacks or holds older") {
    pair_fixture f;
    // a: nodes 1-40 at seq 1; b: nodes 21-60, 21-30 newer (seq 2).
    for (uint8_t n = 1; n <= 40; ++n) {
        REQUIRE(f.a.core->offer_record(record(n, 1, 3'600'000), learned_via::cache, f.now));
    }
    for (uint8_t n = 21; n <= 60; ++n) {
        REQUIRE(f.b.core->offer_record(record(n, n <= 30 ? 2 : 1, 3'600'000), learned_via::cache,
                                       f.now));
    }
    f.introduce();
    f.run_for(100);  // the offers' pushes go nowhere yet: no neighbour
    f.reset_counts();
    f.run_for(5'000);
    auto sa = pair_fixture::seqs(*f.a.core), sb = pair_fixture::seqs(*f.b.core);
    CHECK(sa == sb);
    CHECK(sa.size() == 62);
    for (uint8_t n = 21; n <= 30; ++n) CHECK(sa[identity(n).id()] == 2);
    // Only the differences crossed: a sent 1-20 (20), b sent 41-60 and 21-30 (30). Nothing
    // else: both held each other's own record already, and no HELLO (no rendezvous).
    CHECK(f.records_sent[0] == 20);
    CHECK(f.records_sent[1] == 30);
    CHECK(f.sent[0][msg_type::hello] + f.sent[1][msg_type::hello] == 0);
    CHECK(f.sent[0][msg_type::ae_summary] + f.sent[1][msg_type::ae_summary] >= 1);
    CHECK(f.sent[0][msg_type::ae_want] + f.sent[1][msg_type::ae_want] >= 1);
    CHECK(f.a.core->anti_entropy_neighbours() == 1);
    // Learned from the neighbour, as meshctl shows it.
    for (const auto& pv : f.a.core->peers()) {
        if (pv.id == identity(50).id()) {
            CHECK(learned_via_names(pv.sources) == std::vector<std::string>{"neighbour"});
        }
    }

    SUBCASE(
        "steady state: a round is one DIGEST and its reply, whatever the store holds; "
        "matched rounds back off from 10 s to 640 s") {
        f.run_for(15'000);
        f.reset_counts();
        // The sync round differed (10 s to the next), then each match doubles the interval:
        // rounds ~20 s and ~40 s apart fall in this minute (it was six at a fixed 10 s).
        f.run_for(60'000);
        auto digests = [&] {
            return f.sent[0][msg_type::ae_digest] + f.sent[1][msg_type::ae_digest];
        };
        CHECK(digests() >= 2);
        CHECK(digests() <= 6);
        CHECK(f.sent[0][msg_type::ae_summary] + f.sent[1][msg_type::ae_summary] == 0);
        CHECK(f.records_sent[0] + f.records_sent[1] == 0);
        // At the cap: a round per 640 s, one exchange per pair (not one from each end).
        f.run_for(1'300'000);
        f.reset_counts();
        const uint64_t matched_before = f.a.core->anti_entropy_stats().digests_matched +
                                        f.b.core->anti_entropy_stats().digests_matched;
        f.run_for(4 * 640'000);
        CHECK(digests() >= 6);  // 4 rounds x 2, one early or late
        CHECK(digests() <= 10);
        CHECK(f.sent[0][msg_type::ae_summary] + f.sent[1][msg_type::ae_summary] == 0);
        CHECK(f.records_sent[0] + f.records_sent[1] == 0);
        CHECK(f.a.core->anti_entropy_stats().digests_matched +
                  f.b.core->anti_entropy_stats().digests_matched - matched_before >=
              6);
    }
    SUBCASE("a new record reaches the neighbour by a push, before the next round") {
        f.run_for(200);
        REQUIRE(f.a.core->offer_record(record(70, 1, 3'600'000), learned_via::cache, f.now));
        f.a.deadline = f.a.core->next_deadline();  // as the daemon re-arms after an event
        f.run_for(100);
        REQUIRE(f.b.core->store().find(identity(70).id()));
        CHECK(f.b.core->store().find(identity(70).id())->seq == 1);
    }
    SUBCASE("a newer seq offered at one side replaces the other's older record") {
        REQUIRE(f.b.core->offer_record(record(5, 3, 3'600'000), learned_via::cache, f.now));
        f.b.deadline = f.b.core->next_deadline();
        f.run_for(12'000);
        CHECK(pair_fixture::seqs(*f.a.core)[identity(5).id()] == 3);
    }
}

TEST_CASE("anti_entropy: SUMMARY and WANT outside an exchange are counted and dropped") {
    pair_fixture f;
    f.introduce();
    f.run_for(3'000);
    const auto before = f.a.core->anti_entropy_stats();
    // b's key, a later boot epoch: a's replay window takes it as b after a restart.
    control_channel forger(identity(102), sealer(), 2'000'000'000);
    forger.set_key_source([](const node_id&) { return identity(101).wg_public_key(); });
    aead_nonce n{};
    ae_summary_msg s;
    s.request_id = 12345;  // no exchange of a's has this id
    std::array<uint8_t, node_id::size> ff{};
    ff.fill(0xff);
    s.last = node_id(ff);
    s.entries = {{identity(9).id(), 1}};
    f.a.core->on_datagram(forger.send(s, identity(101).id(), n).value(), f.b.ep, 0, 0, f.now);
    f.a.core->on_datagram(forger
                              .send(ae_want_msg{.request_id = 777, .ids = {identity(101).id()}},
                                    identity(101).id(), n)
                              .value(),
                          f.b.ep, 0, 0, f.now);
    f.a.core->tick(f.now);
    CHECK(f.a.core->anti_entropy_stats().unsolicited == before.unsolicited + 2);
    // Nothing answered them.
    bool answered = false;
    for (const auto& d : f.a.core->take_outgoing()) {
        auto m = open_message(sealer(), d.bytes);
        if (m && (m->message.type() == msg_type::records || m->message.type() == msg_type::ae_want))
            answered = true;
    }
    CHECK_FALSE(answered);
}

TEST_CASE("anti_entropy: off, a core ignores the messages (the baseline of the benchmark)") {
    pair_fixture f;
    auto cfg = pair_fixture::config("c", mw::wg_endpoint::parse("192.168.7.3:51821").value());
    cfg.anti_entropy = false;
    node_core c(cfg, identity(103), sealer(), meshd_test::test_rng(3));
    c.start(f.now);
    REQUIRE(c.offer_record(f.a.core->self_record(), learned_via::cache, f.now));
    control_channel from_a(identity(101), sealer(), 5);
    from_a.set_key_source([](const node_id&) { return identity(103).wg_public_key(); });
    ae_digest_msg d;
    d.request_id = 1;
    aead_nonce n{};
    c.on_datagram(from_a.send(d, identity(103).id(), n).value(), f.a.ep, 0, 0, f.now);
    c.tick(f.now);
    for (const auto& o : c.take_outgoing()) {
        auto m = open_message(sealer(), o.bytes);
        REQUIRE(m);
        CHECK(m->message.type() != msg_type::ae_digest);
    }
    CHECK(c.anti_entropy_stats().digests_received == 0);
}
