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
namespace {

using lossy_end = std::pair<std::string, std::string>;  // a's view of peer b

// Runs the net for an hour of virtual time in 50 ms steps; per end, how often its path or relay
// changed ("direct/-", "relayed/relay1", ...).
std::vector<size_t> lossy_changes_in_an_hour(sim_net& net, const std::vector<lossy_end>& ends) {
    auto state = [&](const lossy_end& e) {
        auto p = net.peer(e.first, e.second);
        return p ? std::string(meshd::to_string(p->path)) + "/" + p->relay_name : std::string("-");
    };
    std::vector<std::string> was;
    for (const auto& e : ends) was.push_back(state(e));
    std::vector<size_t> changes(ends.size());
    const uint64_t hour = 3'600'000, step = 50;
    for (uint64_t t = 0; t < hour; t += step) {
        net.run_for(step);
        for (size_t i = 0; i < ends.size(); ++i) {
            auto now = state(ends[i]);
            changes[i] += now != was[i];
            was[i] = now;
        }
    }
    return changes;
}

// The log lines `msg` of the named nodes (since their logs were cleared), each printed with its
// fields: the verdicts an hour of steady traffic should not have.
size_t lossy_logged(sim_net& net, const std::vector<std::string>& nodes, const std::string& msg) {
    size_t n = 0;
    for (const auto& name : nodes) {
        for (const auto& e : net[name].log) {
            if (e.msg != msg) continue;
            ++n;
            std::string f;
            for (const auto& [k, v] : e.fields) f += " " + k + "=" + v;
            MESSAGE(name << ": " << msg << ":" << f);
        }
    }
    return n;
}

}  // namespace

TEST_CASE("sim lossy: 5 % loss and 100 ms per uplink: converges, no flapping, failover < 1 s") {
    // 100 ms per uplink (relay2 3 ms further, so the relays rank apart), 5 % loss at every host.
    std_mesh m(515, true, std_links{100, 103, 100, 100, 0.05});
    auto& net = m.net;
    net.simulate_wireguard(
        100, 128, {{"lan1a", "lan2a"}, {"lan2a", "lan1a"}, {"lan1a", "lan1b"}, {"lan1b", "lan1a"}});
    REQUIRE(net.run_until([&] { return m.relayed_live("lan1a", "lan2a"); }, 30000));
    net.run_for(30000);
    for (auto& h : net.hosts()) h->log.clear();
    // An hour of steady traffic: every change of the pairs' relay or path, either end.
    const auto lan_pair = net.peer("lan1a", "lan1b");
    const std::string direct0 = lan_pair ? std::string(meshd::to_string(lan_pair->path)) : "-";
    const auto ch = lossy_changes_in_an_hour(
        net, {{"lan1a", "lan2a"}, {"lan2a", "lan1a"}, {"lan1a", "lan1b"}, {"lan1b", "lan1a"}});
    const size_t changes = ch[0] + ch[1], lan_changes = ch[2] + ch[3];
    MESSAGE("an hour of traffic with 5 % loss, 100 ms per uplink: relayed pair lan1a<->lan2a "
            << changes << " relay/path changes, LAN pair lan1a<->lan1b " << lan_changes
            << " (started " << direct0 << ")");
    // The failovers the two liveness checks declared in the hour, by kind (none was real).
    const size_t relay_dead =
        lossy_logged(net, {"lan1a", "lan2a"}, "relay stopped answering; its pairs fail over");
    const size_t silent = lossy_logged(net, {"lan1a", "lan2a"},
                                       "relayed path silent end to end; trying another relay");
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

// An active direct path whose only evidence is its probes: a pair turned active (the relay
// proxy's notice, meshctl, new addresses) with no WireGuard traffic on the path to keep it
// (peer_paths' "path kept"). Through two lossy uplinks ~19 % of round trips are lost, and at one
// probe a second path_timeout_ms (3.5 s, minus the 400 ms round trip) holds 3-4 of them: all
// lost by chance every few minutes of activity, and the path was given up (on the testbed, the
// hour of test_lossy.py moved two such paths from their IPv4 address to the IPv6 one that
// happened to answer). The probes of an active direct path come faster on a lossy link instead
// (peer_entry::direct_loss), as the relays' and the in-band ones do.
TEST_CASE("sim lossy: an active direct path kept by its probes alone does not flap in an hour") {
    std_mesh m(516, true, std_links{100, 103, 100, 100, 0.05});
    auto& net = m.net;
    auto state = [&] {
        auto p = net.peer("lan1a", "relay1");
        return p ? std::string(meshd::to_string(p->path)) + "/" +
                       (p->endpoint ? p->endpoint->str() : std::string("-"))
                 : std::string("-");
    };
    REQUIRE(net.run_until([&] { return state().rfind("direct/", 0) == 0; }, 30000));
    net.run_for(30000);
    for (auto& h : net.hosts()) h->log.clear();
    auto& a = net["lan1a"];
    const wg_key relay1_key = net["relay1"].wg_public_key;
    std::string was = state();
    size_t changes = 0;
    const uint64_t hour = 3'600'000, step = 50;
    for (uint64_t t = 0; t < hour; t += step) {
        if (t % 5000 == 0) {  // active throughout (active_hold_ms is 10 s)
            a.core->on_traffic(relay1_key, a.clock(net.now()));
            a.deadline = std::min(a.deadline, a.to_sim(a.core->next_deadline()));
        }
        net.run_for(step);
        const std::string now = state();
        if (now != was) {
            ++changes;
            MESSAGE("lan1a's path to relay1: " << was << " -> " << now << " at " << t << " ms");
        }
        was = now;
    }
    const size_t selected = lossy_logged(net, {"lan1a"}, "path selected");
    MESSAGE("an hour active on a direct path with ~19 % of round trips lost, no WireGuard on it: "
            << changes << " path changes, " << selected << " \"path selected\" lines");
    CHECK(changes == 0);
    CHECK(selected == 0);
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
    size_t changes = 0;
    for (size_t c : lossy_changes_in_an_hour(
             net, {{"lan1a", "lan2a"}, {"lan2a", "lan1a"}, {"lan1b", "lan2b"}, {"lan2b", "lan1b"}}))
        changes += c;
    const size_t stalls =
        lossy_logged(net, {"lan1a", "lan2a", "lan1b", "lan2b"},
                     "relay carries probes but not WireGuard; trying another relay");
    MESSAGE(
        "an hour of two one-way relayed streams (keepalives back every 10 s), 5 % loss, "
        "100 ms per uplink: "
        << changes << " relay/path changes, " << stalls << " \"probes but not WireGuard\"");
    CHECK(stalls == 0);
    CHECK(changes == 0);
}

}  // namespace mw::sim
