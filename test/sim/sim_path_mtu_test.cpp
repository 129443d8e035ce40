// Path MTU of relayed pairs (issue 15): padded in-band probes find what the relay path carries,
// the result reaches the data plane (peer_dataplane::path_mtu, the route MTU of the peer's pod
// CIDRs), a path that shrinks while in use is found within seconds, and a peer that does not
// answer padded probes (a node from before them) gets nothing applied.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

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

// What the kernel routes of `a` to `b`'s pod CIDRs carry: the core's data plane once it has the
// peer, else the kept device's (a restarted meshd keeps the peers it has not found again for
// 10 s, with their routes as they were: wg_interface_config::keep_other_peers).
unsigned kernel_route_mtu(sim_net& net, const std::string& a, const std::string& b) {
    auto& h = net[a];
    for (const auto& dp : h.core->dataplane()) {
        if (dp.name == b) return dp.path_mtu;
    }
    if (h.wg_only && net.now() < h.wg_only_until) {
        for (const auto& dp : *h.wg_only) {
            if (dp.name == b) return dp.path_mtu;
        }
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
    // lan1a's identity, fixed so that it can restart as the same node (restart()).
    meshd::identity_seed lan1a_seed{};
    // WireGuard traffic on `pairs` (all when empty): only those stay active, and probe.
    explicit pmtu_mesh(uint64_t seed, unsigned pmtu_lan2a = k_iface_mtu,
                       std::set<std::pair<std::string, std::string>> pairs = {})
        : m(seed, false) {
        lan1a_seed.fill(0x1a);
        for (auto& h : m.net.hosts()) start(*h, h->name == "lan2a" ? pmtu_lan2a : k_iface_mtu);
        m.net.simulate_wireguard(100, 128, std::move(pairs));
    }
    void start(sim_host& h, unsigned pmtu_max) {
        meshd::node_core_config c;
        c.pmtu_max = pmtu_max;
        if (h.name == "lan1a") m.net.next_seed = lan1a_seed;
        m.net.start_core(h, m.net.relay_specs(), "sim cluster psk 0123456789", c);
    }
    // lan1a's meshd killed and started again after `down_ms` (its WireGuard going on), told
    // what the daemon reads of the kept device: the peers it relayed through a proxy socket,
    // and, with `routes`, the route MTUs on its interface (each peer's path MTU on its
    // allowed-ips, as the previous core applied them). Returns those route MTUs.
    std::map<ip_prefix, unsigned> restart(uint64_t down_ms, bool routes,
                                          std::optional<unsigned> route_override = {}) {
        auto& h = m.net["lan1a"];
        m.net.stop_meshd(h);
        m.net.run_for(down_ms);
        std::vector<wg_key> relayed;
        std::map<ip_prefix, unsigned> mtus;
        for (const auto& dp : *h.wg_only) {
            if (dp.path == meshd::path_kind::relay) relayed.push_back(dp.wg_public_key);
            if (!dp.path_mtu) continue;
            for (const auto& a : dp.allowed_ips) mtus[a] = route_override.value_or(dp.path_mtu);
        }
        start(h, k_iface_mtu);
        if (routes) h.core->on_route_mtus_before(mtus, h.clock(m.net.now()));
        h.core->on_relayed_before(relayed, h.clock(m.net.now()));
        return mtus;
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

TEST_CASE(
    "sim: a peer that never answers padded probes gets no path MTU applied, and is "
    "tried again 10 min later") {
    // lan2a searches nothing (pmtu_max 0) and relays that drop every frame bigger than a plain
    // probe stand in for a peer from before padded probes: lan1a's probes all go unanswered.
    // Only lan1a-lan2a carries traffic: the direct pairs go idle and send no probes.
    pmtu_mesh pm(42, 0, {{"lan1a", "lan2a"}});
    auto& net = pm.m.net;
    for (const char* r : {"relay1", "relay2"}) {
        net[r].relay_filter = [](std::span<const uint8_t> payload) {
            return payload.size() <= 1000;  // WireGuard here is 128 bytes, padded probes 1312+
        };
    }
    REQUIRE(net.run_until([&] { return pm.m.relayed_live("lan1a", "lan2a"); }, 15000));
    net.run_for(60000);
    CHECK(route_mtu(net, "lan1a", "lan2a") == 0);
    CHECK_FALSE(net.peer("lan1a", "lan2a")->path_mtu);
    CHECK(pm.m.relayed_live("lan1a", "lan2a"));
    CHECK(net["lan2a"].core->pmtu().probes_sent == 0);  // search off
    CHECK(net["lan2a"].core->pmtu().probes_acked == 0);
    // lan1a searched, got no answer, gave up (no black hole logged for a peer that never
    // answered), and sends nothing more while the pair stays active.
    const uint64_t sent = net["lan1a"].core->pmtu().probes_sent;
    MESSAGE("lan1a sent " << sent
                          << " padded probes (all its pairs active at the start) before "
                             "giving up");
    CHECK(sent > 0);
    net.run_for(60000);
    CHECK(net["lan1a"].core->pmtu().probes_sent == sent);
    CHECK(net["lan1a"].core->pmtu().black_holes == 0);
    CHECK(net["lan1a"].core->active_pairs() >= 1);

    // The peer is upgraded (it answers padded probes now) and its path has a 1400-byte hop:
    // lan1a tries again one raise interval (10 min) after it gave up, and the search finds
    // and applies the hop's MTU. Nothing is sent meanwhile.
    limit_relay(net, "relay1", 1400);
    limit_relay(net, "relay2", 1400);
    const unsigned want = fits(1400);
    const uint64_t t = net.now();
    CHECK(net.run_until([&] { return net["lan1a"].core->pmtu().probes_sent > sent; }, 600000));
    const uint64_t retry_ms = net.now() - t;
    MESSAGE("lan1a tried again " << retry_ms
                                 << " ms after the upgrade (it gave up less than 120 s before)");
    CHECK(retry_ms >= 600000 - 120000 - 1000);
    CHECK(net.run_until(
        [&] {
            unsigned r = route_mtu(net, "lan1a", "lan2a");
            return r && r <= want && r + 8 > want && net.peer("lan1a", "lan2a")->path_mtu_complete;
        },
        30000));
    MESSAGE("then applied " << route_mtu(net, "lan1a", "lan2a") << " after "
                            << net.now() - t - retry_ms << " ms");
    CHECK(net["lan1a"].core->pmtu().black_holes == 0);
    CHECK(pm.m.relayed_live("lan1a", "lan2a"));
}

TEST_CASE("sim: random loss on a clean path is not taken for a smaller path MTU") {
    // 10 % loss on every host, both ways (about 34 % round trip through a relay): padded
    // probes are lost as often as small ones, and nothing may be applied for it.
    pmtu_mesh pm(43, k_iface_mtu, {{"lan1a", "lan2a"}});
    auto& net = pm.m.net;
    for (auto& h : net.hosts()) h->loss = 0.10;
    REQUIRE(net.run_until([&] { return pm.m.relayed_live("lan1a", "lan2a"); }, 30000));
    uint64_t lowered_ms = 0, t0 = net.now(), last = t0;
    while (net.now() < t0 + 600000) {
        net.run_for(500);
        if (route_mtu(net, "lan1a", "lan2a")) lowered_ms += net.now() - last;
        last = net.now();
    }
    MESSAGE("10 % loss for 10 min: route MTU applied "
            << lowered_ms << " ms, black holes " << net["lan1a"].core->pmtu().black_holes
            << ", padded probes " << net["lan1a"].core->pmtu().probes_sent);
    CHECK(lowered_ms == 0);
    CHECK(net["lan1a"].core->pmtu().black_holes == 0);
    CHECK(net["lan1a"].core->pmtu().probes_acked > 0);
}

TEST_CASE("sim: after a relay failover the new path is measured, keeping the old MTU meanwhile") {
    pmtu_mesh pm(44, k_iface_mtu, {{"lan1a", "lan2a"}});
    auto& net = pm.m.net;
    limit_relay(net, "relay1", 1400);
    limit_relay(net, "relay2", 1400);
    const unsigned want = fits(1400);
    REQUIRE(net.run_until(
        [&] {
            auto q = net.peer("lan1a", "lan2a");
            return pm.m.relayed_live("lan1a", "lan2a") && q->path_mtu_complete &&
                   route_mtu(net, "lan1a", "lan2a") == want;
        },
        60000));
    auto used = net.peer("lan1a", "lan2a")->relay_name;
    std::string other = used == "relay1" ? "relay2" : "relay1";
    net[used].up = false;
    unsigned min_seen = want, max_seen = want;
    REQUIRE(net.run_until(
        [&] {
            unsigned r = route_mtu(net, "lan1a", "lan2a");
            min_seen = std::min(min_seen, r ? r : k_iface_mtu);
            max_seen = std::max(max_seen, r ? r : k_iface_mtu);
            auto q = net.peer("lan1a", "lan2a");
            return q->relay_name == other && pm.m.relayed_live("lan1a", "lan2a") &&
                   q->path_mtu_complete;
        },
        60000));
    net.run_for(20000);
    MESSAGE("failover " << used << " -> " << other << ": route MTU between " << min_seen << " and "
                        << max_seen << ", now " << route_mtu(net, "lan1a", "lan2a"));
    // Never back to the interface MTU on the way (full-size packets would be black-holed), nor
    // down to 1280 halfway through the new relay's search; it confirms the same MTU.
    CHECK(max_seen == want);
    CHECK(min_seen == want);
    CHECK(route_mtu(net, "lan1a", "lan2a") == want);
}

TEST_CASE("sim: path MTU of a direct pair is found with padded PINGs and applied") {
    pmtu_mesh pm(45, k_iface_mtu, {{"lan1a", "lan1b"}});
    auto& net = pm.m.net;
    auto direct = [&] {
        auto p = net.peer("lan1a", "lan1b"), q = net.peer("lan1b", "lan1a");
        return p && q && p->path == meshd::path_kind::direct && q->path == meshd::path_kind::direct;
    };
    REQUIRE(net.run_until(direct, 15000));
    net.run_for(5000);
    auto p = net.peer("lan1a", "lan1b");
    REQUIRE(p->path_mtu);
    CHECK(*p->path_mtu == k_iface_mtu);
    CHECK(route_mtu(net, "lan1a", "lan1b") == 0);
    // lan1a's uplink carries 1400-byte IPv6 packets at most, silently: a PING padded as
    // WireGuard's data message (32 + padded inner) must fit 1400 - 48.
    net["lan1a"].max_send = 1400 - 48;
    const unsigned want = (1400 - 48 - 32) / 16 * 16;
    uint64_t t = net.now();
    REQUIRE(net.run_until(
        [&] {
            auto q = net.peer("lan1a", "lan1b");
            unsigned r = route_mtu(net, "lan1a", "lan1b");
            return q->path_mtu_complete && r && r <= want && r + 8 > want;
        },
        30000));
    MESSAGE("direct, 1400 hop: route MTU " << route_mtu(net, "lan1a", "lan1b") << " (want " << want
                                           << ") after " << net.now() - t << " ms");
    CHECK(direct());  // small probes pass: still direct
    // lan1b's direction is not limited: nothing applied there.
    net.run_for(10000);
    CHECK(route_mtu(net, "lan1b", "lan1a") == 0);
}

TEST_CASE("sim: a learned direct path (the peer is NATed) is measured on the peer's mapping") {
    // relay1 is public, lan1a behind a NAT: relay1 cannot probe lan1a's addresses, its path to
    // lan1a is the one lan1a's PINGs open (learned). relay1's uplink carries 1400-byte IPv6
    // packets at most, silently: relay1 measures its direction through lan1a's control mapping.
    pmtu_mesh pm(47, k_iface_mtu, {{"relay1", "lan1a"}, {"lan1a", "relay1"}});
    auto& net = pm.m.net;
    auto direct = [&] {
        auto p = net.peer("relay1", "lan1a"), q = net.peer("lan1a", "relay1");
        return p && q && p->path == meshd::path_kind::direct && p->learned &&
               q->path == meshd::path_kind::direct && !q->learned;
    };
    REQUIRE(net.run_until(direct, 15000));
    net.run_for(5000);
    auto p = net.peer("relay1", "lan1a");
    REQUIRE(p->path_mtu);
    CHECK(*p->path_mtu == k_iface_mtu);
    CHECK(p->path_mtu_complete);
    CHECK(route_mtu(net, "relay1", "lan1a") == 0);
    net["relay1"].max_send = 1400 - 48;
    const unsigned want = (1400 - 48 - 32) / 16 * 16;
    uint64_t t = net.now();
    REQUIRE(net.run_until(
        [&] {
            auto q = net.peer("relay1", "lan1a");
            unsigned r = route_mtu(net, "relay1", "lan1a");
            return q->path_mtu_complete && r && r <= want && r + 8 > want;
        },
        30000));
    MESSAGE("learned, 1400 hop: relay1's route MTU to lan1a "
            << route_mtu(net, "relay1", "lan1a") << " (want " << want << ") after " << net.now() - t
            << " ms");
    CHECK(direct());
    CHECK(net["relay1"].core->pmtu().black_holes >= 1);
    // Steady: no further black hole while the pair stays active.
    const uint64_t holes = net["relay1"].core->pmtu().black_holes;
    net.run_for(30000);
    CHECK(net["relay1"].core->pmtu().black_holes == holes);
    CHECK(route_mtu(net, "relay1", "lan1a") <= want);
}

TEST_CASE("sim: a failover to a smaller relay path confirms the kept MTU there and drops it") {
    pmtu_mesh pm(46, k_iface_mtu, {{"lan1a", "lan2a"}});
    auto& net = pm.m.net;
    limit_relay(net, "relay1", 1400);
    limit_relay(net, "relay2", 1400);
    const unsigned big = fits(1400);
    REQUIRE(net.run_until(
        [&] {
            auto q = net.peer("lan1a", "lan2a");
            return pm.m.relayed_live("lan1a", "lan2a") && q->path_mtu_complete &&
                   route_mtu(net, "lan1a", "lan2a") == big;
        },
        60000));
    auto used = net.peer("lan1a", "lan2a")->relay_name;
    std::string other = used == "relay1" ? "relay2" : "relay1";
    // The other relay's path carries less: the MTU kept from the first one does not fit there.
    limit_relay(net, other, 1380);
    const unsigned small = fits(1380);
    REQUIRE(small < big);
    const uint64_t holes = net["lan1a"].core->pmtu().black_holes;
    net[used].up = false;
    const uint64_t t = net.now();
    REQUIRE(net.run_until([&] { return net.peer("lan1a", "lan2a")->relay_name == other; }, 10000));
    // Down to what fits (1280 at the black hole) within a confirmation's tries of the switch.
    REQUIRE(net.run_until(
        [&] {
            unsigned r = route_mtu(net, "lan1a", "lan2a");
            return r && r <= small;
        },
        30000));
    const uint64_t down_ms = net.now() - t;
    bool settled = net.run_until(
        [&] {
            auto q = net.peer("lan1a", "lan2a");
            return q->relay_name == other && q->path_mtu_complete &&
                   route_mtu(net, "lan1a", "lan2a") == small;
        },
        60000);
    MESSAGE("failover " << used << " (1400) -> " << other << " (1380): route MTU "
                        << route_mtu(net, "lan1a", "lan2a") << " (want " << small
                        << "): down after " << down_ms << " ms, search complete after "
                        << net.now() - t << " ms");
    CHECK(settled);
    // Found as a black hole of the kept value on the new path, within its first confirmation.
    CHECK(net["lan1a"].core->pmtu().black_holes > holes);
    CHECK(down_ms <= 10000);
}

// Issue 15: a restarted meshd read its interface's route MTUs (what the previous meshd measured)
// and keeps each on the peer's routes, confirmed on the path the pair takes: the routes never
// lose it, and no search starts from the interface MTU (a black hole for a smaller path until
// it completed). Without the read (before), the first data plane dropped the route MTU. A kept
// MTU larger than the new path is a black hole of its first confirmation: 1280, then the search.
TEST_CASE("sim: a restarted meshd keeps the route MTUs it measured and confirms them") {
    pmtu_mesh pm(48, k_iface_mtu, {{"lan1a", "lan2a"}, {"lan2a", "lan1a"}});
    auto& net = pm.m.net;
    limit_relay(net, "relay1", 1400);
    limit_relay(net, "relay2", 1400);
    const unsigned want = fits(1400);
    auto settled = [&] {
        auto q = net.peer("lan1a", "lan2a");
        return q && pm.m.relayed_live("lan1a", "lan2a") && q->path_mtu_complete &&
               route_mtu(net, "lan1a", "lan2a") == want;
    };
    REQUIRE(net.run_until(settled, 60000));

    // With the read: the route MTU holds at every 50 ms sample, through the restart and the
    // confirmation on the relay path taken again.
    auto routes = pm.restart(2000, true);
    REQUIRE(!routes.empty());
    auto& h = net["lan1a"];
    const uint64_t t = net.now();
    bool held = true;
    uint64_t confirmed_ms = 0;
    while (net.now() < t + 15000) {
        held &= kernel_route_mtu(net, "lan1a", "lan2a") == want;
        // The first padded probe answered is the kept size's (the confirmation comes first).
        if (!confirmed_ms && h.core->pmtu().probes_acked > 0) confirmed_ms = net.now() - t;
        net.run_for(50);
    }
    MESSAGE("restart with the routes read: route MTU " << want << " held throughout; confirmed on "
                                                       << net.peer("lan1a", "lan2a")->relay_name
                                                       << " " << confirmed_ms << " ms after start");
    CHECK(held);
    CHECK(confirmed_ms > 0);
    // Then the upward search (nothing above fits) ends where it started, without a change.
    CHECK(net.run_until(settled, 60000));
    CHECK(h.core->pmtu().black_holes == 0);
    CHECK(h.core->pmtu().changes == 0);
    size_t logged = 0;
    for (const auto& e : h.log)
        logged += e.msg == "path MTU from before the restart kept, to be confirmed";
    CHECK(logged == 1);

    // Without it (meshd before this change): the MTU is gone from the routes once the core
    // has the peer, until a new search completes.
    pm.restart(2000, false);
    const uint64_t t2 = net.now();
    uint64_t lost_ms = 0;
    while (net.now() < t2 + 15000 && !lost_ms) {
        if (net.peer("lan1a", "lan2a") && kernel_route_mtu(net, "lan1a", "lan2a") == 0) {
            lost_ms = net.now() - t2 + 1;
        }
        net.run_for(50);
    }
    MESSAGE("restart without the read: route MTU dropped " << lost_ms - 1 << " ms after start");
    CHECK(lost_ms > 0);
    REQUIRE(net.run_until(settled, 60000));

    // A kept MTU larger than the path now (a route MTU the path no longer carries): its first
    // confirmation is lost, 1280 at once, then the search finds what fits.
    pm.restart(2000, true, want + 64);
    REQUIRE(net.run_until([&] { return net.peer("lan1a", "lan2a").has_value(); }, 5000));
    CHECK(kernel_route_mtu(net, "lan1a", "lan2a") == want + 64);
    const uint64_t t3 = net.now();
    REQUIRE(net.run_until([&] { return route_mtu(net, "lan1a", "lan2a") <= want; }, 15000));
    const uint64_t down_ms = net.now() - t3;
    CHECK(net["lan1a"].core->pmtu().black_holes >= 1);
    CHECK(net.run_until(
        [&] {
            unsigned r = route_mtu(net, "lan1a", "lan2a");
            return net.peer("lan1a", "lan2a")->path_mtu_complete && r <= want && r + 8 > want;
        },
        60000));
    MESSAGE("kept MTU " << want + 64 << " too large: down after " << down_ms
                        << " ms, search settled at " << route_mtu(net, "lan1a", "lan2a"));
}
