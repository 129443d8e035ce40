// Path MTU of relayed pairs (issue 15): padded in-band probes find what the relay path carries,
// the result reaches the data plane (peer_dataplane::path_mtu, the route MTU of the peer's pod
// CIDRs), a path that shrinks while in use is found within seconds, and a peer that does not
// answer padded probes (a node from before them) gets nothing applied.
#include <doctest/doctest.h>

#include <optional>
#include <string>

#include "test/sim/sim_mesh_fixture.hpp"
#include "test/sim/sim_net.hpp"

using namespace mw;
using namespace mw::sim;

namespace {

constexpr unsigned k_iface_mtu = 1408;  // 1500 - 92
// RELAY_DATA header 12, UDP 8, IPv6 40: what a relayed frame adds on the wire.
constexpr size_t k_outer = 12 + 8 + 40;

// What the data plane of `a` gives the pair's routes (0: none).
unsigned route_mtu(sim_net& net, const std::string& a, const std::string& b) {
    auto& h = net[a];
    for (const auto& dp : h.core->dataplane()) {
        if (dp.name == b) return dp.path_mtu;
    }
    return 0;
}

// Relay whose path carries IP packets of at most `mtu` bytes (frames beyond are dropped
// silently: no ICMP, the black hole RFC 8899 is for).
void limit_relay(sim_net& net, const std::string& relay, size_t mtu) {
    net[relay].relay_filter = [mtu](std::span<const uint8_t> payload) {
        return payload.size() + k_outer <= mtu;
    };
}

struct pmtu_mesh {
    std_mesh m;
    explicit pmtu_mesh(uint64_t seed, unsigned pmtu_lan2a = k_iface_mtu) : m(seed, false) {
        auto specs = m.net.relay_specs();
        for (auto& h : m.net.hosts()) {
            meshd::node_core_config c;
            c.pmtu_max = h->name == "lan2a" ? pmtu_lan2a : k_iface_mtu;
            m.net.start_core(*h, specs, "sim cluster psk 0123456789", c);
        }
        m.net.simulate_wireguard(100, 128);
    }
};

// The largest inner size whose WireGuard frame (padded to 16) fits `mtu` on the relay path.
unsigned fits(size_t mtu) {
    unsigned s = k_iface_mtu;
    while ((s + 15) / 16 * 16 + 32 + k_outer > mtu) --s;
    return s;
}

}  // namespace

TEST_CASE("sim: path MTU of a relayed pair is found with padded probes and applied") {
    pmtu_mesh pm(41);
    auto& net = pm.m.net;
    REQUIRE(net.run_until([&] { return pm.m.relayed_live("lan1a", "lan2a"); }, 15000));
    // A clean 1500 path: the search confirms the interface MTU, nothing is applied.
    net.run_for(5000);
    auto p = net.peer("lan1a", "lan2a");
    REQUIRE(p->path_mtu);
    CHECK(*p->path_mtu == k_iface_mtu);
    CHECK(p->path_mtu_complete);
    CHECK(route_mtu(net, "lan1a", "lan2a") == 0);
    CHECK(net["lan1a"].core->pmtu().probes_acked > 0);

    // Both relays carry at most 1400-byte packets (a smaller hop beyond every NAT): the pair's
    // confirmation fails, the MTU falls to 1280 at once, then the search finds the largest
    // size whose padded frame fits, within granularity (8).
    limit_relay(net, "relay1", 1400);
    limit_relay(net, "relay2", 1400);
    const unsigned want = fits(1400);
    uint64_t t = net.now();
    bool dropped = net.run_until(
        [&] {
            unsigned r = route_mtu(net, "lan1a", "lan2a");
            return r && r <= want;
        },
        20000);
    REQUIRE(dropped);
    const uint64_t detect_ms = net.now() - t;
    MESSAGE("1400 hop: lan1a's route MTU to lan2a at " << route_mtu(net, "lan1a", "lan2a")
                                                       << " after " << detect_ms << " ms");
    // Within the confirmation interval (5 s) and three probe timeouts (3 round trips each, at
    // least 250 ms: 750 ms here), and slack.
    CHECK(detect_ms <= 7000);
    bool settled = net.run_until(
        [&] {
            auto q = net.peer("lan1a", "lan2a");
            return q->path_mtu_complete && route_mtu(net, "lan1a", "lan2a") + 8 > want &&
                   route_mtu(net, "lan1a", "lan2a") <= want;
        },
        30000);
    CHECK(settled);
    MESSAGE("search complete at " << route_mtu(net, "lan1a", "lan2a") << " (largest that fits "
                                  << want << ") after " << net.now() - t << " ms");
    CHECK(net["lan1a"].core->pmtu().black_holes >= 1);
    // Both ends measure their own direction.
    CHECK(net.run_until(
        [&] {
            unsigned r = route_mtu(net, "lan2a", "lan1a");
            return r && r <= want && r + 8 > want;
        },
        30000));
    // The pair kept its relay path throughout (small frames pass: no failover for it).
    CHECK(pm.m.relayed_live("lan1a", "lan2a"));
    auto q = net.peer("lan1a", "lan2a");
    REQUIRE(q->path_mtu);
    CHECK(*q->path_mtu == route_mtu(net, "lan1a", "lan2a"));
    // Confirmed every 5 s while the pair is active: no further black hole on a steady path.
    const uint64_t holes = net["lan1a"].core->pmtu().black_holes;
    net.run_for(30000);
    CHECK(net["lan1a"].core->pmtu().black_holes == holes);
    CHECK(route_mtu(net, "lan1a", "lan2a") <= want);

    // The hop goes: the upward search (every 600 s) finds the interface MTU again, and the
    // route MTU is dropped.
    net["relay1"].relay_filter = nullptr;
    net["relay2"].relay_filter = nullptr;
    CHECK(net.run_until([&] { return route_mtu(net, "lan1a", "lan2a") == 0; }, 700000));
}

TEST_CASE("sim: a peer that never answers padded probes gets no path MTU applied") {
    // lan2a searches nothing (pmtu_max 0) and a relay that drops every frame bigger than a plain
    // probe stands in for a peer from before padded probes: lan1a's probes all go unanswered.
    pmtu_mesh pm(42, 0);
    auto& net = pm.m.net;
    for (const char* r : {"relay1", "relay2"}) {
        net[r].relay_filter = [](std::span<const uint8_t> payload) {
            return payload.size() <= 1000;  // WireGuard here is 128 bytes, padded probes 1312+
        };
    }
    REQUIRE(net.run_until([&] { return pm.m.relayed_live("lan1a", "lan2a"); }, 15000));
    net.run_for(30000);
    CHECK(route_mtu(net, "lan1a", "lan2a") == 0);
    CHECK_FALSE(net.peer("lan1a", "lan2a")->path_mtu);
    CHECK(pm.m.relayed_live("lan1a", "lan2a"));
    // lan2a (search off) sends none.
    CHECK(net["lan2a"].core->pmtu().probes_sent == 0);
    // lan1a gave up after one search (every size unanswered), and logged no black hole.
    const uint64_t sent = net["lan1a"].core->pmtu().probes_sent;
    CHECK(sent > 0);
    MESSAGE("lan1a sent " << sent << " padded probes; relay selections "
                          << net["lan1a"].core->relay_selections());
    // 15 per search (5 sizes, 3 tries each); a search per relay the pair took.
    CHECK(sent <= 15 * net["lan1a"].core->relay_selections());
    net.run_for(30000);
    CHECK(net["lan1a"].core->pmtu().probes_sent == sent);
    CHECK(net["lan1a"].core->pmtu().black_holes == 0);
}
