// Simulation tests of issue 17's defences against a PSK holder: records aiming the cluster at a
// victim, route hijacks, relays that forward probes but drop WireGuard, ground node IDs.
#include <doctest/doctest.h>

#include <cstdio>
#include <map>
#include <set>

#include "common/wireguard/wg_device.hpp"
#include "test/sim/sim_mesh_fixture.hpp"
#include "test/sim/sim_net.hpp"

using namespace mw;
using namespace mw::sim;
using meshd::path_kind;

TEST_CASE("sim: a fake record listing a victim's ports makes no node send the victim anything") {
    // issue 17: a PSK holder's record listed a victim's port range and all six nodes sent it 960
    // datagrams in 20 s, for the record's lifetime. The attacker here runs a real core that
    // advertises the victim's ports as its own control endpoints; the victim runs no meshd.
    std_mesh m(7, false);
    auto& net = m.net;
    auto& victim = net.add_public("victim", 2);
    auto& attacker = net.add_public("attacker", 2);
    auto specs = net.relay_specs();
    for (const auto& n : m.names) net.start_core(net[n], specs);
    node_core_config lying;
    for (uint16_t p = 1; p <= 8; ++p) lying.endpoints.push_back(victim.ep(p));
    net.start_core(attacker, specs, "sim cluster psk 0123456789", lying);
    // Everyone accepts the attacker's record (it is validly signed by a PSK holder) ...
    REQUIRE(net.run_until(
        [&] {
            for (const auto& n : m.names)
                if (!net.peer(n, "attacker")) return false;
            return m.all_know_all();
        },
        10000));
    net.run_for(20000);
    uint64_t got = 0;
    for (auto [port, n] : victim.rx_by_port) got += n;
    MESSAGE("victim received " << got << " datagrams in " << net.elapsed_ms() / 1000
                               << " s (six nodes, one fake record listing 8 of its ports)");
    CHECK(got == 0);
    // ... every node counted the refusals, and the honest mesh is unaffected.
    for (const auto& n : m.names) {
        auto r = net[n].core->endpoint_refusals();
        CHECK_MESSAGE(r[static_cast<size_t>(meshd::endpoint_refusal::port)] >= 8, n);
    }
    CHECK(is_direct(net, "lan1a", "lan1b"));
    CHECK(m.relayed_live("lan1a", "lan2a"));
}

namespace {

// A WireGuard device configured from a core's desired data plane, as the daemon's planner would
// (every peer with allowed-ips): what must pass validate() for the apply to go through.
wg_device device_from(const node_core& core) {
    wg_device d;
    for (const auto& dp : core.dataplane()) {
        if (dp.allowed_ips.empty()) continue;
        wg_peer p;
        p.public_key = dp.wg_public_key;
        p.allowed_ips = dp.allowed_ips;
        d.peers.push_back(std::move(p));
    }
    return d;
}

}  // namespace

namespace {

void dump_log(sim_net& net, const std::string& n) {
    for (auto& e : net[n].log) {
        std::string f;
        for (auto& [k, v] : e.fields) f += " " + k + "=" + v;
        MESSAGE(n << ": " << e.msg << f);
    }
}

// Whether lan1a <-> lan2a, both ends, move to `good` and live end to end within limit_ms; dumps
// both ends' logs when they do not.
bool pair_moves_to(std_mesh& m, const std::string& good, uint64_t limit_ms) {
    auto& net = m.net;
    bool moved = net.run_until(
        [&] {
            auto p = net.peer("lan1a", "lan2a"), q = net.peer("lan2a", "lan1a");
            return p->relay_name == good && q->relay_name == good &&
                   m.relayed_live("lan1a", "lan2a");
        },
        limit_ms);
    if (!moved) {
        dump_log(net, "lan1a");
        dump_log(net, "lan2a");
    }
    return moved;
}

// The relay both ends of lan1a <-> lan2a send through, once the pair is live end to end.
std::string settled_relay(std_mesh& m) {
    auto& net = m.net;
    bool ok = net.run_until(
        [&] {
            auto p = net.peer("lan1a", "lan2a"), q = net.peer("lan2a", "lan1a");
            return m.relayed_live("lan1a", "lan2a") && p->relay_name == q->relay_name;
        },
        15000);
    if (!ok) dump_log(net, "lan1a");
    REQUIRE(ok);
    return net.peer("lan1a", "lan2a")->relay_name;
}

}  // namespace

// Issue 17, route hijack: a PSK holder's record claims the victim's /24 as two /25s, the victim's
// /24 itself, 8.0.0.0/8 and two /1s (the underlay). None of it is routed anywhere, the victim's
// pods stay routed to the victim, the thief's own block is routed, and every node's WireGuard
// configuration stays valid (an exact duplicate made the whole apply fail on every node).
TEST_CASE("sim: a stolen node's route-hijack record is refused; the victim stays reachable") {
    for (bool with_cluster : {true, false}) {
        CAPTURE(with_cluster);
        std_mesh m(23, false);
        auto& net = m.net;
        net.add_lan_host(1, "thief");  // index 6: its honest block would be 10.244.6.0/24
        node_core_config cfg;
        if (with_cluster) cfg.cluster_cidrs = {ip_prefix::parse("10.244.0.0/16").value()};
        auto specs = net.relay_specs();
        for (const auto& n : m.names)
            net.start_core(net[n], specs, "sim cluster psk 0123456789", cfg);
        REQUIRE(net.run_until([&] { return m.all_know_all(); }, 5000));

        const std::string victim = "lan2a";  // host index 4
        const auto victim_block = ip_prefix::parse("10.244.4.0/24").value();
        node_core_config hostile = cfg;
        for (const char* c : {"10.244.4.0/25", "10.244.4.128/25", "10.244.4.0/24", "8.0.0.0/8",
                              "0.0.0.0/1", "128.0.0.0/1", "10.244.6.0/24"}) {
            hostile.pod_cidrs.push_back(ip_prefix::parse(c).value());
        }
        net.start_core(net["thief"], specs, "sim cluster psk 0123456789", hostile);
        REQUIRE(net.run_until(
            [&] {
                for (const auto& n : m.names) {
                    if (!net.peer(n, "thief")) return false;
                }
                return true;
            },
            5000));
        net.run_for(5000);

        // Underlay addresses: every host's and NAT's.
        std::vector<ip_address> underlay;
        for (auto& h : net.hosts()) underlay.push_back(h->addr);
        for (int k = 1; k <= 2; ++k) underlay.push_back(net.lan(k).pub);
        underlay.push_back(ip_address::parse("8.8.8.8").value());
        for (const auto& n : m.names) {
            CAPTURE(n);
            auto& core = *net[n].core;
            auto t = net.peer(n, "thief");
            REQUIRE(t);
            CHECK(t->pod_cidrs ==
                  std::vector<ip_prefix>{ip_prefix::parse("10.244.6.0/24").value()});
            CHECK(t->refused_cidrs.size() == 6);
            using meshd::cidr_refusal;
            for (const auto& r : t->refused_cidrs) {
                CAPTURE(r.cidr.str());
                // The victim sees its own block claimed; everyone else sees another's.
                if (r.cidr == victim_block) {
                    CHECK(r.reason ==
                          (n == victim ? cidr_refusal::overlaps_own : cidr_refusal::overlaps_peer));
                } else if (r.cidr.length() == 25) {
                    CHECK(r.reason == (with_cluster  ? cidr_refusal::wrong_block_size
                                       : n == victim ? cidr_refusal::overlaps_own
                                                     : cidr_refusal::overlaps_peer));
                } else {  // 8/8 and the /1s
                    CHECK(r.reason == (with_cluster ? cidr_refusal::outside_cluster
                                                    : cidr_refusal::wrong_block_size));
                }
            }
            // Nothing the data plane routes to a peer other than the victim covers the victim's
            // pods or any underlay address.
            for (const auto& dp : core.dataplane()) {
                for (const auto& a : dp.allowed_ips) {
                    CAPTURE(dp.name);
                    CAPTURE(a.str());
                    if (dp.name != victim) CHECK_FALSE(a.contains(victim_block.address()));
                    for (const auto& u : underlay) CHECK_FALSE(a.contains(u));
                }
            }
            // The WireGuard apply of everyone else goes through.
            auto st = validate(device_from(core));
            CHECK_MESSAGE(st.ok(), (st.ok() ? "" : st.err().message));
            // Refusals are counted, and logged once each with fixed fields.
            auto total = core.routes().refusals_total();
            uint64_t sum = 0;
            for (auto v : total) sum += v;
            CHECK(sum == 6);
            size_t logged = 0;
            for (const auto& e : net[n].log) {
                if (e.msg.rfind("pod CIDR refused", 0) != 0) continue;
                ++logged;
                std::map<std::string, std::string> f(e.fields.begin(), e.fields.end());
                CHECK(f["peer"] == "thief");
                CHECK(f.count("cidr"));
                CHECK(f.count("reason"));
            }
            CHECK(logged == 6);
        }
        // The victim's pods are still routed to the victim, over a live path, everywhere.
        for (const auto& n : m.names) {
            if (n == victim) continue;
            CAPTURE(n);
            auto v = net.peer(n, victim);
            REQUIRE(v);
            CHECK(v->pod_cidrs == std::vector<ip_prefix>{victim_block});
            CHECK(v->refused_cidrs.empty());
            CHECK(v->path != path_kind::none);
        }
        REQUIRE(net.run_until([&] { return m.relayed_live("lan1a", victim); }, 10000));
        CHECK(is_direct(net, "lan2b", victim));
    }
}

// Issue 17: a malicious relay forwards what it can tell is a probe and drops the rest. In-band
// probes used to be control datagrams ("MW\x01..." inside RELAY_DATA): such a relay kept every
// probe answering while it black-holed WireGuard, and the pair never left it. Sealed probes are
// shaped like WireGuard data; the same relay now drops them too and the pair leaves it.
TEST_CASE("sim: a relay that forwards only what looks like a probe is left within seconds") {
    std_mesh m(17);
    auto& net = m.net;
    net.simulate_wireguard();
    std::string bad = settled_relay(m);
    std::string good = bad == "relay1" ? "relay2" : "relay1";
    net.run_for(10000);  // an established pair (past the new session's grace period)
    REQUIRE(net.peer("lan1a", "lan2a")->relay_name == bad);
    // What such a relay sees: only the bytes of each frame. Before sealed probes this was the
    // whole classifier.
    net[bad].relay_filter = [](std::span<const uint8_t> payload) {
        return payload.size() >= 3 && payload[0] == 'M' && payload[1] == 'W' && payload[2] == 1;
    };
    uint64_t t = net.now();
    REQUIRE(pair_moves_to(m, good, 15000));
    MESSAGE("probe-forwarding relay " << bad << " left for " << good << " after " << net.now() - t
                                      << " ms (it dropped " << net[bad].relay_filtered
                                      << " frames)");
    CHECK(net.now() - t < 8000);
    // And the pair's WireGuard flows again: rx grows on both ends.
    check_wireguard_flows(net, "lan1a", "lan2a");
}

// A smarter relay: it forwards every frame of the probes' size (and control) and drops the rest,
// so the probes keep answering. Judged by WireGuard's own progress (the peer's rx reported in its
// sealed probes vs our tx), the pair leaves it all the same.
TEST_CASE(
    "sim: a relay that forwards probes but drops WireGuard is excluded on WireGuard progress") {
    std_mesh m(18);
    auto& net = m.net;
    net.simulate_wireguard(100, 128);
    std::string bad = settled_relay(m);
    std::string good = bad == "relay1" ? "relay2" : "relay1";
    net[bad].relay_filter = [](std::span<const uint8_t> payload) {
        return payload.size() == 96 || (payload.size() >= 2 && payload[0] == 'M');
    };
    uint64_t t = net.now();
    REQUIRE(pair_moves_to(m, good, 30000));
    MESSAGE("relay " << bad << " forwarding probes but not WireGuard left after " << net.now() - t
                     << " ms");
    CHECK(net.now() - t < 15000);
    CHECK(net["lan1a"].core->relay_wg_stalls() + net["lan2a"].core->relay_wg_stalls() >= 1);
    check_wireguard_flows(net, "lan1a", "lan2a");
}

TEST_CASE(
    "sim: honest relays carrying WireGuard with loss and busy hosts are never judged stalled") {
    std_mesh m(19);
    auto& net = m.net;
    net.simulate_wireguard(100, 128);
    for (std::string n : {"lan1a", "lan1b", "lan2a", "lan2b"}) {
        net[n].loss = 0.05;
        net[n].busy_prob = 0.1;
        net[n].busy_ms = 100;
    }
    net.run_for(90000);
    uint64_t stalls = 0;
    for (auto& h : net.hosts()) stalls += h->core->relay_wg_stalls();
    CHECK(stalls == 0);
    CHECK(m.relayed_live("lan1a", "lan2a"));
    CHECK(net["lan1a"].wg_rx["lan2a"] > 0);
}

// Issue 17: found relays were the first max_found_relays (16) by node ID, the same on every node,
// so 16 identities ground to sort below the honest relays displaced every honest relay from
// every node's directory. Now each node samples by a hash keyed with a salt of its own. Here 16
// such relays (they black-hole every relayed frame) appear beside 4 honest public nodes, and the
// bootstrap node then goes away: the honest pairs still find honest relays.
TEST_CASE("sim: 16 relays with ground low node IDs do not displace the honest found relays") {
    sim_net net(1717);
    std::vector<std::string> honest{"pub1", "pub2", "pub3", "pub4"};
    for (auto& n : honest) net.add_public(n, 2);
    int l1 = net.add_lan(false, 3);
    int l2 = net.add_lan(true, 4);
    std::vector<std::string> lan1{"a1", "a2", "a3"}, lan2{"b1", "b2", "b3"};
    for (auto& n : lan1) net.add_lan_host(l1, n);
    for (auto& n : lan2) net.add_lan_host(l2, n);
    node_core_config c;
    c.bootstrap = {net["pub1"].addr};
    for (auto& h : net.hosts()) net.start_core(*h, {}, "sim cluster psk 0123456789", c);
    auto all_serving = [&](const std::vector<std::string>& v) {
        for (auto& n : v) {
            if (net[n].core->role() != meshd::relay_role_state::active) return false;
        }
        return true;
    };
    REQUIRE(net.run_until([&] { return all_serving(honest); }, 30000));
    meshd::node_id lowest_honest = net["pub1"].core->id();
    for (auto& n : honest) lowest_honest = std::min(lowest_honest, net[n].core->id());

    // The attacker: 16 public nodes whose IDs sort below every honest one, relaying nothing.
    std::vector<std::string> fakes;
    std::mt19937_64 gen(99);
    for (int i = 0; i < 16; ++i) {
        meshd::identity_seed seed{};
        for (;;) {
            for (auto& b : seed) b = static_cast<uint8_t>(gen());
            if (meshd::node_identity::from_seed(seed).id() < lowest_honest) break;
        }
        std::string name = "fake" + std::to_string(i);
        auto& h = net.add_public(name, 1);  // nearer than the honest ones: ranked first on RTT
        h.relay_filter = [](std::span<const uint8_t>) { return false; };
        net.next_seed = seed;
        net.start_core(h, {}, "sim cluster psk 0123456789", c);
        fakes.push_back(name);
    }
    REQUIRE(net.run_until([&] { return all_serving(fakes); }, 30000));
    net.run_for(5000);
    // Every LAN node keeps honest relays in its directory besides the bootstrap node.
    for (auto& n : lan1) {
        size_t honest_found = 0;
        for (auto& r : net[n].core->relays()) {
            honest_found += r.name != "pub1" && r.name.rfind("pub", 0) == 0;
        }
        CAPTURE(n);
        CHECK(honest_found >= 1);
    }
    // The bootstrap node goes away: the cross-NAT pairs must still get live on honest relays.
    net["pub1"].up = false;
    auto live_on_honest = [&](const std::string& a, const std::string& b) {
        auto p = net.peer(a, b), q = net.peer(b, a);
        return p && q && p->path == path_kind::relay && q->path == path_kind::relay && p->rtt_ms &&
               q->rtt_ms && p->relay_name.rfind("pub", 0) == 0 &&
               q->relay_name.rfind("pub", 0) == 0;
    };
    size_t live = 0, pairs = 0;
    net.run_until(
        [&] {
            live = pairs = 0;
            for (auto& a : lan1) {
                for (auto& b : lan2) {
                    ++pairs;
                    live += live_on_honest(a, b);
                }
            }
            return live == pairs;
        },
        180000);
    if (live * 4 < pairs * 3) {
        for (auto& a : lan1) {
            std::string rs;
            for (auto& r : net[a].core->relays()) {
                rs += r.name + "(" + std::to_string(int(r.state)) + ") ";
            }
            MESSAGE(a << " relays: " << rs);
            for (auto& n : {a, std::string("b2")}) {
                std::string listed;
                for (auto& r : net[n].core->self_record().relays) {
                    for (auto& h : net.hosts()) {
                        if (h->core && h->core->id() == r) listed += h->name + " ";
                    }
                }
                MESSAGE(n << " lists " << listed);
            }
            for (auto& b : lan2) {
                auto p = net.peer(a, b);
                MESSAGE(a << "->" << b << " path " << int(p->path) << " relay " << p->relay_name
                          << " rtt " << (p->rtt_ms ? *p->rtt_ms : -1));
            }
        }
        dump_log(net, "a1");
    }
    MESSAGE(live << " of " << pairs << " cross-NAT pairs live on honest relays after "
                 << net.elapsed_ms() << " ms, beside 16 ground low-ID relays");
    CHECK(live * 4 >= pairs * 3);  // most of them (each node samples its own 16 of 19)
}
