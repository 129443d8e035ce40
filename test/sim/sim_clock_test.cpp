// Simulation tests of issue 14 item 1 / issue 17 for peer records: nodes whose clocks disagree by
// hours or a year join and stay joined, because a record's lifetime counts from its receipt on
// the receiver's own clock and its seq comes from the boot epoch and a counter, not a clock.
#include <doctest/doctest.h>

#include <cstdio>
#include <map>
#include <string>

#include "test/sim/sim_mesh_fixture.hpp"
#include "test/sim/sim_net.hpp"

using namespace mw;
using namespace mw::sim;
using meshd::path_kind;

TEST_CASE("sim: clocks hours and a year apart; records stay accepted for many lifetimes") {
    std_mesh m(11, false);
    auto& net = m.net;
    const int64_t hour = 3'600'000;
    // Every host's core clock differs: by hours either way, by more than a record's maximum
    // lifetime (26 h), by a year. With an absolute expiry compared against the receiver's
    // clock, every pair but one would refuse or at once expire the other's record.
    const std::map<std::string, int64_t> offset{
        {"relay1", 0},        {"relay2", 3 * hour},        {"lan1a", -5 * hour},
        {"lan1b", 26 * hour}, {"lan2a", -365 * 24 * hour}, {"lan2b", 7 * hour + 1234}};
    const uint64_t lifetime = 60'000;  // short, so that the test spans many lifetimes
    meshd::node_core_config c;
    c.record_lifetime_ms = lifetime;
    auto specs = net.relay_specs();
    for (const auto& n : m.names) {
        net[n].clock_offset_ms = offset.at(n);
        net.start_core(net[n], specs, "sim cluster psk 0123456789", c);
    }
    auto settled = [&] {
        return m.all_know_all() && is_direct(net, "lan1a", "lan1b") &&
               is_direct(net, "lan2a", "lan2b") && m.relayed_live("lan1a", "lan2a") &&
               m.relayed_live("lan1b", "lan2b");
    };
    REQUIRE(net.run_until(settled, 10000));
    MESSAGE("6 nodes with clocks up to a year apart settled after " << net.elapsed_ms() << " ms");
    std::map<std::string, uint64_t> seq0;
    for (const auto& n : m.names) seq0[n] = net[n].core->self_record().seq;

    // Ten lifetimes: every record is re-signed (a newer seq) before it runs out anywhere, so no
    // node ever drops another's record, and no path changes. Counted once the fresh pairs went
    // idle: a relayed pair's data plane changes on its active/idle turns (its keepalive).
    REQUIRE(net.run_until([&] { return m.all_idle(); }, 30000));
    size_t versions = 0;
    for (auto& h : net.hosts()) versions += h->core->dataplane_version();
    for (int i = 0; i < 20; ++i) {
        net.run_for(lifetime / 2);
        for (const auto& a : m.names) {
            const auto peers = net[a].core->peers();
            CHECK(peers.size() == m.names.size() - 1);
            for (const auto& pv : peers) {
                REQUIRE(pv.record_expires_in_ms);
                CHECK(*pv.record_expires_in_ms <= lifetime);
                CHECK(*pv.record_expires_in_ms > 0);
            }
        }
    }
    CHECK(settled());
    size_t versions_after = 0;
    for (auto& h : net.hosts()) versions_after += h->core->dataplane_version();
    CHECK(versions_after == versions);
    for (const auto& n : m.names) {
        const uint64_t seq = net[n].core->self_record().seq;
        CHECK(seq > seq0[n]);
        // The seq is epoch * 2^30 + records signed in this run: at least one per half lifetime.
        CHECK(seq - seq0[n] >= 19);
        CHECK(seq - seq0[n] < 1000);
        // Every other node holds this node's newest record.
        for (const auto& o : m.names) {
            if (o == n) continue;
            const auto* r = net[o].core->store().find(net[n].core->self_record().id());
            REQUIRE(r);
            CHECK(r->seq == seq);
        }
    }
    MESSAGE("10 lifetimes later: every node holds every other's newest record, no path changed");
}

TEST_CASE(
    "sim: a stopped node's record is gone everywhere a lifetime after the last relay got "
    "it; that relay's later copy brings it back nowhere") {
    std_mesh m(12, false);
    auto& net = m.net;
    const uint64_t lifetime = 60'000;
    meshd::node_core_config c;
    c.record_lifetime_ms = lifetime;
    auto specs = net.relay_specs();
    for (const auto& n : m.names) net.start_core(net[n], specs, "sim cluster psk 0123456789", c);
    REQUIRE(net.run_until([&] { return m.all_know_all(); }, 10000));
    net.run_for(5000);
    // relay2 stalls for 40 s (datagrams to it wait, as in a socket buffer); meanwhile lan2b
    // re-signs its record and stops. relay1 and the others get that last record at once, relay2
    // only when it resumes: its copy outlives everyone else's by 40 s, and it keeps offering it
    // (RECORDS answers to relay1's HELLOs). Were a copy to restart the lifetime where it had run
    // out, relay1 would take it back and push it to everyone, and the two relays would keep a
    // dead node alive between them for ever.
    auto& lan2b = net["lan2b"];
    const auto gone = lan2b.core->self_record().id();
    net["relay2"].frozen_until_ms = net.now() + 40'000;
    const uint64_t seq0 = lan2b.core->self_record().seq;
    REQUIRE(net.run_until([&] { return lan2b.core->self_record().seq != seq0; }, lifetime));
    lan2b.up = false;
    const uint64_t stopped = net.now();
    auto held_by = [&] {
        std::string who;
        for (const auto& n : m.names) {
            if (n != "lan2b" && net[n].core->store().find(gone)) who += n + " ";
        }
        return who;
    };
    // Gone from relay2 a lifetime after it resumed (plus the core's 5 s expiry sweep)...
    const uint64_t resumed = net["relay2"].frozen_until_ms;
    REQUIRE(
        net.run_until([&] { return held_by().empty(); }, resumed + lifetime + 10'000 - stopped));
    MESSAGE("stopped node's record gone everywhere "
            << net.now() - stopped << " ms after it stopped (relay2 resumed " << resumed - stopped
            << " ms after)");
    // ...and it stays gone: nobody brings it back.
    for (int i = 0; i < 6; ++i) {
        net.run_for(lifetime / 2);
        CHECK(held_by() == "");
    }
    for (const auto& n : m.names) {
        if (n != "lan2b") CHECK(net[n].core->store().tombstone(gone).has_value());
    }
}
