// record_store: newest valid record per node ID, seq ordering and conflicts, forged records
// refused, lifetime counted from first receipt (duplicates never extend it), tombstones, bounded
// size where new identities cannot evict established nodes, lookups and iteration.
#include <doctest/doctest.h>

#include "meshd/core/record_store.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;
using meshd_test::record;
using meshd_test::t0;

TEST_CASE("record_store: insert, duplicate, newer, older, conflicting") {
    record_store s;
    auto r1 = record(1, 5);
    CHECK(s.put(r1, t0).value() == put_outcome::inserted);
    CHECK(s.put(r1, t0).value() == put_outcome::duplicate);
    CHECK(s.size() == 1);
    // Duplicates skip the signature check only when byte-identical, signature included.
    auto bad_sig = r1;
    bad_sig.sig[7] ^= 1;
    CHECK(s.put(bad_sig, t0).err().is(mw::errc::protocol_error));
    // A copy that arrives again later is still a duplicate and keeps the first receipt's expiry.
    CHECK(s.put(r1, t0 + 30'000).value() == put_outcome::duplicate);
    CHECK(s.expires_at(r1.id()) == t0 + 60'000);

    auto older = record(1, 4);
    CHECK(s.put(older, t0).err().is(mw::errc::already_exists));
    CHECK(s.find(r1.id())->seq == 5);

    auto conflict = record(1, 5, 60'000, "renamed");
    CHECK(s.put(conflict, t0).err().is(mw::errc::state_mismatch));
    CHECK(s.find(r1.id())->name == "node-1");

    // A newer seq with other content replaces; with the same content (a re-sign: only seq and
    // lifetime differ) it refreshes, which callers do not spread as a change.
    auto resigned = record(1, 6, 90'000);
    CHECK(s.put(resigned, t0).value() == put_outcome::refreshed);
    CHECK(s.find(r1.id())->seq == 6);
    CHECK(s.expires_at(r1.id()) == t0 + 90'000);
    auto moved = record(1, 7, 90'000);
    moved.endpoints.pop_back();
    REQUIRE(moved.sign(meshd_test::identity(1)).ok());
    CHECK(s.put(moved, t0).value() == put_outcome::replaced);
    auto newer = record(1, 8, 90'000, "renamed");
    CHECK(s.put(newer, t0).value() == put_outcome::replaced);
    CHECK(s.size() == 1);
    CHECK(s.find(r1.id())->seq == 8);
    CHECK(s.find_by_name("node-1").empty());  // name index follows the replacement
    REQUIRE(s.find_by_name("renamed").size() == 1);
    CHECK(s.find_by_name("renamed")[0]->id() == r1.id());
}

TEST_CASE("record_store: forged and too-long-lived records are refused") {
    record_store s(record_store_config{.max_lifetime_ms = 3'600'000});
    auto r = record(1, 1);
    auto tampered = r;
    tampered.seq = 100;
    CHECK(s.put(tampered, t0).err().is(mw::errc::protocol_error));

    auto attacker = meshd_test::identity(2);
    auto hijack = r;  // victim's WG key, attacker's signature
    hijack.seq = 100;
    REQUIRE(hijack.sign(attacker).ok());     // sign() takes the attacker's keys...
    hijack.wg_public_key = r.wg_public_key;  // ...then the victim's WG key is put back
    CHECK(hijack.id() == r.id());
    CHECK_FALSE(s.put(hijack, t0).ok());

    CHECK(s.put(record(1, 1, 3'600'001), t0).err().is(mw::errc::invalid_argument));
    CHECK(s.empty());
    CHECK(s.put(record(1, 1, 3'600'000), t0).ok());
}

TEST_CASE("record_store: expire drops records at their expiry") {
    record_store s;
    REQUIRE(s.put(record(1, 1, 100), t0).ok());
    REQUIRE(s.put(record(2, 1, 200), t0).ok());
    REQUIRE(s.put(record(3, 1, 300), t0).ok());
    CHECK(s.expire(t0 + 99) == 0);
    CHECK(s.expire(t0 + 200) == 2);
    CHECK(s.size() == 1);
    CHECK(s.find(record(1).id()) == nullptr);
    CHECK(s.find(record(3).id()) != nullptr);
    CHECK(s.find_by_name("node-1").empty());
    CHECK(s.erase(record(3).id()));
    CHECK_FALSE(s.erase(record(3).id()));
    CHECK(s.empty());
}

TEST_CASE(
    "record_store: bounded; a new identity evicts a young or silent record, never by expiry") {
    record_store s(record_store_config{.max_records = 3, .establish_ms = 1000, .live_ms = 5000});
    REQUIRE(s.put(record(1, 1, 60'000), t0).ok());
    REQUIRE(s.put(record(2, 1, 60'000), t0 + 10).ok());
    REQUIRE(s.put(record(3, 1, 60'000), t0 + 20).ok());
    // All three young: the least recently seen one (1) makes room, whatever the expiries say.
    CHECK(s.put(record(4, 1, 30'000), t0 + 30).value() == put_outcome::inserted);
    CHECK(s.find(record(1).id()) == nullptr);
    CHECK(s.evicted() == 1);
    // 2 is seen again (its HELLO repeats the record): 3 is now the least recently seen.
    CHECK(s.put(record(2, 1, 60'000), t0 + 40).value() == put_outcome::duplicate);
    CHECK(s.put(record(5, 1, 60'000), t0 + 50).value() == put_outcome::inserted);
    CHECK(s.find(record(3).id()) == nullptr);
    CHECK(s.find(record(2).id()) != nullptr);
    // Updates of known nodes never need room.
    CHECK(s.put(record(2, 2, 60'000), t0 + 60).value() == put_outcome::refreshed);
    CHECK(s.size() == 3);
}

TEST_CASE("record_store: new identities claiming long lives cannot evict established nodes") {
    // Issue 17: honest records live 10 min, fakes may claim 24 h; eviction by claimed expiry let
    // 16,384 fakes empty the store.
    const uint64_t day = 24ull * 3600 * 1000;
    record_store s(record_store_config{.max_records = 4, .establish_ms = 60'000});
    for (uint8_t n = 1; n <= 3; ++n) REQUIRE(s.put(record(n, 1, 600'000), t0).ok());
    // The honest nodes keep refreshing (their HELLOs, RECORDS answers) for two minutes.
    for (uint64_t t = t0; t <= t0 + 120'000; t += 10'000) {
        for (uint8_t n = 1; n <= 3; ++n) REQUIRE(s.put(record(n, 1, 600'000), t).ok());
    }
    const uint64_t now = t0 + 120'000;
    for (uint8_t n = 1; n <= 3; ++n) CHECK(s.established(record(n).id(), now));
    // A flood of new identities, each claiming a day.
    size_t inserted = 0;
    for (uint8_t n = 10; n < 60; ++n) inserted += s.put(record(n, 1, day), now + n).ok();
    CHECK(inserted == 50);  // they churn through the one free slot...
    for (uint8_t n = 1; n <= 3; ++n) CHECK(s.find(record(n).id()) != nullptr);  // ...only
    CHECK(s.size() == 4);
    CHECK_FALSE(s.established(record(59).id(), now + 59));
    // Once the fake is established too, the store is full of established nodes: refused, counted.
    CHECK(s.put(record(59, 1, day), now + 60'000 + 59).value() == put_outcome::duplicate);
    for (uint8_t n = 1; n <= 3; ++n) {
        REQUIRE(s.put(record(n, 2, 600'000), now + 60'000 + 60).ok());
    }
    CHECK(s.put(record(60, 1, day), now + 60'100).err().is(mw::errc::exhausted));
    CHECK(s.refused_full() == 1);
    // A node silent for longer than live_ms is no longer established: it makes room first.
    const uint64_t later = now + 60'100 + s.config().live_ms;
    for (uint8_t n = 1; n <= 3; ++n) {
        REQUIRE(s.put(record(n, 3, 600'000), later).ok());
    }
    CHECK(s.put(record(61, 1, day), later + 1).value() == put_outcome::inserted);
    CHECK(s.find(record(59).id()) == nullptr);
    for (uint8_t n = 1; n <= 3; ++n) CHECK(s.find(record(n).id()) != nullptr);
}

TEST_CASE("record_store: expired records are dropped before anything live is evicted") {
    record_store s(record_store_config{.max_records = 3});
    REQUIRE(s.put(record(1, 1, 50), t0).ok());
    REQUIRE(s.put(record(2, 1, 1000), t0).ok());
    REQUIRE(s.put(record(3, 1, 1000), t0).ok());
    CHECK(s.put(record(6, 1, 1000), t0 + 60).value() == put_outcome::inserted);
    CHECK(s.find(record(1).id()) == nullptr);
    CHECK(s.find(record(2).id()) != nullptr);
    CHECK(s.find(record(3).id()) != nullptr);
    CHECK(s.evicted() == 0);
}

TEST_CASE("record_store: name lookups and ordered iteration") {
    record_store s;
    REQUIRE(s.put(record(1, 1, 1000, "edge"), t0).ok());
    REQUIRE(s.put(record(2, 1, 1000, "edge"), t0).ok());  // two nodes claim one name
    REQUIRE(s.put(record(3), t0).ok());
    auto edge = s.find_by_name("edge");
    REQUIRE(edge.size() == 2);
    CHECK(edge[0]->id() < edge[1]->id());
    CHECK(s.find_by_name("nobody").empty());
    std::vector<node_id> ids;
    s.for_each([&](const peer_record& r) { ids.push_back(r.id()); });
    REQUIRE(ids.size() == 3);
    CHECK(std::is_sorted(ids.begin(), ids.end()));
}

TEST_CASE("record_store: the lifetime counts from first receipt; duplicates never extend it") {
    record_store s;
    const auto r = record(1, 5, 60'000);
    REQUIRE(s.put(r, t0).value() == put_outcome::inserted);
    CHECK(s.expires_at(r.id()) == t0 + 60'000);
    // The node's own HELLOs and every relay repeat the same record: never a longer life.
    for (uint64_t t = t0 + 10'000; t < t0 + 60'000; t += 10'000) {
        REQUIRE(s.put(r, t).value() == put_outcome::duplicate);
        CHECK(s.expires_at(r.id()) == t0 + 60'000);
    }
    CHECK(s.expire(t0 + 59'999) == 0);
    CHECK(s.expire(t0 + 60'000) == 1);
    CHECK(s.find(r.id()) == nullptr);
    CHECK_FALSE(s.expires_at(r.id()).has_value());

    // A newer seq, signed by the node, gets a full lifetime from its own receipt.
    record_store b;
    REQUIRE(b.put(record(2, 1, 60'000), t0).ok());
    REQUIRE(b.put(record(2, 2, 60'000), t0 + 40'000).value() == put_outcome::refreshed);
    CHECK(b.expires_at(record(2).id()) == t0 + 100'000);
    CHECK(b.expire(t0 + 99'999) == 0);
    // The same record first received later (second-hand, through another relay) lives a
    // lifetime from then: the bound is one lifetime per hop.
    record_store c;
    REQUIRE(c.put(record(2, 2, 60'000), t0 + 90'000).ok());
    CHECK(c.expires_at(record(2).id()) == t0 + 150'000);
}

TEST_CASE("record_store: no clock is compared; any receiver clock works") {
    // Issue 14 item 1: the receiver's now is its own clock (monotonic since boot, or a wall
    // clock that is years off): the record is accepted and lives its lifetime from there.
    for (uint64_t now :
         {uint64_t{5}, uint64_t{t0}, uint64_t{t0 + 10ull * 365 * 24 * 3600 * 1000}}) {
        record_store s;
        REQUIRE(s.put(record(1, 1, 600'000), now).value() == put_outcome::inserted);
        CHECK(s.expires_at(record(1).id()) == now + 600'000);
        CHECK(s.expire(now + 599'999) == 0);
        CHECK(s.expire(now + 600'000) == 1);
    }
}

TEST_CASE("record_store: a tombstone refuses the same or an older seq after expiry or eviction") {
    record_store s(record_store_config{.max_records = 2, .establish_ms = 1000, .live_ms = 5000});
    const auto id = record(1).id();
    REQUIRE(s.put(record(1, 5, 1000), t0).ok());
    CHECK_FALSE(s.tombstone(id).has_value());
    REQUIRE(s.expire(t0 + 1000) == 1);
    CHECK(s.tombstone(id) == 5);
    // A relay that received it later still pushes it, or an attacker replays it: refused, as
    // outdated (quietly, like any outdated seq).
    CHECK(s.put(record(1, 5, 1000), t0 + 2000).err().is(mw::errc::already_exists));
    CHECK(s.put(record(1, 4, 1000), t0 + 2000).err().is(mw::errc::already_exists));
    CHECK(s.find(id) == nullptr);
    // The node's next record is taken, with a full lifetime; it replaces the tombstone.
    CHECK(s.put(record(1, 6, 1000), t0 + 3000).value() == put_outcome::inserted);
    CHECK_FALSE(s.tombstone(id).has_value());
    CHECK(s.expires_at(id) == t0 + 4000);

    // Evicted (to make room for a new identity) leaves a tombstone too.
    REQUIRE(s.put(record(2, 9, 60'000), t0 + 3001).ok());
    REQUIRE(s.put(record(3, 1, 60'000), t0 + 3002).value() == put_outcome::inserted);
    CHECK(s.evicted() == 1);
    CHECK(s.find(id) == nullptr);  // 1 was the least recently seen
    CHECK(s.tombstone(id) == 6);
    CHECK(s.put(record(1, 6, 1000), t0 + 3003).err().is(mw::errc::already_exists));
    // Erased too, by default.
    REQUIRE(s.erase(record(2).id()));
    CHECK(s.tombstone(record(2).id()) == 9);
    CHECK(s.put(record(2, 9, 60'000), t0 + 3004).err().is(mw::errc::already_exists));
    // Erased for a revocation: no tombstone, so once unlisted the node's current record (the
    // same seq: nothing made it re-sign) is taken at once (e2e_relays_runtime's un-revoke).
    REQUIRE(s.put(record(4, 3, 60'000), t0 + 3005).ok());
    REQUIRE(s.erase(record(4).id(), false));
    CHECK_FALSE(s.tombstone(record(4).id()).has_value());
    CHECK(s.put(record(4, 3, 60'000), t0 + 3006).ok());
}

TEST_CASE("record_store: tombstones are bounded, oldest out (the documented residual)") {
    record_store s(record_store_config{.max_tombstones = 2});
    for (uint8_t n = 1; n <= 3; ++n) REQUIRE(s.put(record(n, 7, 1000), t0 + n).ok());
    REQUIRE(s.expire(t0 + 2000) == 3);
    CHECK(s.tombstones() == 2);
    CHECK_FALSE(s.tombstone(record(1).id()).has_value());  // the oldest went
    CHECK(s.tombstone(record(2).id()) == 7);
    CHECK(s.tombstone(record(3).id()) == 7);
    CHECK(s.put(record(2, 7, 1000), t0 + 3000).err().is(mw::errc::already_exists));
    // Node 1's tombstone was pushed out: its old record is accepted once more, for one lifetime.
    CHECK(s.put(record(1, 7, 1000), t0 + 3000).value() == put_outcome::inserted);
    CHECK(s.expires_at(record(1).id()) == t0 + 4000);
}

TEST_CASE("record_store: tombstones last tombstone_ms at most") {
    // A node that came back with lower seqs (its boot.epoch removed while its clock is behind)
    // must not be refused for ever.
    record_store s(record_store_config{.tombstone_ms = 10'000});
    const auto id = record(1).id();
    REQUIRE(s.put(record(1, 7, 1000), t0).ok());
    REQUIRE(s.expire(t0 + 1000) == 1);
    CHECK(s.tombstone(id) == 7);
    CHECK(s.put(record(1, 3, 1000), t0 + 10'999).err().is(mw::errc::already_exists));
    CHECK(s.expire(t0 + 10'999) == 0);
    CHECK(s.tombstone(id) == 7);
    CHECK(s.expire(t0 + 11'000) == 0);
    CHECK_FALSE(s.tombstone(id).has_value());
    CHECK(s.put(record(1, 3, 1000), t0 + 11'000).value() == put_outcome::inserted);
}
