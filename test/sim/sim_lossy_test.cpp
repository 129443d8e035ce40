// Issue 14 §5, lossy and slow links: 5 % loss on every datagram to and from each node and relay
// (so about 10 % per hop and direction pair, ~19 % on a relayed round trip) and 100 ms one-way
// delay on every LAN uplink and relay uplink. The mesh converges; pairs with traffic do not flap
// between relays or paths (path changes per hour of steady traffic, printed and checked); the
// relay in use dying is still detected and the pair moved within 1 s.
#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "test/sim/sim_mesh_fixture.hpp"

namespace mw::sim {

TEST_CASE("sim lossy: 5 % loss and 100 ms per uplink: converges, no flapping, failover < 1 s") {
    // 100 ms per uplink (relay2 3 ms further, so the relays rank apart), 5 % loss at every host.
    std_mesh m(515, true, std_links{100, 103, 100, 100, 0.05});
    auto& net = m.net;
    net.simulate_wireguard(
        100, 128, {{"lan1a", "lan2a"}, {"lan2a", "lan1a"}, {"lan1a", "lan1b"}, {"lan1b", "lan1a"}});
    REQUIRE(net.run_until([&] { return m.relayed_live("lan1a", "lan2a"); }, 30000));
    net.run_for(30000);
    for (auto& h : net.hosts()) h->log.clear();
    // An hour of steady traffic: count every change of the pair's relay or path, either end.
    auto state = [&](const std::string& a, const std::string& b) {
        auto p = net.peer(a, b);
        return p ? std::string(meshd::to_string(p->path)) + "/" + p->relay_name : std::string("-");
    };
    std::string s1 = state("lan1a", "lan2a"), s2 = state("lan2a", "lan1a"),
                s3 = state("lan1a", "lan1b"), s4 = state("lan1b", "lan1a");
    const std::string direct0 = s3;
    size_t changes = 0, lan_changes = 0;
    const uint64_t hour = 3'600'000, step = 50;
    for (uint64_t t = 0; t < hour; t += step) {
        net.run_for(step);
        auto n1 = state("lan1a", "lan2a"), n2 = state("lan2a", "lan1a");
        auto n3 = state("lan1a", "lan1b"), n4 = state("lan1b", "lan1a");
        changes += (n1 != s1) + (n2 != s2);
        lan_changes += (n3 != s3) + (n4 != s4);
        s1 = n1, s2 = n2, s3 = n3, s4 = n4;
    }
    MESSAGE("an hour of traffic with 5 % loss, 100 ms per uplink: relayed pair lan1a<->lan2a "
            << changes << " relay/path changes, LAN pair lan1a<->lan1b " << lan_changes
            << " (started " << direct0 << ")");
    // The failovers the two liveness checks declared in the hour, by kind (none was real).
    size_t relay_dead = 0, silent = 0;
    for (auto* n : {"lan1a", "lan2a"}) {
        for (const auto& e : net[n].log) {
            relay_dead += e.msg == "relay stopped answering; its pairs fail over";
            if (e.msg == "relay stopped answering; its pairs fail over") {
                std::string f;
                for (const auto& [k, v] : e.fields) f += " " + k + "=" + v;
                MESSAGE(n << ":" << f);
            }
            silent += e.msg == "relayed path silent end to end; trying another relay";
        }
    }
    MESSAGE("false failovers in the hour: relay declared dead "
            << relay_dead << ", relayed path silent end to end " << silent);
    CHECK(relay_dead <= 1);
    CHECK(silent <= 1);
    CHECK(changes == 0);
    CHECK(lan_changes == 0);

    // The relay in use dies: both ends on the other one, WireGuard flowing, within 1 s.
    const std::string used = net.peer("lan1a", "lan2a")->relay_name;
    const std::string other = used == "relay1" ? "relay2" : "relay1";
    net[used].up = false;
    const uint64_t t0 = net.now();
    net.run_for(20);
    const uint64_t rx_a = net["lan1a"].wg_rx["lan2a"], rx_b = net["lan2a"].wg_rx["lan1a"];
    REQUIRE(net.run_until(
        [&] {
            return net.peer("lan1a", "lan2a")->relay_name == other &&
                   net.peer("lan2a", "lan1a")->relay_name == other &&
                   net["lan1a"].wg_rx["lan2a"] > rx_a && net["lan2a"].wg_rx["lan1a"] > rx_b;
        },
        10000));
    const uint64_t took = net.now() - t0;
    MESSAGE("relay " << used << " died under traffic (5 % loss, 100 ms uplinks): both ends on "
                     << other << ", WireGuard flowing after " << took << " ms");
    CHECK(took < 1000);
}

// The receiving end of a one-way stream sends only WireGuard's passive keepalive (one frame every
// 10 s). On a relayed path losing ~19 % one way, two or three of those in a row are lost by
// chance several times an hour; a stall verdict drawn from so few frames moved the pair off a
// working relay (the e2e lossy test caught it: "relay carries probes but not WireGuard" at the
// receiving end, wg_tx_unacknowledged=216). Judged by the chance of losing them all, none is.
TEST_CASE("sim lossy: one-way streams: the quiet end's lost keepalives are not a stall") {
    std_mesh m(516, true, std_links{100, 103, 100, 100, 0.05});
    auto& net = m.net;
    net.simulate_wireguard(100, 128, {{"lan1a", "lan2a"}, {"lan2b", "lan1b"}});
    net.simulate_sparse_wireguard("lan2a", "lan1a", 10000);
    net.simulate_sparse_wireguard("lan1b", "lan2b", 10000);
    REQUIRE(net.run_until(
        [&] { return m.relayed_live("lan1a", "lan2a") && m.relayed_live("lan2b", "lan1b"); },
        30000));
    net.run_for(30000);
    for (auto& h : net.hosts()) h->log.clear();
    auto state = [&](const std::string& a, const std::string& b) {
        auto p = net.peer(a, b);
        return p ? std::string(meshd::to_string(p->path)) + "/" + p->relay_name : std::string("-");
    };
    const std::vector<std::pair<std::string, std::string>> ends = {
        {"lan1a", "lan2a"}, {"lan2a", "lan1a"}, {"lan1b", "lan2b"}, {"lan2b", "lan1b"}};
    std::vector<std::string> was;
    for (const auto& [a, b] : ends) was.push_back(state(a, b));
    size_t changes = 0;
    const uint64_t hour = 3'600'000, step = 50;
    for (uint64_t t = 0; t < hour; t += step) {
        net.run_for(step);
        for (size_t i = 0; i < ends.size(); ++i) {
            auto now = state(ends[i].first, ends[i].second);
            changes += now != was[i];
            was[i] = now;
        }
    }
    size_t stalls = 0;
    for (std::string n : {"lan1a", "lan2a", "lan1b", "lan2b"}) {
        for (const auto& e : net[n].log) {
            if (e.msg != "relay carries probes but not WireGuard; trying another relay") continue;
            ++stalls;
            std::string f;
            for (const auto& [k, v] : e.fields) f += " " + k + "=" + v;
            MESSAGE(n << ":" << f);
        }
    }
    MESSAGE(
        "an hour of two one-way relayed streams (keepalives back every 10 s), 5 % loss, "
        "100 ms per uplink: "
        << changes << " relay/path changes, " << stalls << " \"probes but not WireGuard\"");
    CHECK(stalls == 0);
    CHECK(changes == 0);
}

}  // namespace mw::sim
