// relay_session_table: binding to observed addresses, what is dropped and why, expiry, per-node
// limits and rate limits, capacity; plus the fixed_u64_map index under it.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <string>

#include "meshd/core/fixed_u64_map.hpp"
#include "meshd/core/relay_session_table.hpp"
#include "meshd/core/wire_codec.hpp"

using namespace mw;
using namespace mw::meshd;

namespace {

node_id nid(uint8_t n) {
    std::array<uint8_t, 32> b{};
    b.fill(n);
    return node_id(b);
}

relay_addr relay_at(const char* text) {
    return relay_addr::from_endpoint(wg_endpoint::parse(text).value());
}

constexpr uint64_t t_start = 1'000'000;

relay_table_limits roomy() {
    relay_table_limits l;
    l.max_sessions = 64;
    l.max_nodes = 16;
    l.max_sessions_per_node = 8;
    l.idle_timeout_ms = 10'000;
    l.node_packets_per_s = 1'000'000;
    l.node_bytes_per_s = 1'000'000'000;
    return l;
}

}  // namespace

TEST_CASE("relay_addr: v4 and v4-mapped v6 are one address; round trips") {
    auto a = relay_at("192.0.2.1:5000");
    auto m = relay_at("[::ffff:192.0.2.1]:5000");
    CHECK(a == m);
    CHECK(a.is_v4());
    CHECK(a.to_endpoint().str() == "192.0.2.1:5000");
    auto v6 = relay_at("[2001:db8::1]:7");
    CHECK_FALSE(v6.is_v4());
    CHECK(v6.to_endpoint().str() == "[2001:db8::1]:7");
    CHECK_FALSE(a == relay_at("192.0.2.1:5001"));
    sockaddr_storage ss;
    socklen_t len = a.to_sockaddr(ss, AF_INET6);
    CHECK(len == sizeof(sockaddr_in6));
    CHECK(*relay_addr::from_sockaddr(&ss, len) == a);
    len = a.to_sockaddr(ss, AF_INET);
    CHECK(len == sizeof(sockaddr_in));
    CHECK(*relay_addr::from_sockaddr(&ss, len) == a);
    CHECK_FALSE(relay_addr::from_sockaddr(&ss, 1).has_value());
}

TEST_CASE("fixed_u64_map: insert, find, erase with collisions, matches std::map under churn") {
    fixed_u64_map m(100, 42);
    std::map<uint64_t, uint32_t> ref;
    std::mt19937_64 rng(7);
    for (int step = 0; step < 20000; ++step) {
        uint64_t k = rng() % 300;  // small key space: many hits, probes and deletions
        if (rng() % 3 == 0) {
            CHECK(m.erase(k) == (ref.erase(k) == 1));
        } else {
            uint32_t v = uint32_t(rng() % 1000);
            bool room = ref.size() < 100 || ref.count(k);
            CHECK(m.insert(k, v) == room);
            if (room) ref[k] = v;
        }
        REQUIRE(m.size() == ref.size());
    }
    for (uint64_t k = 0; k < 300; ++k) {
        auto it = ref.find(k);
        CHECK(m.find(k) == (it == ref.end() ? fixed_u64_map::none : it->second));
    }
}

TEST_CASE("relay table: binding both sides, forwarding both ways, counters") {
    relay_session_table t(roomy());
    auto a = relay_at("198.51.100.1:51821"), b = relay_at("[2001:db8::2]:40000");
    CHECK(t.bind(7, nid(1), nid(2), a, t_start).value() == relay_bind_state::half_open);
    // Half-open: A's frames have nowhere to go yet.
    CHECK(t.route(7, a, 100, t_start) == nullptr);
    CHECK(t.drops(relay_drop::not_established) == 1);
    CHECK(t.bind(7, nid(2), nid(1), b, t_start).value() == relay_bind_state::established);

    const relay_addr* to = t.route(7, a, 100, t_start + 1);
    REQUIRE(to != nullptr);
    CHECK(*to == b);
    to = t.route(7, b, 60, t_start + 2);
    REQUIRE(to != nullptr);
    CHECK(*to == a);
    CHECK(t.routed_packets() == 2);
    CHECK(t.routed_bytes() == 160);
    relay_session_info info;
    REQUIRE(t.info(7, info));
    CHECK(info.packets_a_to_b == 1);
    CHECK(info.bytes_b_to_a == 60);
    CHECK(info.a == nid(1));
    CHECK(info.b_addr == b);
    CHECK(t.node_sessions(nid(1)) == 1);
    CHECK(t.node_sessions(nid(2)) == 1);
}

TEST_CASE("relay table: not an open relay") {
    relay_session_table t(roomy());
    auto a = relay_at("10.0.0.1:1000"), b = relay_at("10.0.0.2:2000");
    REQUIRE(t.bind(1, nid(1), nid(2), a, t_start));
    REQUIRE(t.bind(1, nid(2), nid(1), b, t_start));

    SUBCASE("unknown session") {
        CHECK(t.route(2, a, 100, t_start) == nullptr);
        CHECK(t.drops(relay_drop::unknown_session) == 1);
    }
    SUBCASE("known session from another address, port or family") {
        CHECK(t.route(1, relay_at("10.0.0.3:1000"), 100, t_start) == nullptr);
        CHECK(t.route(1, relay_at("10.0.0.1:1001"), 100, t_start) == nullptr);
        CHECK(t.route(1, relay_at("[2001:db8::1]:1000"), 100, t_start) == nullptr);
        CHECK(t.drops(relay_drop::wrong_source) == 3);
        CHECK(t.routed_packets() == 0);
    }
    SUBCASE("a third node cannot join or take over a session id") {
        auto r = t.bind(1, nid(3), nid(2), relay_at("10.0.0.3:3000"), t_start);
        REQUIRE_FALSE(r);
        CHECK(r.err().is(errc::already_exists));
        CHECK(t.bind(1, nid(1), nid(3), relay_at("10.0.0.3:3000"), t_start)
                  .err()
                  .is(errc::already_exists));
        CHECK(t.route(1, relay_at("10.0.0.3:3000"), 100, t_start) == nullptr);
    }
    SUBCASE("a side re-binds to its new address (NAT rebinding); the old one is dropped") {
        auto a2 = relay_at("10.0.0.1:1555");
        CHECK(t.bind(1, nid(1), nid(2), a2, t_start).value() == relay_bind_state::established);
        CHECK(t.route(1, a, 100, t_start) == nullptr);
        REQUIRE(t.route(1, a2, 100, t_start) != nullptr);
        CHECK(*t.route(1, b, 100, t_start) == a2);
    }
    SUBCASE("invalid binds") {
        CHECK(t.bind(9, nid(1), nid(1), a, t_start).err().is(errc::invalid_argument));
        CHECK(t.bind(9, nid(1), nid(2), relay_addr{}, t_start).err().is(errc::invalid_argument));
        REQUIRE(t.bind(10, nid(4), nid(5), a, t_start));
        CHECK(t.bind(10, nid(5), nid(4), a, t_start).err().is(errc::invalid_argument));
    }
    SUBCASE("removal") {
        CHECK(t.remove(1));
        CHECK_FALSE(t.remove(1));
        CHECK(t.route(1, a, 100, t_start) == nullptr);
        CHECK(t.drops(relay_drop::unknown_session) == 1);
        CHECK(t.size() == 0);
        CHECK(t.node_count() == 0);  // node slots are released with their last session
    }
}

TEST_CASE("relay table: each side is answered via the socket its own frames arrive on") {
    relay_session_table t(roomy());
    auto a = relay_at("10.0.0.1:1000"), b = relay_at("10.0.0.2:2000");
    REQUIRE(t.bind(1, nid(1), nid(2), a, t_start, 0));  // A's request came in on socket 0
    REQUIRE(t.bind(1, nid(2), nid(1), b, t_start, 1));  // B's on socket 1
    uint16_t via = 99;
    REQUIRE(t.route(1, a, 10, t_start, 0, &via));
    CHECK(via == 1);
    REQUIRE(t.route(1, b, 10, t_start, 1, &via));
    CHECK(via == 0);
    // B's frames now arrive elsewhere (another relay address): A's frames follow.
    REQUIRE(t.route(1, b, 10, t_start, 3, &via));
    REQUIRE(t.route(1, a, 10, t_start, 0, &via));
    CHECK(via == 3);
    // Without tags (the defaults) the caller learns nothing.
    REQUIRE(t.bind(2, nid(3), nid(4), relay_at("10.0.0.3:1"), t_start));
    REQUIRE(t.bind(2, nid(4), nid(3), relay_at("10.0.0.4:1"), t_start));
    REQUIRE(t.route(2, relay_at("10.0.0.3:1"), 10, t_start, relay_session_table::no_via, &via));
    CHECK(via == relay_session_table::no_via);
}

TEST_CASE("relay table: idle expiry, lazily on route and by sweep") {
    auto l = roomy();
    relay_session_table t(l);
    auto a = relay_at("10.0.0.1:1000"), b = relay_at("10.0.0.2:2000");
    REQUIRE(t.bind(1, nid(1), nid(2), a, t_start));
    REQUIRE(t.bind(1, nid(2), nid(1), b, t_start));
    REQUIRE(t.bind(2, nid(1), nid(3), a, t_start));  // half-open sessions expire too
    CHECK(t.next_expiry(t_start) == t_start + l.idle_timeout_ms + 1);

    // Traffic keeps session 1 alive.
    REQUIRE(t.route(1, a, 10, t_start + 9'000));
    CHECK(t.expire(t_start + l.idle_timeout_ms + 1) == 1);  // only session 2
    CHECK(t.size() == 1);
    CHECK(t.next_expiry(t_start + 10'001) == t_start + 9'000 + l.idle_timeout_ms + 1);
    REQUIRE(t.route(1, b, 10, t_start + 9'000 + l.idle_timeout_ms));  // exactly at the limit: alive

    // Past the timeout without a sweep: the next frame finds it expired and removes it.
    uint64_t late = t_start + 9'000 + 2 * l.idle_timeout_ms + 1;
    CHECK(t.route(1, a, 10, late) == nullptr);
    CHECK(t.drops(relay_drop::expired) == 1);
    CHECK(t.size() == 0);
    CHECK(t.route(1, a, 10, late) == nullptr);
    CHECK(t.drops(relay_drop::unknown_session) == 1);
    CHECK(t.next_expiry(late) == UINT64_MAX);
}

TEST_CASE("relay table: an idle session is kept while both nodes are heard at their addresses") {
    auto l = roomy();
    l.keep_ms = 25'000;
    relay_session_table t(l);
    auto a = relay_at("10.0.0.1:1000"), b = relay_at("10.0.0.2:2000");
    REQUIRE(t.bind(1, nid(1), nid(2), a, t_start));
    REQUIRE(t.bind(1, nid(2), nid(1), b, t_start));
    const uint64_t idle_at = t_start + l.idle_timeout_ms + 1;  // inactive from here on

    // Nobody heard: expires as before.
    CHECK(t.next_expiry(t_start) == idle_at);
    CHECK_FALSE(t.kept(1, idle_at));
    // Node 2 heard from another port only (a NAT rebound it): its side is not kept by that.
    t.heard(nid(1), a, t_start + 5'000);
    t.heard(nid(2), relay_at("10.0.0.2:2001"), t_start + 5'000);
    // Both at their bound addresses (node 2 heard at two ports: both remembered): kept until
    // the first of them is no longer heard.
    t.heard(nid(2), b, t_start + 6'000);
    CHECK(t.kept(1, idle_at));
    CHECK(t.next_expiry(t_start) == t_start + 5'000 + l.keep_ms);
    CHECK(t.expire(idle_at + 1'000) == 0);
    // A node heard again (its next PING) keeps it longer; frames flow at once when traffic
    // resumes, long after the idle timeout.
    const uint64_t later = t_start + 20'000;
    t.heard(nid(1), a, later);
    t.heard(nid(2), b, later);
    REQUIRE(t.route(1, a, 10, later + 20'000) != nullptr);
    CHECK(*t.route(1, b, 10, later + 20'000) == a);
    CHECK(t.drops(relay_drop::expired) == 0);
    CHECK_FALSE(t.kept(1, later + 20'000));  // active again

    // Frames stop and both go quiet: the session goes once both keeps ran out.
    const uint64_t last = later + 20'000;
    CHECK(t.next_expiry(last) == std::max(last + l.idle_timeout_ms + 1, later + l.keep_ms));
    const uint64_t gone = std::max(last + l.idle_timeout_ms + 1, later + l.keep_ms);
    CHECK(t.expire(gone - 1) == 0);
    CHECK(t.expire(gone) == 1);
    CHECK(t.size() == 0);
    // A stranger heard: no state.
    t.heard(nid(7), relay_at("10.0.0.7:7"), last);
    CHECK(t.node_count() == 0);
}

TEST_CASE("relay table: an idle session whose one node went quiet keeps the other's side") {
    auto l = roomy();
    l.keep_ms = 25'000;
    relay_session_table t(l);
    auto a = relay_at("10.0.0.1:1000"), b = relay_at("10.0.0.2:2000");
    // Node 2 requested first (side a is node 2's), so the heard node 1 is side b: the table
    // must keep the heard side whichever it is.
    REQUIRE(t.bind(1, nid(2), nid(1), b, t_start));
    REQUIRE(t.bind(1, nid(1), nid(2), a, t_start));
    const uint64_t idle_at = t_start + l.idle_timeout_ms + 1;
    // Node 1 keeps PINGing; node 2 is offline (a reboot, its uplink down).
    for (uint64_t at = t_start; at <= t_start + 200'000; at += 10'000) t.heard(nid(1), a, at);
    CHECK(t.kept(1, idle_at));
    CHECK(t.expire(idle_at) == 0);
    CHECK(t.node_sessions(nid(2)) == 0);  // node 2's side unbound
    CHECK(t.node_sessions(nid(1)) == 1);
    CHECK(t.size() == 1);
    // Half-open now: node 1's frames are refused as such, nothing goes to node 2's old address.
    CHECK(t.route(1, a, 10, idle_at + 1) == nullptr);
    CHECK(t.drops(relay_drop::not_established) == 1);
    CHECK(t.route(1, b, 10, idle_at + 1) == nullptr);
    CHECK(t.drops(relay_drop::wrong_source) == 1);
    // Node 2 comes back (a new NAT mapping) and requests again: established at once, although
    // node 1, idle, asked for nothing.
    auto b2 = relay_at("10.0.0.2:2002");
    REQUIRE(t.bind(1, nid(2), nid(1), b2, t_start + 190'000).value() ==
            relay_bind_state::established);
    REQUIRE(t.route(1, b2, 10, t_start + 190'001) != nullptr);
    CHECK(*t.route(1, b2, 10, t_start + 190'001) == a);
    CHECK(*t.route(1, a, 10, t_start + 190'002) == b2);
    // Node 1 gone quiet too, no frames: the session goes with its last heard side.
    const uint64_t gone = t_start + 200'000 + l.keep_ms;
    CHECK(t.expire(t_start + 190'002 + l.idle_timeout_ms + 1) == 0);
    CHECK(t.expire(std::max(gone, t_start + 190'002 + l.idle_timeout_ms + 1)) == 1);
    CHECK(t.size() == 0);
    CHECK(t.node_count() == 0);
}

TEST_CASE("relay table: a request refused for its node limits evicts nothing") {
    auto l = roomy();
    l.max_sessions = 1;
    l.max_sessions_per_node = 1;
    l.keep_ms = 1'000'000;
    relay_session_table t(l);
    REQUIRE(t.bind(1, nid(1), nid(2), relay_at("10.0.0.1:1"), t_start));
    REQUIRE(t.bind(1, nid(2), nid(1), relay_at("10.0.0.2:1"), t_start));
    t.heard(nid(1), relay_at("10.0.0.1:1"), t_start + 200'000);
    t.heard(nid(2), relay_at("10.0.0.2:1"), t_start + 200'000);
    const uint64_t now = t_start + 300'000;
    REQUIRE(t.kept(1, now));
    // Node 1 is at its per-node limit: refused before anything is evicted.
    CHECK(t.bind(2, nid(1), nid(3), relay_at("10.0.0.1:1"), now).err().is(errc::exhausted));
    CHECK(t.evicted_kept() == 0);
    CHECK(t.size() == 1);
    CHECK(t.node_sessions(nid(1)) == 1);
}

TEST_CASE("relay table: keep_ms 0 keeps nothing; a full table evicts the oldest kept session") {
    SUBCASE("keep_ms 0") {
        auto l = roomy();
        l.keep_ms = 0;
        relay_session_table t(l);
        auto a = relay_at("10.0.0.1:1000"), b = relay_at("10.0.0.2:2000");
        REQUIRE(t.bind(1, nid(1), nid(2), a, t_start));
        REQUIRE(t.bind(1, nid(2), nid(1), b, t_start));
        t.heard(nid(1), a, t_start + l.idle_timeout_ms);
        t.heard(nid(2), b, t_start + l.idle_timeout_ms);
        CHECK(t.expire(t_start + l.idle_timeout_ms + 1) == 1);
    }
    SUBCASE("eviction") {
        auto l = roomy();
        l.max_sessions = 3;
        l.keep_ms = 1'000'000;
        relay_session_table t(l);
        // Three established sessions between node 1 and nodes 2, 3, 4, all heard.
        for (uint8_t i = 2; i <= 4; ++i) {
            REQUIRE(t.bind(i, nid(1), nid(i), relay_at("10.0.0.1:1"), t_start + i));
            std::string peer = "10.0.0." + std::to_string(i) + ":1";
            REQUIRE(t.bind(i, nid(i), nid(1), relay_at(peer.c_str()), t_start + i));
            t.heard(nid(i), relay_at(peer.c_str()), t_start + 50'000);
        }
        t.heard(nid(1), relay_at("10.0.0.1:1"), t_start + 50'000);
        // Session 3 carries traffic later; 2 and 4 stay idle (2 idle longest).
        REQUIRE(t.route(3, relay_at("10.0.0.1:1"), 10, t_start + 55'000));
        // While none is past the idle timeout, a new session does not fit.
        CHECK(t.bind(9, nid(5), nid(6), relay_at("10.0.0.5:1"), t_start + 5'000)
                  .err()
                  .is(errc::exhausted));
        CHECK(t.evicted_kept() == 0);
        const uint64_t now = t_start + 60'000;
        CHECK(t.kept(2, now));
        CHECK(t.kept(4, now));
        CHECK_FALSE(t.kept(3, now));  // active within idle_timeout
        REQUIRE(t.bind(9, nid(5), nid(6), relay_at("10.0.0.5:1"), now));
        CHECK(t.evicted_kept() == 1);
        relay_session_info info;
        CHECK_FALSE(t.info(2, info));  // the oldest went
        CHECK(t.info(4, info));
        CHECK(t.info(3, info));
        REQUIRE(t.bind(10, nid(5), nid(7), relay_at("10.0.0.5:1"), now));
        CHECK(t.evicted_kept() == 2);
        CHECK_FALSE(t.info(4, info));
        // Only the active one is left besides the new ones: nothing more to evict.
        CHECK(t.bind(11, nid(5), nid(8), relay_at("10.0.0.5:1"), now).err().is(errc::exhausted));
    }
}

TEST_CASE("relay table: per-node token buckets (packets/s and bytes/s)") {
    auto l = roomy();
    l.node_packets_per_s = 1000;  // bucket 200 packets at burst_ms = 200
    l.node_bytes_per_s = 10'000'000;
    relay_session_table t(l);
    auto a = relay_at("10.0.0.1:1000"), b = relay_at("10.0.0.2:2000");
    REQUIRE(t.bind(1, nid(1), nid(2), a, t_start));
    REQUIRE(t.bind(1, nid(2), nid(1), b, t_start));

    int passed = 0;
    for (int i = 0; i < 300; ++i) passed += t.route(1, a, 100, t_start) != nullptr;
    CHECK(passed == 200);
    CHECK(t.drops(relay_drop::rate_limited_packets) == 100);
    // The limit is per sending node: B still has its full bucket.
    CHECK(t.route(1, b, 100, t_start) != nullptr);
    // 10 ms later A has earned 10 packets.
    passed = 0;
    for (int i = 0; i < 50; ++i) passed += t.route(1, a, 100, t_start + 10) != nullptr;
    CHECK(passed == 10);
    // After a long pause the bucket is full again, not more.
    passed = 0;
    for (int i = 0; i < 300; ++i) passed += t.route(1, a, 100, t_start + 5'000) != nullptr;
    CHECK(passed == 200);

    SUBCASE("bytes") {
        auto lb = roomy();
        lb.node_bytes_per_s = 1'000'000;  // bucket 200 kB; at least one 64 KiB frame
        relay_session_table tb(lb);
        REQUIRE(tb.bind(1, nid(1), nid(2), a, t_start));
        REQUIRE(tb.bind(1, nid(2), nid(1), b, t_start));
        passed = 0;
        for (int i = 0; i < 300; ++i) passed += tb.route(1, a, 1000, t_start) != nullptr;
        CHECK(passed == 200);
        CHECK(tb.drops(relay_drop::rate_limited_bytes) == 100);
        CHECK(tb.drops(relay_drop::rate_limited_packets) == 0);
        CHECK(tb.route(1, a, 1000, t_start + 1) != nullptr);  // 1 ms earns 1000 bytes
        CHECK(tb.route(1, a, 1000, t_start + 1) == nullptr);
    }
    SUBCASE("a node's sessions share its bucket") {
        REQUIRE(t.bind(2, nid(1), nid(3), a, t_start + 5'000));
        REQUIRE(t.bind(2, nid(3), nid(1), relay_at("10.0.0.3:3000"), t_start + 5'000));
        CHECK(t.route(2, a, 100, t_start + 5'000) == nullptr);
    }
}

TEST_CASE("relay table: capacity limits") {
    auto l = roomy();
    l.max_sessions = 5;
    l.max_nodes = 3;
    l.max_sessions_per_node = 2;
    relay_session_table t(l);
    auto a = relay_at("10.0.0.1:1000");
    REQUIRE(t.bind(1, nid(1), nid(2), a, t_start));
    REQUIRE(t.bind(2, nid(1), nid(3), a, t_start));
    auto r = t.bind(3, nid(1), nid(4), a, t_start);
    REQUIRE_FALSE(r);
    CHECK(r.err().is(errc::exhausted));  // per node
    CHECK(t.refusals(relay_refusal::node_limit) == 1);
    CHECK(t.size() == 2);
    // Half-open sessions naming a victim as "to" do not use up the victim's quota.
    CHECK(t.node_sessions(nid(2)) == 0);

    REQUIRE(t.bind(3, nid(2), nid(5), relay_at("10.0.0.2:1"), t_start));
    REQUIRE(t.bind(4, nid(3), nid(5), relay_at("10.0.0.3:1"), t_start));
    CHECK(t.node_count() == 3);
    // A fourth distinct node does not fit the node table.
    CHECK(t.bind(5, nid(6), nid(5), relay_at("10.0.0.6:1"), t_start).err().is(errc::exhausted));
    CHECK(t.refusals(relay_refusal::node_table) == 1);
    REQUIRE(t.bind(5, nid(3), nid(5), relay_at("10.0.0.3:1"), t_start));
    CHECK(t.size() == 5);
    CHECK(t.bind(6, nid(2), nid(5), relay_at("10.0.0.2:1"), t_start)
              .err()
              .is(errc::exhausted));  // table
    CHECK(t.refusals(relay_refusal::table_full) == 1);
    CHECK(t.refusals(relay_refusal::node_limit) == 1);
    CHECK(std::string(to_string(relay_refusal::table_full)) == "table_full");
    // Binding session 1's other side as node 2 uses node 2's existing slot.
    REQUIRE(t.bind(1, nid(2), nid(1), relay_at("10.0.0.2:2"), t_start));
    CHECK(t.node_sessions(nid(2)) == 2);
    // Everything freed: back to empty, reusable.
    for (uint64_t id = 1; id <= 5; ++id) CHECK(t.remove(id));
    CHECK(t.size() == 0);
    CHECK(t.node_count() == 0);
    for (uint64_t id = 100; id < 105; ++id) {
        REQUIRE(t.bind(id, nid(uint8_t(id % 3 + 1)), nid(9), relay_at("10.0.0.9:9"), t_start));
    }
    CHECK(t.size() == 5);
}

TEST_CASE("relay table: many sessions, lookups stay correct under churn") {
    auto l = roomy();
    l.max_sessions = 1000;
    l.max_nodes = 2000;
    l.max_sessions_per_node = 1;
    relay_session_table t(l);
    std::mt19937_64 rng(1);
    std::map<uint64_t, std::pair<relay_addr, relay_addr>> live;
    for (int round = 0; round < 5000; ++round) {
        uint64_t id = rng();
        if (live.size() < 900) {
            auto n = uint8_t(live.size() % 250);
            std::array<uint8_t, 32> ba{}, bb{};
            std::memcpy(ba.data(), &id, 8);
            uint64_t other = ~id;  // node keys are the first 8 bytes: keep them distinct
            std::memcpy(bb.data(), &other, 8);
            relay_addr a = relay_at(("10.1.0." + std::to_string(n) + ":1").c_str());
            relay_addr b = relay_at(("10.2.0." + std::to_string(n) + ":2").c_str());
            a.port = uint16_t(round + 1);
            REQUIRE(t.bind(id, node_id(ba), node_id(bb), a, t_start));
            REQUIRE(t.bind(id, node_id(bb), node_id(ba), b, t_start));
            live[id] = {a, b};
        }
        if (rng() % 2) {
            auto it = live.begin();
            std::advance(it, rng() % live.size());
            CHECK(t.remove(it->first));
            live.erase(it);
        }
    }
    CHECK(t.size() == live.size());
    for (auto& [id, ab] : live) {
        const relay_addr* to = t.route(id, ab.first, 10, t_start);
        REQUIRE(to != nullptr);
        CHECK(*to == ab.second);
    }
}

TEST_CASE("peek_relay_data_session agrees with decode_relay_data") {
    std::vector<uint8_t> frame(relay_data_header_size + 5, 0xab);
    write_relay_data_header(0x0102030405060708ull, frame.data());
    CHECK(peek_relay_data_session(frame) == 0x0102030405060708ull);
    CHECK(decode_relay_data(frame).value().session_id == 0x0102030405060708ull);
    std::span<const uint8_t> header_only(frame.data(), relay_data_header_size);
    CHECK_FALSE(peek_relay_data_session(header_only).has_value());
    frame[3] = 0x03;  // a control type
    CHECK_FALSE(peek_relay_data_session(frame).has_value());
}
