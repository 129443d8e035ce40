// The NAT behaviour each node finds from the relays' reports (issue 13, nat_behaviour.hpp), on
// the simulator's NATs: LAN 1 behind a port-restricted cone NAT (one mapping per internal
// endpoint), LAN 2 behind a symmetric one (one per destination), the relays public.
#include <doctest/doctest.h>

#include <string>

#include "test/sim/sim_mesh_fixture.hpp"

namespace mw::sim {

TEST_CASE("sim: nat — cone, symmetric and public nodes are told apart by two relays") {
    std_mesh m(61);
    auto& net = m.net;
    auto mapping = [&](const std::string& n) { return net[n].core->nat().ipv4.mapping; };
    REQUIRE(net.run_until(
        [&] {
            return mapping("lan1a") == meshd::nat_mapping::endpoint_independent &&
                   mapping("lan2a") == meshd::nat_mapping::endpoint_dependent;
        },
        15000));
    MESSAGE("found after " << net.elapsed_ms() << " ms");
    const auto cone = net["lan1a"].core->nat().ipv4;
    CHECK(cone.observers == 2);
    REQUIRE(cone.reflexive);
    CHECK(cone.reflexive->address == net.lan(1).pub);
    CHECK_FALSE(cone.port_preserved);  // the sim's NATs allocate ports from 20000
    CHECK(net["lan2a"].core->nat().ipv4.observers == 2);
    // A relay sees the other's own address (no NAT); it does not observe itself.
    const auto pub = net["relay1"].core->nat().ipv4;
    CHECK(pub.mapping == meshd::nat_mapping::none);
    CHECK(pub.observers == 1);
    CHECK(pub.port_preserved);
    CHECK(net["lan1a"].core->nat().ipv6.mapping == meshd::nat_mapping::unknown);

    // One relay left (the other down): the cone node is behind a NAT whose mapping one
    // observer cannot tell.
    net["relay2"].up = false;
    CHECK(net.run_until([&] { return mapping("lan1a") == meshd::nat_mapping::single_observer; },
                        20000));
    MESSAGE("relay2 down: lan1a single-observer after " << net.elapsed_ms() << " ms");
}

// meshctl peers' REASON (issue 13): why each pair has its path.
TEST_CASE("sim: nat — each pair's path reason") {
    std_mesh m(62);
    auto& net = m.net;
    auto reason = [&](const std::string& a, const std::string& b) -> std::string {
        auto p = net.peer(a, b);
        return p ? meshd::to_string(p->reason) : "unknown";
    };
    REQUIRE(net.run_until(
        [&] {
            return m.all_know_all() && m.relayed_live("lan1a", "lan2a") &&
                   net.path("lan1a", "lan1b") == meshd::path_kind::direct &&
                   reason("lan2a", "lan1a") == "symmetric_nat_here";
        },
        20000));
    CHECK(reason("lan1a", "lan1b") == "lan");      // 192.168.1.x answers
    CHECK(reason("lan1a", "relay1") == "public");  // 203.0.113.x answers
    // Relayed: lan1a's NAT is a cone, so only "no direct answer"; lan2a's maps per destination.
    CHECK(reason("lan1a", "lan2a") == "no_direct_answer");
    CHECK(reason("lan2a", "lan1a") == "symmetric_nat_here");
    MESSAGE("relay1 -> lan1a: " << reason("relay1", "lan1a")
                                << ", relay1 -> lan2a: " << reason("relay1", "lan2a"));
}

}  // namespace mw::sim
