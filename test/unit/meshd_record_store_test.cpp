// record_store: newest valid record per node ID, seq ordering and conflicts, forged/expired
// records refused, expiry, bounded size with soonest-expiry eviction, lookups and iteration.
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
    // An expired copy is refused like any expired record.
    CHECK(s.put(r1, r1.expires_ms).err().is(mw::errc::timeout));

    auto older = record(1, 4);
    CHECK(s.put(older, t0).err().is(mw::errc::already_exists));
    CHECK(s.find(r1.id())->seq == 5);

    auto conflict = record(1, 5, t0 + 60'000, "renamed");
    CHECK(s.put(conflict, t0).err().is(mw::errc::state_mismatch));
    CHECK(s.find(r1.id())->name == "node-1");

    auto newer = record(1, 6, t0 + 90'000, "renamed");
    CHECK(s.put(newer, t0).value() == put_outcome::replaced);
    CHECK(s.size() == 1);
    CHECK(s.find(r1.id())->seq == 6);
    CHECK(s.find_by_name("node-1").empty());  // name index follows the replacement
    REQUIRE(s.find_by_name("renamed").size() == 1);
    CHECK(s.find_by_name("renamed")[0]->id() == r1.id());
}

TEST_CASE("record_store: forged, expired and too-long-lived records are refused") {
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

    CHECK(s.put(record(1, 1, t0), t0).err().is(mw::errc::timeout));
    CHECK(s.put(record(1, 1, t0 + 3'600'001), t0).err().is(mw::errc::invalid_argument));
    CHECK(s.empty());
    CHECK(s.put(record(1, 1, t0 + 3'600'000), t0).ok());
}

TEST_CASE("record_store: expire drops records at their expiry") {
    record_store s;
    REQUIRE(s.put(record(1, 1, t0 + 100), t0).ok());
    REQUIRE(s.put(record(2, 1, t0 + 200), t0).ok());
    REQUIRE(s.put(record(3, 1, t0 + 300), t0).ok());
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

TEST_CASE("record_store: bounded; evicts the record expiring soonest") {
    record_store s(record_store_config{.max_records = 3});
    REQUIRE(s.put(record(1, 1, t0 + 300), t0).ok());
    REQUIRE(s.put(record(2, 1, t0 + 100), t0).ok());
    REQUIRE(s.put(record(3, 1, t0 + 200), t0).ok());
    CHECK(s.put(record(4, 1, t0 + 400), t0).value() == put_outcome::inserted);
    CHECK(s.size() == 3);
    CHECK(s.find(record(2).id()) == nullptr);  // expired soonest: evicted
    // A record that would expire before everything kept is refused.
    CHECK(s.put(record(5, 1, t0 + 150), t0).err().is(mw::errc::exhausted));
    // Updates of known nodes never need room.
    CHECK(s.put(record(1, 2, t0 + 50), t0).value() == put_outcome::replaced);
    // Expired records are dropped before anything live is evicted.
    CHECK(s.put(record(6, 1, t0 + 1000), t0 + 60).value() == put_outcome::inserted);
    CHECK(s.find(record(1).id()) == nullptr);
    CHECK(s.find(record(3).id()) != nullptr);
    CHECK(s.find(record(4).id()) != nullptr);
    CHECK(s.size() == 3);
}

TEST_CASE("record_store: name lookups and ordered iteration") {
    record_store s;
    REQUIRE(s.put(record(1, 1, t0 + 1000, "edge"), t0).ok());
    REQUIRE(s.put(record(2, 1, t0 + 1000, "edge"), t0).ok());  // two nodes claim one name
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
