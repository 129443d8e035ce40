// The node core's parts on their own: the pure relay ranking, the probe tracker, the pair hashes,
// learned_via names, the cookie jar's retries, and the discovery entry of node_core (records and
// endpoints from a source become peers, path candidates and rendezvous points; withdrawn ones stop
// being probed).
#include <doctest/doctest.h>
#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "meshd/core/cookie_jar.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd/core/probe_tracker.hpp"
#include "meshd/core/relay_election.hpp"
#include "meshd/core/windowed_min.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;
using meshd_test::identity;
using meshd_test::psk;
using meshd_test::record;
using meshd_test::sealer;
using meshd_test::t0;

namespace {

node_id id_of(uint8_t n) {
    return identity(n).id();
}

std::vector<node_id> ids(const relay_ranking& r) {
    std::vector<node_id> v;
    for (const auto& c : r.warm) v.push_back(c.id);
    return v;
}

}  // namespace

TEST_CASE("rank_relays: equally good relays ordered by the pair's hash, then by score") {
    election_params p;  // warm 2, spread max(2 ms, 10 %), switch max(5 ms, 20 %)
    std::vector<relay_candidate> c = {
        {id_of(1), 10, 50}, {id_of(2), 11, 10}, {id_of(3), 30, 0}, {id_of(4), 12.5, 5}};
    auto r = rank_relays(c, std::nullopt, p);
    // 10, 11 are within 2 ms of the best: by hash (2 before 1); 12.5 and 30 are not.
    CHECK(ids(r) == std::vector<node_id>{id_of(2), id_of(1)});
    CHECK(r.use == 0);
    CHECK(r.current_score == -1);

    p.warm_relays = 4;
    r = rank_relays(c, std::nullopt, p);
    CHECK(ids(r) == std::vector<node_id>{id_of(2), id_of(1), id_of(4), id_of(3)});

    // A wider spread (10 % of 100 ms = 10 ms) puts all within it in hash order.
    std::vector<relay_candidate> slow = {
        {id_of(1), 100, 3}, {id_of(2), 108, 1}, {id_of(3), 111, 0}};
    r = rank_relays(slow, std::nullopt, p);
    CHECK(ids(r) == std::vector<node_id>{id_of(2), id_of(1), id_of(3)});

    CHECK(rank_relays({}, id_of(1), p).warm.empty());
}

TEST_CASE("rank_relays: hysteresis keeps the relay in use unless clearly beaten") {
    election_params p;
    // In use: 14 ms; the best is 10 ms; margin max(5, 2.8) = 5: 10 + 5 < 14 is false, stay.
    auto r = rank_relays({{id_of(1), 10, 1}, {id_of(2), 14, 0}}, id_of(2), p);
    REQUIRE(r.warm.size() == 2);
    CHECK(r.warm[r.use].id == id_of(2));
    CHECK(r.current_score == 14);
    // 16 ms: 10 + 5 < 16, switch to the best.
    r = rank_relays({{id_of(1), 10, 1}, {id_of(2), 16, 0}}, id_of(2), p);
    CHECK(r.warm[r.use].id == id_of(1));
    CHECK(r.current_score == 16);
    // The relay in use fell out of the warm set: its score is still reported, the best is used.
    r = rank_relays({{id_of(1), 10, 1}, {id_of(2), 11, 2}, {id_of(3), 40, 0}}, id_of(3), p);
    CHECK(ids(r) == std::vector<node_id>{id_of(1), id_of(2)});
    CHECK(r.use == 0);
    CHECK(r.current_score == 40);
    // A relative margin for slow relays: 20 % of 100 = 20 ms.
    r = rank_relays({{id_of(1), 50, 1}, {id_of(2), 100, 0}}, id_of(2), p);
    CHECK(r.warm[r.use].id == id_of(1));
    r = rank_relays({{id_of(1), 85, 1}, {id_of(2), 100, 0}}, id_of(2), p);
    CHECK(r.warm[r.use].id == id_of(2));
}

TEST_CASE("relay pair hashes: both ends agree, relays differ, session ids are never 0") {
    auto a = id_of(1), b = id_of(2), r1 = id_of(3), r2 = id_of(4);
    CHECK(relay_session_id(a, b, r1) == relay_session_id(b, a, r1));
    CHECK(relay_rendezvous_score(a, b, r1) == relay_rendezvous_score(b, a, r1));
    CHECK(relay_session_id(a, b, r1) != relay_session_id(a, b, r2));
    CHECK(relay_rendezvous_score(a, b, r1) != relay_session_id(a, b, r1));
    CHECK(relay_session_id(a, b, r1) != 0);
    CHECK(node_core::session_id_for(a, b, r1) == relay_session_id(a, b, r1));
}

TEST_CASE("probe_tracker: answers, timeouts counted by kind, stalls forgotten uncounted") {
    probe_tracker t;
    const auto ep1 = mw::wg_endpoint::parse("192.0.2.1:51821").value();
    const auto ep2 = mw::wg_endpoint::parse("192.0.2.2:51821").value();
    auto at = [](probe p, const mw::wg_endpoint& ep, uint64_t session = 0) {
        p.ep = ep;
        p.session_id = session;
        return p;
    };
    const uint64_t s1 = 0x1111, s2 = 0x2222, s3 = 0x3333, s4 = 0x4444;
    REQUIRE(t.add(s1, at(probe{probe_kind::relay}, ep1), 1000));
    REQUIRE(t.add(s2, at(probe{probe_kind::direct, id_of(1), 3}, ep2), 1500));
    REQUIRE(t.add(s3, at(probe{probe_kind::inband, id_of(2)}, ep1, 99), 2000));
    probe u{probe_kind::user, id_of(1)};
    u.token = 77;
    REQUIRE(t.add(s4, at(u, ep2), 2500));
    CHECK_FALSE(t.add(s4, at(u, ep2), 2500));  // an id in flight is not reused
    CHECK(t.in_flight() == 4);

    auto got = t.take(s2, ep2, 0, id_of(1));
    REQUIRE(got);
    CHECK(got->kind == probe_kind::direct);
    CHECK(got->peer == id_of(1));
    CHECK(got->index == 3);
    CHECK(got->sent_ms == 1500);
    CHECK_FALSE(t.take(s2, ep2, 0, id_of(1)));   // answered once
    CHECK_FALSE(t.take(999, ep2, 0, id_of(1)));  // not ours
    CHECK(t.unknown() == 2);

    // At 4000 with a 3000 ms timeout: nothing lost yet; the oldest times out at 4000.
    CHECK(t.expire(3999, 3000) == 4000);
    CHECK(t.expire(4000, 3000) == 5000);  // the relay probe is lost
    CHECK(t.losses().relay == 1);
    CHECK(t.in_flight() == 2);
    CHECK_FALSE(t.take(s1, ep1, 0, id_of(5)));

    // A stall: probes sent up to the missed deadline are forgotten, not counted.
    CHECK(t.forget_sent_until(2000) == 1);
    CHECK(t.in_flight() == 1);
    CHECK(t.expire(10000, 3000) == UINT64_MAX);
    CHECK(t.losses().inband == 0);
    CHECK(t.losses().user == 1);
    CHECK(t.losses().direct == 0);
}

TEST_CASE("probe_tracker: expiry goes by send time whatever the ids, skipping answered probes") {
    // expire() pops probes in the order they were added (random ids, so not the id order; `now`
    // never goes back), skipping the answered ones and an id answered and then taken again by a
    // later probe.
    probe_tracker t;
    const auto ep = mw::wg_endpoint::parse("192.0.2.1:51821").value();
    std::mt19937_64 rng(7);
    std::vector<uint64_t> ids;
    for (uint64_t i = 0; i < 1000; ++i) {
        probe p{probe_kind::direct};
        p.ep = ep;
        ids.push_back(rng() | 1);
        REQUIRE(t.add(ids.back(), p, 1000 + i));  // one a millisecond from 1000
    }
    size_t answered = 0;
    for (size_t i = 0; i < ids.size(); i += 2) answered += t.take(ids[i], ep, 0, id_of(1)) ? 1 : 0;
    CHECK(answered == 500);
    // ids[0] answered, then reused at 2000 by another probe: that one times out at 5000.
    probe again{probe_kind::relay};
    again.ep = ep;
    REQUIRE(t.add(ids[0], again, 2000));
    CHECK(t.expire(3999, 3000) == 4001);  // the oldest unanswered: ids[1], sent at 1001
    CHECK(t.losses().direct == 0);
    // At 4500: the unanswered of 1001..1500 (250).
    CHECK(t.expire(4500, 3000) == 4501);
    CHECK(t.losses().direct == 250);
    CHECK(t.in_flight() == 251);
    CHECK(t.expire(4999, 3000) == 5000);
    CHECK(t.losses().direct == 500);
    CHECK(t.losses().relay == 0);
    CHECK(t.expire(5000, 3000) == UINT64_MAX);
    CHECK(t.losses().relay == 1);
    CHECK(t.in_flight() == 0);
}

TEST_CASE("probe_tracker: a PONG counts only from the probed address, session and node") {
    // v1 credited any PONG carrying a pending sequence number (a counter): forged PONGs moved a
    // pair to a black-holed direct path and relabelled a relay's identity.
    probe_tracker t;
    const auto probed = mw::wg_endpoint::parse("192.0.2.1:51821").value();
    const auto other = mw::wg_endpoint::parse("192.0.2.9:51821").value();
    probe p{probe_kind::direct, id_of(1), 0};
    p.ep = probed;
    REQUIRE(t.add(77, p, 1000));
    CHECK_FALSE(t.take(77, other, 0, id_of(1)));   // another address
    CHECK_FALSE(t.take(77, probed, 5, id_of(1)));  // through a relay session
    CHECK_FALSE(t.take(77, probed, 0, id_of(2)));  // another node
    CHECK(t.misdirected() == 3);
    CHECK(t.in_flight() == 1);  // still waiting for the real answer
    CHECK(t.take(77, probed, 0, id_of(1)));
    // A relay probed before we knew its node: any node at that address may answer.
    probe r{probe_kind::relay};
    r.ep = probed;
    REQUIRE(t.add(78, r, 1000));
    CHECK_FALSE(t.take(78, other, 0, id_of(3)));
    CHECK(t.take(78, probed, 0, id_of(3)));
}

TEST_CASE("learned_via: names in a fixed order") {
    learned_via_set s = 0;
    s = s | learned_via::mdns;
    s = s | learned_via::relay;
    s = s | learned_via::cache;
    CHECK(learned_via_names(s) == std::vector<std::string>{"relay", "mdns", "cache"});
    CHECK(learned_via_names(0).empty());
    CHECK(std::string(to_string(learned_via::kubernetes)) == "kubernetes");
}

namespace {

struct core_fixture {
    node_core core;

    explicit core_fixture(node_core_config cfg)
        : core(cfg, identity(50), sealer(), meshd_test::test_rng()) {}

    static node_core_config config() {
        node_core_config c;
        c.node_name = "me";
        c.endpoints = {mw::wg_endpoint::parse("192.168.1.50:51821").value()};
        return c;
    }

    // The message types the core sent to `to` since the last call.
    std::vector<msg_type> sent_to(const mw::wg_endpoint& to, uint64_t) {
        std::vector<msg_type> v;
        for (const auto& d : core.take_outgoing()) {
            if (!(d.to == to)) continue;
            // Opened, not received: each is for its own recipient, whose keys we do not hold.
            auto m = open_message(sealer(), d.bytes);
            REQUIRE(m);
            v.push_back(m->message.type());
        }
        return v;
    }
};

bool has(const std::vector<msg_type>& v, msg_type t) {
    return std::find(v.begin(), v.end(), t) != v.end();
}

}  // namespace

TEST_CASE("discovery entry: a record becomes a peer, learned via its source") {
    core_fixture f(core_fixture::config());
    uint64_t now = t0;
    f.core.start(now);
    auto rec = record(1);
    CHECK(f.core.offer_record(rec, learned_via::cache, now).value() == put_outcome::inserted);
    CHECK(f.core.offer_record(rec, learned_via::mdns, now).value() == put_outcome::duplicate);
    CHECK(f.core.offer_record(f.core.self_record(), learned_via::cache, now)
              .err()
              .is(mw::errc::invalid_argument));
    auto forged = rec;
    forged.name = "someone-else";
    CHECK_FALSE(f.core.offer_record(forged, learned_via::cache, now));
    f.core.tick(now);
    auto peers = f.core.peers();
    REQUIRE(peers.size() == 1);
    CHECK(peers[0].id == rec.id());
    CHECK(learned_via_names(peers[0].sources) == std::vector<std::string>{"mdns", "cache"});
    // Its record's addresses are probed.
    auto to = mw::wg_endpoint::parse("192.168.1.1:51821").value();
    CHECK(has(f.sent_to(to, now), msg_type::ping));
}

TEST_CASE("discovery entry: an endpoint of a known node is probed until withdrawn") {
    core_fixture f(core_fixture::config());
    uint64_t now = t0;
    f.core.start(now);
    auto extra = mw::wg_endpoint::parse("10.9.0.1:51821").value();
    // Offered before the record arrives: taken when the peer appears.
    f.core.offer_endpoint(id_of(1), extra, learned_via::mdns, now);
    REQUIRE(f.core.offer_record(record(1), learned_via::cache, now));
    f.core.tick(now);
    CHECK(has(f.sent_to(extra, now), msg_type::ping));
    now += 1000;  // the next probe round (no path yet: every ping_interval)
    f.core.tick(now);
    CHECK(has(f.sent_to(extra, now), msg_type::ping));
    f.core.withdraw_endpoints(learned_via::mdns, now);
    for (int i = 0; i < 3; ++i) {
        now += 1000;
        f.core.tick(now);
        CHECK(f.sent_to(extra, now).empty());
    }
    // The record's own addresses are still probed.
    auto rec_ep = mw::wg_endpoint::parse("192.168.1.1:51821").value();
    now += 1000;
    f.core.tick(now);
    CHECK(has(f.sent_to(rec_ep, now), msg_type::ping));
}

TEST_CASE("discovery entry: an id-less endpoint is a rendezvous without relayNodes") {
    core_fixture f(core_fixture::config());
    uint64_t now = t0;
    f.core.start(now);
    auto rv = mw::wg_endpoint::parse("203.0.113.7:51821").value();
    f.core.offer_endpoint(std::nullopt, rv, learned_via::mdns, now);
    f.core.tick(now);
    auto relays = f.core.relays();
    REQUIRE(relays.size() == 1);
    CHECK(relays[0].origin == relay_origin::bootstrap);
    // A PING to no one in particular first: a HELLO names its recipient, so it waits for the
    // PONG that tells which node answers there.
    std::optional<control_message> ping;
    for (const auto& d : f.core.take_outgoing()) {
        if (!(d.to == rv)) continue;
        auto m = open_message(sealer(), d.bytes).value().message;
        CHECK(m.type() != msg_type::hello);
        if (m.type() == msg_type::ping) ping = m;
    }
    REQUIRE(ping);
    CHECK(ping->recipient.is_zero());
    auto rv_id = identity(60);
    control_channel rv_end(rv_id, sealer(), 7);
    rv_end.set_key_source([](const node_id&) { return identity(50).wg_public_key(); });
    pong_msg pong;
    pong.request_id = std::get<ping_msg>(ping->body).request_id;
    pong.cookie.fill(0xcc);
    pong.observed = mw::wg_endpoint::parse("192.168.1.50:51821").value();
    aead_nonce n{};
    f.core.on_datagram(rv_end.send(pong, identity(50).id(), n).value(), rv, 0, 0, now);
    // Anti-entropy first (its DIGEST, with the PONG's cookie); this rendezvous never answers it
    // (an older node), so after the grace it is asked with HELLO as before.
    const uint64_t t_pong = now;
    bool digest = false, hello = false;
    uint64_t hello_at = 0;
    for (int i = 0; i < 1000 && !hello; ++i) {
        f.core.tick(now);
        for (const auto& d : f.core.take_outgoing()) {
            if (!(d.to == rv)) continue;
            auto m = rv_end.receive(d.bytes, now);
            if (m && m->type() == msg_type::ae_digest) {
                digest = true;
                CHECK(std::get<ae_digest_msg>(m->body).cookie == pong.cookie);
            }
            if (m && m->type() == msg_type::hello) {
                hello = true;
                hello_at = now;
                CHECK(std::get<hello_msg>(m->body).cookie == pong.cookie);  // the PONG's cookie
            }
        }
        if (!hello) now += 20;
    }
    CHECK(digest);
    CHECK(hello);
    CHECK(hello_at >= t_pong + 7000);
    CHECK(f.core.relays()[0].id == rv_id.id());
    f.core.withdraw_endpoints(learned_via::mdns, now);
    now += 20;
    f.core.tick(now);
    CHECK(f.core.relays().empty());

    // dht.bootstrap goes through the same entry: set live, replaced, cleared.
    auto b1 = mw::ip_address::parse("203.0.113.8").value();
    f.core.set_bootstrap({b1}, now);
    REQUIRE(f.core.relays().size() == 1);
    CHECK(f.core.relays()[0].addresses == std::vector<mw::ip_address>{b1});
    f.core.set_bootstrap({}, now);
    CHECK(f.core.relays().empty());
}

TEST_CASE("membership tells relay_directory: a serving node's record makes it a relay") {
    core_fixture f(core_fixture::config());
    uint64_t now = t0;
    f.core.start(now);
    auto rec = record(2);
    rec.endpoints = {mw::wg_endpoint::parse("198.51.100.2:51821").value()};
    rec.flags = peer_record::flag_relay;
    rec.seq = 2;
    REQUIRE(rec.sign(identity(2)));
    REQUIRE(f.core.offer_record(rec, learned_via::cache, now));
    f.core.tick(now);
    auto relays = f.core.relays();
    REQUIRE(relays.size() == 1);
    CHECK(relays[0].origin == relay_origin::discovered);
    CHECK(relays[0].id == rec.id());
    // It stops serving (a newer record without the flag): no longer a relay.
    rec.flags = 0;
    rec.seq = 3;
    REQUIRE(rec.sign(identity(2)));
    REQUIRE(f.core.offer_record(rec, learned_via::cache, now));
    f.core.tick(now + 20);
    CHECK(f.core.relays().empty());
}

TEST_CASE("windowed_min: the minimum of the window; spikes do not count, old minima age out") {
    windowed_min m;
    CHECK(m.empty());
    CHECK(m.update(5, 0, 10000) == 5);
    // Spikes (CPU wait) above the floor leave it alone.
    CHECK(m.update(80, 1000, 10000) == 5);
    CHECK(m.update(40, 2000, 10000) == 5);
    CHECK(m.update(3, 3000, 10000) == 3);  // a new minimum takes over at once
    // The path gets slower: the old floor holds for one window, then the samples since count.
    for (uint64_t t = 4000; t <= 12000; t += 1000)
        CHECK(m.update(20 + (t % 3000) / 1000, t, 10000) == 3);
    double v = 0;
    for (uint64_t t = 13000; t <= 16000; t += 1000) v = m.update(25, t, 10000);
    CHECK(v >= 20);
    CHECK(v <= 25);
    // Nothing within the window: the next sample is the minimum.
    CHECK(m.update(50, 40000, 10000) == 50);
    m.reset();
    CHECK(m.empty());
    CHECK(m.get() == 0);
}

TEST_CASE("node_id: from_hex is the inverse of hex(), either case; anything else is refused") {
    node_id id = id_of(7);
    CHECK(node_id::from_hex(id.hex()) == id);
    std::string up = id.hex();
    for (auto& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    CHECK(node_id::from_hex(up) == id);
    CHECK_FALSE(node_id::from_hex(id.hex().substr(1)));
    CHECK_FALSE(node_id::from_hex(id.hex() + "0"));
    CHECK_FALSE(node_id::from_hex(std::string(63, '0') + "x"));
    CHECK_FALSE(node_id::from_hex(""));
}

// Relays judged by what they carry: our WireGuard tx through the relay vs the rx the peer
// reports in its sealed probes (relay_election.hpp, wg_progress).
TEST_CASE("wg_progress: a stall needs 3 readings of our tx growth the peer did not see") {
    const wg_stall_rule stall{6000, 3, 0};
    wg_progress w;
    w.note_ours(1000, 500, 10'000);  // first reading: the baseline
    w.note_peers(800, 10'000);
    w.restart();  // the relay was taken
    CHECK_FALSE(w.stalled(stall));
    w.note_ours(1200, 500, 12'000);
    w.note_ours(1400, 500, 14'000);
    w.note_peers(800, 17'000);
    CHECK_FALSE(w.stalled(stall));  // two readings only
    w.note_ours(1600, 500, 16'000);
    w.note_peers(800, 17'500);
    CHECK_FALSE(w.stalled(stall));  // the peer looked only 5.5 s after our first growth
    w.note_peers(800, 18'000);
    CHECK(w.stalled(stall));
    // Something of ours arrived: judged afresh.
    w.note_peers(900, 19'000);
    CHECK_FALSE(w.stalled(stall));
    w.note_ours(1800, 500, 20'000);
    w.note_ours(2000, 500, 22'000);
    w.note_ours(2200, 500, 24'000);
    w.note_peers(900, 25'000);
    CHECK_FALSE(w.stalled(stall));
    w.note_peers(900, 26'000);
    CHECK(w.stalled(stall));
    // Idle: no growth of ours, no verdict however long the peer sees nothing.
    wg_progress idle;
    idle.note_ours(100, 0, 1000);
    for (uint64_t t = 3000; t < 60'000; t += 2000) {
        idle.note_ours(100, 0, t);
        idle.note_peers(50, t);
    }
    CHECK_FALSE(idle.stalled(stall));
}

TEST_CASE("wg_progress: on a lossy path, more lost packets; only those the peer could have seen") {
    // Clean or broken paths: three, as before; noisy ones: enough that losing all by chance
    // is below false_stall_probability.
    CHECK(wg_progress::readings_for_loss(0) == 3);
    CHECK(wg_progress::readings_for_loss(0.01) == 3);
    CHECK(wg_progress::readings_for_loss(0.05) == 4);
    CHECK(wg_progress::readings_for_loss(0.19) == 7);
    CHECK(wg_progress::readings_for_loss(0.34) == 11);
    CHECK(wg_progress::readings_for_loss(0.49) == 12);
    CHECK(wg_progress::readings_for_loss(0.6) == 3);
    // The receiving end of a one-way stream: a keepalive every 10 s. The peer's reading 1 s
    // after our third one could not have seen the third packet (900 ms one way): not counted.
    const wg_stall_rule rule{6000, 3, 1200};
    wg_progress w;
    w.note_ours(1000, 0, 1000);
    w.note_peers(500, 1000);
    w.restart();
    uint64_t tx = 1000;
    for (uint64_t t = 11'000; t <= 31'000; t += 10'000) w.note_ours(tx += 32, 0, t);
    w.note_peers(500, 32'000);
    CHECK(w.covered_readings(rule.lag_ms) == 2);
    CHECK_FALSE(w.stalled(rule));
    w.note_peers(500, 32'300);
    CHECK(w.covered_readings(rule.lag_ms) == 3);
    CHECK(w.stalled(rule));
    CHECK_FALSE(w.stalled(wg_stall_rule{6000, 4, 1200}));
    // More readings than the ring holds: the old ones still count.
    wg_progress v;
    v.note_ours(0, 0, 1000);
    v.note_peers(0, 1000);
    for (uint64_t t = 3000; t <= 43'000; t += 2000) v.note_ours(t, 0, t);
    v.note_peers(0, 43'500);
    CHECK(v.growth_readings == 21);
    CHECK(v.covered_readings(1200) == 20);
    CHECK(v.stalled(wg_stall_rule{6000, 12, 1200}));
    // Something of ours arrived: nothing pending.
    v.note_peers(7, 44'000);
    CHECK(v.covered_readings(0) == 0);
    CHECK_FALSE(v.stalled(rule));
}

TEST_CASE("wg_progress: counters that start again hold the verdict for a new handshake") {
    const wg_stall_rule stall{6000, 3, 0};
    wg_progress w;
    w.note_ours(1000, 0, 1000);
    w.note_peers(5000, 1000);
    w.note_peers(10, 2000);  // the peer's WireGuard restarted: our session keys are gone there
    for (uint64_t t = 3000; t <= 20'000; t += 2000) w.note_ours(1000 + t, 0, t);
    w.note_peers(10, 21'000);
    CHECK_FALSE(w.stalled(stall));  // held until 32 s
    w.note_peers(10, 32'000);
    CHECK(w.stalled(stall));
    // Ours restarted: the same hold.
    wg_progress v;
    v.note_ours(5000, 0, 1000);
    v.note_ours(100, 0, 3000);
    v.note_peers(7, 4000);
    for (uint64_t t = 5000; t <= 15'000; t += 2000) v.note_ours(100 + t, 0, t);
    v.note_peers(7, 25'000);
    CHECK_FALSE(v.stalled(stall));
    v.note_peers(7, 33'000);
    CHECK(v.stalled(stall));
}

TEST_CASE(
    "relay_election: an ACCEPT/REJECT counts only for an outstanding request, from its "
    "address") {
    // v1 matched answers by (relay, session id) only, both public: a forged REJECT (from any PSK
    // holder, as the relay) excluded the relay for the pair.
    core_context ctx(node_core_config{}, identity(50), sealer(),
                     [](std::span<uint8_t> out) { std::fill(out.begin(), out.end(), 1); });
    record_store store;
    relay_directory dir(
        ctx, store, [] {}, [] {});
    relay_election el(ctx, dir);
    const auto ep = mw::wg_endpoint::parse("203.0.113.7:51821").value();
    const auto other = mw::wg_endpoint::parse("203.0.113.8:51821").value();
    relayed_pair p;
    relayed_pair::warm_session w;
    w.relay = id_of(7);
    w.session_id = 99;
    w.ep = ep;
    w.request_id = 1234;
    w.prev_request_id = 1000;
    p.warm.push_back(w);
    const uint8_t capacity = static_cast<uint8_t>(reject_reason::capacity);
    CHECK_FALSE(el.on_session_answer(p, "peer", id_of(7), 5555, ep, 99, false, capacity, t0));
    CHECK_FALSE(el.on_session_answer(p, "peer", id_of(7), 0, ep, 99, false, capacity, t0));
    CHECK_FALSE(el.on_session_answer(p, "peer", id_of(7), 1234, other, 99, false, capacity, t0));
    CHECK_FALSE(el.on_session_answer(p, "peer", id_of(8), 1234, ep, 99, false, capacity, t0));
    CHECK_FALSE(el.on_session_answer(p, "peer", id_of(7), 1234, ep, 98, false, capacity, t0));
    REQUIRE(p.warm.size() == 1);
    CHECK(p.excluded.empty());
    CHECK_FALSE(p.warm[0].accepted);
    // The answer to the request before the last refresh still counts.
    CHECK(el.on_session_answer(p, "peer", id_of(7), 1000, ep, 99, true, 0, t0));
    CHECK(p.warm[0].accepted);
    CHECK(el.on_session_answer(p, "peer", id_of(7), 1234, ep, 99, false, capacity, t0));
    CHECK(p.warm.empty());
    CHECK(p.excluded.count(id_of(7)) == 1);
}

TEST_CASE("cookie_jar: a COOKIE_REPLY retries each request that carried another cookie") {
    auto rng = [](std::span<uint8_t> b) { randombytes_buf(b.data(), b.size()); };
    cookie_jar responder(rng), requester(rng);
    const node_id me = id_of(1), relay = id_of(2);
    const auto ep = mw::wg_endpoint::parse("203.0.113.7:51821").value();
    const auto my_src = mw::wg_endpoint::parse("198.51.100.1:40000").value();
    cookie_bytes stale{};
    stale.fill(0x5a);
    requester.store(relay, ep, stale);
    // A HELLO and a session request sent together with the stale cookie (the relay restarted).
    using kind = cookie_jar::request_kind;
    requester.note_request(1, {kind::hello, relay, ep, t0});
    requester.note_request(2, {kind::session, relay, ep, t0});
    const cookie_bytes fresh = responder.make(me, my_src);
    auto a = requester.on_reply(1, relay, ep, fresh, t0 + 5);
    REQUIRE(a);
    CHECK(a->retry);
    CHECK(a->answered.kind == kind::hello);
    CHECK(requester.for_responder(relay, ep) == fresh);
    // The second reply brings the cookie the first one stored: its request still goes again
    // (before, only a cookie new to the jar did, and the session request waited for its retry).
    auto b = requester.on_reply(2, relay, ep, fresh, t0 + 6);
    REQUIRE(b);
    CHECK(b->retry);
    CHECK(b->answered.kind == kind::session);
    CHECK(responder.valid(requester.for_responder(relay, ep), me, my_src));
    // Refused with the cookie it carried: no second try (no ping-pong).
    requester.note_request(3, {kind::session, relay, ep, t0 + 10});
    auto c = requester.on_reply(3, relay, ep, fresh, t0 + 15);
    REQUIRE(c);
    CHECK_FALSE(c->retry);
    // One reply per request; another node, another address, or too late: nothing.
    CHECK_FALSE(requester.on_reply(1, relay, ep, stale, t0 + 20));
    requester.note_request(4, {kind::hello, relay, ep, t0 + 20});
    CHECK_FALSE(requester.on_reply(4, id_of(3), ep, stale, t0 + 21));
    CHECK_FALSE(requester.on_reply(4, relay, mw::wg_endpoint::parse("203.0.113.8:51821").value(),
                                   stale, t0 + 21));
    CHECK_FALSE(requester.on_reply(4, relay, ep, stale, t0 + 21 + cookie_jar::request_ttl_ms));
    CHECK(requester.for_responder(relay, ep) == fresh);  // none of those stored theirs
}
