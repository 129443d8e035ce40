// Issue 18, idle cost (adaptive liveness): what an idle cluster sends per node, by kind, and how
// it grows with the cluster (21 and 201 nodes); a pair with traffic still fails over within the
// bound; an idle pair whose relay died while it was idle gets a working path within 1 s of
// starting to send.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "test/sim/sim_idle_fixture.hpp"
#include "test/sim/sim_mesh_fixture.hpp"

namespace mw::sim {

namespace {

using meshd::path_kind;

// Records live 10 min here (the default is 12 h), so that the window (360 s, from 60 s after
// the cluster converged) holds one re-sign of every node: the cost of a re-sign cycle is in the
// figures (before issue 18's record refresh every re-sign was pushed by every relay to every
// node and by every LAN node to 3 neighbours: 36.9 KB a minute sent per LAN node at 201 nodes).
constexpr uint64_t resign_lifetime_ms = 600000;

idle_figures idle_cluster(int lans, uint64_t seed) {
    idle_figures f = measure_idle_cluster(lans, 9, seed, 60000, 360000, resign_lifetime_ms);
    REQUIRE(f.converged);
    // The core's own count of what it sent (meshctl status, metrics) is what left the host.
    CHECK(f.counts_match);
    MESSAGE(f.nodes << " nodes idle, per minute sent: LAN node probes " << f.lan_probe_bytes
                    << " B (" << f.lan_probe_packets << " packets, max " << f.lan_probe_max_bytes
                    << " B), NAT keepalives " << f.lan_keepalive_packets << " packets, sessions "
                    << f.lan_session_bytes << " B (" << f.lan_session_packets << " packets for "
                    << f.relayed_pairs << " relayed pairs), membership " << f.lan_member_bytes
                    << " B, anti-entropy " << f.lan_ae_bytes << " B (" << f.lan_ae_packets
                    << " packets); relay probes " << f.relay_probe_bytes << " B, forwarded "
                    << f.relay_forwarded_bytes << " B, membership " << f.relay_member_bytes
                    << " B (" << f.relay_member_packets << " packets); LAN node received "
                    << f.lan_rx_packets << " packets, " << f.lan_rx_bytes
                    << " B; re-signs in the window " << f.resigns << " (" << f.lan_resigns
                    << " per LAN node)");
    // The window holds a re-sign cycle: every LAN node re-signed once (twice at most).
    CHECK(f.lan_resigns >= 1.0);
    CHECK(f.lan_resigns <= 2.0);
    return f;
}

// Both ends' simulated WireGuard rx from each other grew since `rx_a`/`rx_b`.
bool flowing(sim_net& net, const std::string& a, const std::string& b, uint64_t rx_a,
             uint64_t rx_b) {
    return net[a].wg_rx[b] > rx_a && net[b].wg_rx[a] > rx_b;
}

std::string other_relay(const std::string& r) {
    return r == "relay1" ? "relay2" : "relay1";
}

}  // namespace

namespace {

// Idle liveness at 21 nodes and at `large_lans` LANs of 9 (+ 3 relays): bounded per node, and flat
// from the small cluster to the large one.
void check_idle_growth(int large_lans) {
    const idle_figures small = idle_cluster(2, 181);  // 21 nodes
    const idle_figures large = idle_cluster(large_lans, 182);
    for (const auto* f : {&small, &large}) {
        CHECK(f->active_pairs == 0);        // nothing carries traffic: every pair is idle
        CHECK(f->pairs_without_path == 0);  // and every pair keeps its path
        // Three relays probed every 120 s (a PING is ~150 bytes; the used ones also get a 4-byte
        // NAT keepalive every 25 s between): a few hundred bytes a minute, whatever the
        // cluster size (~1.1 KB with probes every 25 s). Before issue 18 a LAN node sent a probe to
        // every relay every 1 s (100 ms for relays in a warm set) and to every peer every 1-5 s.
        CHECK(f->lan_probe_bytes < 2000);
        CHECK(f->lan_probe_packets < 15);
        CHECK(f->lan_probe_max_bytes < 4000);
        // At most one keepalive per relay per 25 s (fewer: the full probes stand in for some);
        // the relays are public and send none.
        CHECK(f->lan_keepalive_packets > 0);
        CHECK(f->lan_keepalive_packets <= 3 * 60.0 / 25.0);
        CHECK(f->relay_keepalive_packets == 0);
        // A relay answers its clients' probes (one PONG per probe), and forwards nothing.
        CHECK(f->relay_probe_bytes < 1500.0 * double(f->nodes));
        CHECK(f->relay_forwarded_bytes == 0);
        // Idle relayed pairs send no session requests: the relays keep their sessions while
        // they hear the nodes' PINGs (issue 18; relay_session_table::heard). Before, each pair
        // refreshed its two sessions every idle_session_refresh_ms (150 s): the one per-pair
        // term left, ~0.8 packets per pair a minute.
        CHECK(f->lan_session_packets < 0.05 * f->relayed_pairs + 0.5);
        // Anti-entropy with the 8 LAN neighbours: its rounds back off while digests match (10 s
        // doubling to 640 s), so the window (60-420 s after settling) holds about two rounds
        // per pair, a DIGEST of ~185 B each way. At a round every 10 s it was ~8.9 KB a minute.
        // The re-signs (records refreshed everywhere within a few ms) do not make rounds differ.
        CHECK(f->lan_ae_packets < 8);
        CHECK(f->lan_ae_bytes < 8 * 200);
        // Membership (issue 18): one HELLO (~420 B with the digest) per relay per hello_interval
        // (60 s), unanswered while the digests match; our own re-sign: a HELLO to each relay and
        // a push to 3 neighbours. A re-sign of another node's record (a refresh: the same content
        // at a newer seq) is not pushed on by anyone but one relay per node. With every relay
        // pushing every re-sign to every node and every LAN node pushing it on to 3 neighbours
        // it was 5.8 KB a minute at 21 nodes and 36.9 KB at 201; with a HELLO to each relay
        // every 10 s answered with every record ~7.8 KB at 21 nodes.
        CHECK(f->lan_member_bytes < 3 * 1.5 * 450);
        // The relays' membership: each refresh to the nodes that take refreshes from it (a
        // third of them), so every node receives each re-sign once, plus their own HELLOs;
        // every relay pushing every refresh to every node was 3 packets per node and re-sign.
        const double pushes_per_min = f->resigns * 60000.0 / 360000.0 * double(f->nodes);
        CHECK(3 * f->relay_member_packets < 1.3 * pushes_per_min + 50);
    }
    // Membership sent per LAN node is flat too: a digest and its own record, not the others'.
    CHECK(large.lan_member_bytes < 1.25 * small.lan_member_bytes + 200);
    // Probing is flat from 21 to 201 nodes (within noise), not O(N).
    CHECK(large.lan_probe_bytes < 1.25 * small.lan_probe_bytes);
    CHECK(large.lan_probe_packets < 1.25 * small.lan_probe_packets);
    CHECK(large.relayed_pairs > 5 * small.relayed_pairs);  // the cluster did grow
}

}  // namespace

// 102 nodes in the suite: the 201-node run below took 82 of the simulator test's 112 CPU s (the
// cost grows with the square of the cluster), for the same checks.
TEST_CASE("sim: idle liveness per node is bounded and does not grow with the cluster") {
    check_idle_growth(11);  // 102 nodes
}

// CTest sim_idle_201, label long (not in install/test.sh).
TEST_CASE("sim long: idle liveness at 201 nodes, as at 21") {
    check_idle_growth(22);  // 201 nodes
}

TEST_CASE("sim: a pair with traffic still fails over within 1 s; an idle pair is not probed") {
    std_mesh m(183);
    auto& net = m.net;
    // lan1a <-> lan2a carry traffic; lan1b <-> lan2b stay idle.
    net.simulate_wireguard(100, 128, {{"lan1a", "lan2a"}, {"lan2a", "lan1a"}});
    REQUIRE(net.run_until([&] { return m.relayed_live("lan1a", "lan2a"); }, 10000));
    net.run_for(20000);
    CHECK(net["lan1a"].core->active_pairs() == 1);  // lan2a only
    CHECK(net["lan2a"].core->active_pairs() == 1);
    CHECK(net["lan1b"].core->active_pairs() == 0);
    check_wireguard_flows(net, "lan1a", "lan2a");
    // The data plane says which relayed pairs are active: only those get WireGuard's keepalive
    // (dataplane_planner); the idle one none.
    auto dp = [&](const std::string& a, const std::string& b) {
        for (const auto& d : net[a].core->dataplane()) {
            if (d.name == b) return d;
        }
        FAIL("no data plane for " << a << " -> " << b);
        return meshd::peer_dataplane{};
    };
    CHECK(dp("lan1a", "lan2a").path == path_kind::relay);
    CHECK(dp("lan1a", "lan2a").active);
    CHECK(dp("lan2a", "lan1a").active);
    CHECK(dp("lan1b", "lan2b").path == path_kind::relay);
    CHECK_FALSE(dp("lan1b", "lan2b").active);
    CHECK_FALSE(dp("lan2b", "lan1b").active);
    CHECK_FALSE(dp("lan1a", "lan1b").active);  // direct: never set

    const std::string used = net.peer("lan1a", "lan2a")->relay_name;
    const std::string other = other_relay(used);
    net[used].up = false;
    const uint64_t t = net.now();
    net.run_for(20);  // frames already on their way
    const uint64_t rx_a = net["lan1a"].wg_rx["lan2a"], rx_b = net["lan2a"].wg_rx["lan1a"];
    REQUIRE(net.run_until(
        [&] {
            return net.peer("lan1a", "lan2a")->relay_name == other &&
                   net.peer("lan2a", "lan1a")->relay_name == other &&
                   flowing(net, "lan1a", "lan2a", rx_a, rx_b);
        },
        5000));
    const uint64_t took = net.now() - t;
    MESSAGE("relay " << used << " died under traffic: both ends on " << other
                     << ", WireGuard flowing again after " << took << " ms");
    CHECK(took < 1000);
}

TEST_CASE("sim: an idle pair whose relay died while it was idle flows within 1 s of sending") {
    const meshd::node_core_config defaults;
    // A used relay gets a full probe every idle_used_ping_interval (120 s; NAT keepalives in
    // between prove nothing): dead for 60 s it may not be noticed yet, dead for 150 s it is.
    const uint64_t noticed_ms = defaults.idle_used_ping_interval_ms + defaults.path_timeout_ms;
    for (uint64_t dead_ms : {uint64_t(60000), uint64_t(150000)}) {
        CAPTURE(dead_ms);
        std_mesh m(184);
        auto& net = m.net;
        // Not yet noticed, the pair fails over from its first unanswered probes: at once with
        // the relay proxy's traffic notice (node_core::on_traffic), as the daemon has it.
        net.wg_notify_traffic = true;
        REQUIRE(net.run_until([&] { return m.relayed_live("lan1b", "lan2b"); }, 10000));
        net.run_for(5 * 60000 - dead_ms);  // idle for 5 minutes in all
        CHECK(net["lan1b"].core->active_pairs() == 0);
        CHECK(net["lan2b"].core->active_pairs() == 0);
        const std::string used = net.peer("lan1b", "lan2b")->relay_name;
        net[used].up = false;
        net.run_for(dead_ms);
        if (dead_ms > noticed_ms) {
            // The relays' slow probes found it dead meanwhile: both ends already moved.
            CHECK(net.peer("lan1b", "lan2b")->relay_name == other_relay(used));
            CHECK(net.peer("lan2b", "lan1b")->relay_name == other_relay(used));
        }
        const uint64_t rx_a = net["lan1b"].wg_rx["lan2b"], rx_b = net["lan2b"].wg_rx["lan1b"];
        net.simulate_wireguard(100, 128, {{"lan1b", "lan2b"}, {"lan2b", "lan1b"}});
        const uint64_t t = net.now();
        REQUIRE(net.run_until([&] { return flowing(net, "lan1b", "lan2b", rx_a, rx_b); }, 1000));
        MESSAGE("idle 5 min, relay " << used << " dead for the last " << dead_ms / 1000
                                     << " s: flowing after " << net.now() - t << " ms");
        CHECK(net.peer("lan1b", "lan2b")->relay_name == other_relay(used));
    }
}

// Issue 18: at idle, a used relay gets a full sealed PING every idle_used_ping_interval (120 s)
// and, from a node behind a NAT, a 4-byte NAT_KEEPALIVE every idle_ping_interval (25 s) in
// between, to the address in use; a node the relays see at its own endpoint sends none.
TEST_CASE("sim: idle NAT keepalives every 25 s, relay probes every 120 s; none without a NAT") {
    const meshd::node_core_config defaults;
    std_mesh m(187, false);
    auto& net = m.net;
    net.add_public("pub1", 2);  // a public address: no NAT between it and the relays
    m.names.push_back("pub1");
    auto specs = net.relay_specs();
    for (auto& h : net.hosts()) net.start_core(*h, specs);
    REQUIRE(net.run_until([&] { return m.all_know_all(); }, 15000));
    net.run_for(3 * 60000);  // past the start-up's active spells and fast rounds
    for (const auto& n : m.names) CHECK(net[n].core->active_pairs() == 0);

    struct sent {
        std::vector<uint64_t> pings, keepalives;
    };
    std::map<std::pair<std::string, std::string>, sent> log;  // (sender, relay)
    const ip_address relay_addr[2] = {net["relay1"].addr, net["relay2"].addr};
    const uint64_t rx_before = net["relay1"].nat_keepalives_rx + net["relay2"].nat_keepalives_rx;
    net.on_send = [&](const sim_host& src, const wg_endpoint& to, const std::vector<uint8_t>& b) {
        if (b.size() < 4 || b[0] != 'M' || b[1] != 'W') return;
        for (int r = 0; r < 2; ++r) {
            if (!(to.address == relay_addr[r])) continue;
            auto& s = log[{src.name, r == 0 ? "relay1" : "relay2"}];
            if (b[3] == 0x03) s.pings.push_back(net.now());
            if (b[3] == 0x81) s.keepalives.push_back(net.now());
        }
    };
    const uint64_t window = 10 * 60000;
    net.run_for(window);
    net.on_send = nullptr;

    const uint64_t ka = defaults.idle_ping_interval_ms, full = defaults.idle_used_ping_interval_ms;
    const uint64_t slack = 2 * meshd::core_context::tick_quantum_ms;
    uint64_t lan_keepalives = 0;
    for (std::string n : {"lan1a", "lan1b", "lan2a", "lan2b"}) {
        // Every LAN node has relayed pairs (the other LAN) whose warm sets hold both relays.
        for (std::string r : {"relay1", "relay2"}) {
            CAPTURE(n);
            CAPTURE(r);
            const auto& s = log[{n, r}];
            MESSAGE(n << " -> " << r << " in " << window / 1000 << " s: " << s.pings.size()
                      << " PINGs, " << s.keepalives.size() << " keepalives");
            REQUIRE(s.pings.size() >= 4);
            CHECK(s.pings.size() <= 6);
            for (size_t i = 1; i < s.pings.size(); ++i) {
                CHECK(s.pings[i] - s.pings[i - 1] >= full - slack);
                CHECK(s.pings[i] - s.pings[i - 1] <= full + slack);
            }
            // Between two PINGs, a keepalive every 25 s: 4 per 120 s.
            CHECK(s.keepalives.size() >= 4 * (s.pings.size() - 1));
            CHECK(s.keepalives.size() <= 4 * (s.pings.size() + 1));
            std::vector<uint64_t> all = s.pings;
            all.insert(all.end(), s.keepalives.begin(), s.keepalives.end());
            std::sort(all.begin(), all.end());
            for (size_t i = 1; i < all.size(); ++i) CHECK(all[i] - all[i - 1] <= ka + slack);
            lan_keepalives += s.keepalives.size();
        }
    }
    // The relays took them before their cores (dropped, counted).
    CHECK(net["relay1"].nat_keepalives_rx + net["relay2"].nat_keepalives_rx - rx_before ==
          lan_keepalives);
    // No NAT between pub1 (or a relay) and the relays: their PONGs show its own endpoint.
    size_t pub_pings = 0;
    for (std::string n : {"pub1", "relay1", "relay2"}) {
        for (std::string r : {"relay1", "relay2"}) {
            CAPTURE(n);
            CAPTURE(r);
            CHECK(log[{n, r}].keepalives.empty());
            if (n == "pub1") pub_pings += log[{n, r}].pings.size();
        }
    }
    CHECK(pub_pings >= 4);  // pub1 does probe its relays (slowly)
}

TEST_CASE(
    "sim: an idle pair whose relay died just before it sends fails over from its first "
    "unanswered probes") {
    for (bool notify : {false, true}) {
        CAPTURE(notify);
        std_mesh m(185);
        auto& net = m.net;
        // As the daemon's relay proxy does: the first WireGuard frame to a quiet peer tells the
        // core at once (node_core::on_traffic), before the next 2 s counter read.
        net.wg_notify_traffic = notify;
        REQUIRE(net.run_until([&] { return m.relayed_live("lan1b", "lan2b"); }, 10000));
        net.run_for(3 * 60000);
        const std::string used = net.peer("lan1b", "lan2b")->relay_name;
        net[used].up = false;
        net.run_for(2000);  // the slow probes (every 120 s) have not noticed yet
        CHECK(net.peer("lan1b", "lan2b")->relay_name == used);
        const uint64_t rx_a = net["lan1b"].wg_rx["lan2b"], rx_b = net["lan2b"].wg_rx["lan1b"];
        net.simulate_wireguard(100, 128, {{"lan1b", "lan2b"}, {"lan2b", "lan1b"}});
        const uint64_t t = net.now();
        REQUIRE(net.run_until([&] { return flowing(net, "lan1b", "lan2b", rx_a, rx_b); }, 5000));
        const uint64_t took = net.now() - t;
        MESSAGE(std::string(notify ? "with" : "without")
                << " the proxy's traffic notice: relay " << used
                << " died 2 s before the idle pair sent; flowing after " << took << " ms");
        // Without the notice: up to two counter reads (the first may hold a frame or two, under
        // traffic_bytes_per_read) + the fast relay timeout (400 ms).
        CHECK(took < (notify ? 1000u : 5000u));
        CHECK(net.peer("lan1b", "lan2b")->relay_name == other_relay(used));
    }
}

TEST_CASE(
    "sim: an idle pair whose direct path died is woken by low-rate one-way traffic and relays") {
    std_mesh m(186);
    auto& net = m.net;
    auto both = [&](path_kind k) {
        return net.path("lan1a", "lan1b") == k && net.path("lan1b", "lan1a") == k;
    };
    REQUIRE(net.run_until([&] { return both(path_kind::direct); }, 10000));
    net.run_for(60000);
    REQUIRE(net["lan1a"].core->active_pairs() == 0);
    // The LAN path dies silently both ways; the relays still reach both.
    net["lan1a"].drop_from.push_back(net["lan1b"].addr);
    net["lan1b"].drop_from.push_back(net["lan1a"].addr);
    net.run_for(10000);
    CHECK(both(path_kind::direct));  // idle: the decision holds, nothing tests it
    CHECK(net["lan1a"].core->active_pairs() == 0);
    // lan1a's pod pings once a second and nothing comes back: 2 x 128 bytes a counter read, below
    // traffic_bytes_per_read (400), at or above unanswered_tx_bytes_per_read (200) with rx flat.
    const uint64_t rx_b = net["lan1b"].wg_rx["lan1a"];
    net.simulate_wireguard(1000, 128, {{"lan1a", "lan1b"}});
    const uint64_t t = net.now();
    REQUIRE(net.run_until([&] { return net.path("lan1a", "lan1b") == path_kind::relay; }, 15000));
    const uint64_t took = net.now() - t;
    MESSAGE("idle pair, direct path dead, one-way 1 frame/s: relayed after " << took << " ms");
    // A counter read wakes it (the simulation's first read of the pair is its baseline: two
    // reads, 4 s; the daemon reads every peer from the start), its probes go unanswered for
    // path_timeout (3.5 s), then a tick. Under the old rule (400 bytes) it never woke.
    CHECK(took <= 4000 + 3500 + 500);
    CHECK(net["lan1a"].core->active_pairs() == 1);
    // lan1b receives nothing and is idle: its decision holds (the simulation has no keepalives or
    // handshake retries, which would wake it in the daemon), so the relay session is half open.
    CHECK(net.path("lan1b", "lan1a") == path_kind::direct);
    CHECK(net["lan1b"].wg_rx["lan1a"] == rx_b);
    // Once it sends too (a reply, a keepalive, handshake retries: anything unanswered), it wakes
    // and moves, and the frames flow through the relay both ways.
    const uint64_t rx_a = net["lan1a"].wg_rx["lan1b"];
    net.simulate_wireguard(1000, 128, {{"lan1a", "lan1b"}, {"lan1b", "lan1a"}});
    REQUIRE(net.run_until([&] { return both(path_kind::relay); }, 15000));
    CHECK(net.run_until([&] { return flowing(net, "lan1a", "lan1b", rx_a, rx_b); }, 3000));
    MESSAGE("lan1b sending too: both relayed and flowing after " << net.now() - t << " ms");
}

// Issue 18, records at idle: on the testbed an idle LAN node still received ~1 KB a minute of
// RECORDS although every node re-signs its unchanged record only every ~6 h. Whatever changes
// in a record is pushed to the whole cluster, so at idle nothing may: not the RTTs a node
// publishes for its relays when probe samples are noisy (a user-space delay bridge, a busy
// machine: samples spike by tens of ms), nor its attached-relay list when probes are lost now
// and then. An hour of virtual time at idle with such noise: no re-sign. Published from the
// ranking's window (the minimum of 3 idle rounds, as before), the same noise re-signs.
namespace {

// Re-signs of every node in an idle hour with `publish_window_ms`: {for relay RTTs, for any
// reason other than the 6-hourly refresh}.
std::pair<uint64_t, uint64_t> noisy_idle_resigns(uint64_t publish_window_ms,
                                                 double busy_prob = 0.05) {
    std_mesh m(1807, false);
    auto& net = m.net;
    // As the testbed: relay2 behind a 25 ms one-way delay bridge (RTT ~50 ms), relay1 near.
    net["relay2"].delay_ms = 25;
    for (auto& h : net.hosts()) {
        h->jitter_ms = 3;
        h->loss = 0.02;  // a probe lost now and then: a relay missing for a round
        h->busy_prob = busy_prob;
        h->busy_ms = 40;  // a sample that spikes (CPU wait on a loaded machine)
    }
    meshd::node_core_config cfg;
    cfg.publish_rtt_window_ms = publish_window_ms;
    auto specs = net.relay_specs();
    for (auto& h : net.hosts()) net.start_core(*h, specs, "sim cluster psk 0123456789", cfg);
    REQUIRE(net.run_until([&] { return m.all_know_all(); }, 30000));
    net.run_for(5 * 60000);  // past the start-up's changes and active spells
    std::map<std::string, std::array<uint64_t, meshd::resign_reason_count>> before;
    for (const auto& n : m.names) {
        before[n] = net[n].core->record_resigns();
        net[n].log.clear();
    }
    net.run_for(60 * 60000);
    uint64_t changes = 0, rtt_changes = 0;
    for (const auto& n : m.names) {
        const auto& after = net[n].core->record_resigns();
        std::string line;
        for (size_t i = 0; i < meshd::resign_reason_count; ++i) {
            const uint64_t d = after[i] - before[n][i];
            if (d) {
                line +=
                    std::string(" ") + to_string(meshd::resign_reason(i)) + "=" + std::to_string(d);
            }
            if (meshd::resign_reason(i) != meshd::resign_reason::refresh) changes += d;
            if (meshd::resign_reason(i) == meshd::resign_reason::relay_rtt) rtt_changes += d;
        }
        MESSAGE("publish window " << publish_window_ms / 1000 << " s: " << n
                                  << " re-signs in an idle hour:"
                                  << (line.empty() ? " none" : line));
        CHECK(net[n].core->peers().size() == m.names.size() - 1);
        // The log says why (at most a few lines: this is what a user reads).
        size_t shown = 0;
        for (const auto& e : net[n].log) {
            if (e.msg != "signed our peer record" && e.msg != "relay down" && e.msg != "relay up")
                continue;
            std::string l = e.msg;
            for (const auto& [k, v] : e.fields) l += " " + k + "=" + v;
            if (shown++ < 4) MESSAGE("  " << n << ": " << l);
        }
    }
    return {rtt_changes, changes};
}

}  // namespace

TEST_CASE("sim: noisy relay RTTs and lost probes at idle re-sign no record") {
    // RTT noise re-signs nothing. A relay that misses its retries too (2 % loss each way: a
    // lost idle PING and the two retries within path_timeout, about one chance in 600 per idle
    // round) drops out of the node's list and comes back: two re-signs (`relays`), a known cost
    // (docs/architecture.md "What still changed at idle"); at most one such spell in the hour.
    const auto [rtt, all] = noisy_idle_resigns(meshd::node_core_config{}.publish_rtt_window_ms);
    CHECK(rtt == 0);
    CHECK(all <= 2);
    // The cause: the minimum of three idle rounds moves past the threshold now and then. Shown
    // with busier hosts: at 5 % such a re-sign is rarer than one an hour (one in this hour
    // before session-keep, whose fewer datagrams changed the random draws; none in 4 seeds
    // after), at 10 % 2, at 20 % 8.
    CHECK(noisy_idle_resigns(0, 0.2).first > 0);
}

namespace {

// The std_mesh with every core started, relay1 with a fixed identity seed so that it can restart
// as the same node, and the relay proxy's first-frame notification on (as the daemon's proxy
// tells the core at once when a quiet peer gets a frame).
struct restartable_mesh {
    std_mesh m;
    meshd::identity_seed seed1{};
    std::vector<meshd::relay_spec> specs;
    meshd::node_core_config cc;

    restartable_mesh(uint64_t seed, uint8_t relay1_seed) : m(seed, false) {
        seed1.fill(relay1_seed);
        specs = m.net.relay_specs();
        m.net.wg_notify_traffic = true;
        for (auto& h : m.net.hosts()) {
            if (h->name == "relay1") m.net.next_seed = seed1;
            m.net.start_core(*h, specs, "sim cluster psk 0123456789", cc);
        }
    }
    // A new process: same identity, a later boot epoch, nothing held (records, sessions).
    void restart_relay1() {
        auto& relay1 = m.net["relay1"];
        relay1.up = false;
        relay1.core.reset();
        relay1.table.reset();
        m.net.run_for(2000);
        relay1.up = true;
        m.net.next_seed = seed1;
        m.net.start_core(relay1, specs, "sim cluster psk 0123456789", cc);
    }
};

}  // namespace

// Membership at idle (issue 18): a node HELLOs each relay once per hello_interval with its
// store's digest and the relay answers only when it holds something the node lacks; a record
// change still reaches every node at once (the relay's push); a relay that restarts (a new boot
// epoch, an empty store) has every node registered again within an idle probe interval (120 s),
// not a HELLO interval, because its PONG shows the new epoch.
TEST_CASE(
    "sim: idle membership — digests in HELLO, pushes at once, a restarted relay re-registered") {
    restartable_mesh rm(19, 0x71);
    auto& m = rm.m;
    auto& net = m.net;
    REQUIRE(net.run_until([&] { return m.all_know_all(); }, 15000));
    // Past the start-up's changes (the first published relay RTTs re-sign every record once).
    net.run_for(90000);
    const uint64_t interval = meshd::node_core_config{}.hello_interval_ms;
    {
        // Two HELLO intervals idle: per node about one HELLO per relay per interval and no
        // RECORDS answers (the digests match), whatever the number of records.
        // Two intervals (600 s) hold two re-signs of every record (records live 10 min and are
        // re-signed at 5): each re-sign is a HELLO to each relay (the regular one falls due at
        // about the same time) and a RECORDS push to the direct neighbours (lan1a: lan1b and
        // the two relays; anti-entropy), and every relay pushes each re-signed record to the
        // nodes registered with it. Measured: 12 datagrams per LAN node, 68 per relay.
        send_meter meter(net);
        const uint64_t seq_before = net["lan1a"].core->self_record().seq;
        net.run_for(2 * interval);
        const uint64_t resigns = net["lan1a"].core->self_record().seq - seq_before;
        MESSAGE("lan1a re-signed " << resigns << " times in " << 2 * interval / 1000 << " s");
        CHECK(resigns <= 2);
        for (std::string n : {"lan1a", "lan1b", "lan2a", "lan2b"}) {
            const auto& c = meter.of(n);
            MESSAGE(n << " membership in " << 2 * interval / 1000 << " s: " << c.member_packets
                      << " datagrams, " << c.member_bytes << " B");
            // 2 re-signs x (2 relays + 3 neighbours) + 2 regular HELLOs out of phase.
            CHECK(c.member_packets <= 2 * (2 + 3) + 2);
        }
        for (std::string r : {"relay1", "relay2"}) {
            const auto& c = meter.of(r);
            MESSAGE(r << " membership in " << 2 * interval / 1000 << " s: " << c.member_packets
                      << " datagrams, " << c.member_bytes << " B");
            // 2 re-signs x 6 records x 5 other registered nodes, its own HELLOs and pushes to
            // its direct neighbours; nothing answered (the digests match).
            CHECK(c.member_packets <= 2 * 6 * 5 + 10);
        }
    }
    // A change still travels at once: lan2b re-signs (a new endpoint); everyone has it within 1 s.
    auto& lan2b = net["lan2b"];
    const meshd::node_id id2b = lan2b.core->self_record().id();
    auto eps = lan2b.core->self_record().endpoints;
    eps.push_back(wg_endpoint::parse("192.0.2.99:51821").value());
    lan2b.core->set_endpoints(eps, lan2b.clock(net.now()));
    const uint64_t seq = [&] {
        net.run_for(1);
        return lan2b.core->self_record().seq;
    }();
    const uint64_t t_change = net.now();
    auto all_have = [&](uint64_t s) {
        for (const auto& n : m.names) {
            if (n == "lan2b") continue;
            const auto* r = net[n].core->store().find(id2b);
            if (!r || r->seq != s) return false;
        }
        return true;
    };
    REQUIRE(net.run_until([&] { return all_have(seq); }, 1000));
    MESSAGE("a changed record everywhere after " << net.now() - t_change << " ms");
    // relay1 restarts: a new process (same identity, a later boot epoch, nothing held).
    rm.restart_relay1();
    auto& relay1 = net["relay1"];
    const uint64_t t_restart = net.now();
    auto registered = [&] {
        size_t n = 0;
        for (const auto& [id, reg] : relay1.core->registrations()) n += reg.last_hello_ms > 0;
        return n;
    };
    // The new epoch shows in a PONG: a used relay's next full probe comes within
    // idle_used_ping_interval (its NAT keepalives are not answered).
    const uint64_t idle_probe = meshd::node_core_config{}.idle_used_ping_interval_ms;
    REQUIRE(net.run_until([&] { return registered() == m.names.size() - 1; }, idle_probe + 5000));
    MESSAGE("restarted relay1 had every node registered again after " << net.now() - t_restart
                                                                      << " ms");
    REQUIRE(net.run_until([&] { return relay1.core->store().size() == m.names.size() - 1; }, 5000));
    // And it pushes again: a change made now reaches every node at once.
    eps.push_back(wg_endpoint::parse("192.0.2.98:51821").value());
    lan2b.core->set_endpoints(eps, lan2b.clock(net.now()));
    net.run_for(1);
    const uint64_t seq2 = lan2b.core->self_record().seq;
    CHECK(seq2 > seq);
    CHECK(net.run_until([&] { return all_have(seq2); }, 1000));
}

// Issue 18, relay sessions at idle: a relay keeps an idle session while it hears both nodes at
// their bound addresses (their PINGs, every 120 s), and says so (RELAY_SESSION_KEPT); an idle
// pair then sends no session request at all. A relay that restarts loses them: the new boot epoch
// in its next PONG has them bound again, and traffic resuming before that binds them at once. A
// relay that does not announce keeping (one from before) gets the refresh every 150 s as before.
namespace {

// Session datagrams sent in the window, per (sender, type byte).
struct session_log {
    std::map<std::pair<std::string, uint8_t>, std::vector<uint64_t>> at;
    size_t count(const std::string& who, uint8_t type) { return at[{who, type}].size(); }
};

void log_sessions(sim_net& net, session_log& log) {
    net.on_send = [&](const sim_host& src, const wg_endpoint&, const std::vector<uint8_t>& b) {
        if (b.size() < 4 || b[0] != 'M' || b[1] != 'W') return;
        if ((b[3] >= 0x05 && b[3] <= 0x07) || b[3] == 0x0e)
            log.at[{src.name, b[3]}].push_back(net.now());
    };
}

const std::vector<std::string> lan_names{"lan1a", "lan1b", "lan2a", "lan2b"};

size_t sessions_at(sim_net& net, const std::string& relay) {
    return net[relay].table ? net[relay].relay_table().size() : 0;
}

}  // namespace

TEST_CASE("sim: a keeping relay: one session request per session in an idle hour (the backstop)") {
    std_mesh m(1881);
    auto& net = m.net;
    REQUIRE(net.run_until([&] { return m.all_know_all(); }, 15000));
    REQUIRE(net.run_until([&] { return m.relayed_live("lan1b", "lan2b"); }, 10000));
    REQUIRE(net.run_until([&] { return m.all_idle(); }, 60000));
    net.run_for(30000);  // the last active refreshes answered: kept from here on
    const size_t held1 = sessions_at(net, "relay1"), held2 = sessions_at(net, "relay2");
    // 4 relayed pairs (lan1x <-> lan2y) at both relays (warm_relays = 2).
    CHECK(held1 == 4);
    CHECK(held2 == 4);
    session_log log;
    log_sessions(net, log);
    const uint64_t backstop = meshd::node_core_config{}.kept_session_refresh_ms;
    net.run_for(backstop - 10 * 60000);
    size_t requests = 0;
    for (const auto& n : lan_names) requests += log.count(n, 0x05);
    CHECK(requests == 0);  // none until the backstop
    net.run_for(10 * 60000);
    net.on_send = nullptr;
    requests = 0;
    for (const auto& n : lan_names) {
        CAPTURE(n);
        // 2 relayed pairs x 2 relays: each kept session requested once, by the backstop.
        CHECK(log.count(n, 0x05) == 4);
        requests += log.count(n, 0x05);
    }
    MESSAGE("idle hour at keeping relays: " << requests << " session requests from 4 LAN nodes ("
                                            << 4 * 2 * 3600 / 150 << " with the 150 s refresh)");
    // The relays still hold every session (kept: no frame for an hour, past the 180 s timeout).
    CHECK(sessions_at(net, "relay1") == held1);
    CHECK(sessions_at(net, "relay2") == held2);
    const uint64_t expired = net["relay1"].relay_table().drops(meshd::relay_drop::expired) +
                             net["relay2"].relay_table().drops(meshd::relay_drop::expired);
    const uint64_t unknown = net["relay1"].relay_table().drops(meshd::relay_drop::unknown_session) +
                             net["relay2"].relay_table().drops(meshd::relay_drop::unknown_session);
    // Traffic resumes: the first frames go through the session kept for an hour.
    const uint64_t rx_a = net["lan1b"].wg_rx["lan2b"], rx_b = net["lan2b"].wg_rx["lan1b"];
    net.simulate_wireguard(100, 128, {{"lan1b", "lan2b"}, {"lan2b", "lan1b"}});
    const uint64_t t = net.now();
    REQUIRE(net.run_until([&] { return flowing(net, "lan1b", "lan2b", rx_a, rx_b); }, 1000));
    MESSAGE("after the idle hour: flowing after " << net.now() - t << " ms");
    CHECK(net["relay1"].relay_table().drops(meshd::relay_drop::expired) +
              net["relay2"].relay_table().drops(meshd::relay_drop::expired) ==
          expired);
    CHECK(net["relay1"].relay_table().drops(meshd::relay_drop::unknown_session) +
              net["relay2"].relay_table().drops(meshd::relay_drop::unknown_session) ==
          unknown);
}

// A peer offline for longer than the relays' keep window (a reboot, an uplink cut) while we stay
// idle: each relay unbinds only the quiet peer's side of the session and keeps ours, so the
// peer's requests when it is back complete the session although we, idle, ask for nothing, and
// its frames reach us with none from our side. (Dropping the session whole stranded us: an idle
// node does not refresh a kept session, so its side was never bound again.)
TEST_CASE("sim: a peer back after the keep window reaches an idle node through the kept side") {
    std_mesh m(1884);
    auto& net = m.net;
    REQUIRE(net.run_until([&] { return m.all_know_all(); }, 15000));
    REQUIRE(net.run_until([&] { return m.relayed_live("lan1b", "lan2b"); }, 10000));
    REQUIRE(net.run_until([&] { return m.all_idle(); }, 60000));
    net.run_for(30000);
    const auto id2b = net["lan2b"].core->id(), id1b = net["lan1b"].core->id();
    const size_t held = sessions_at(net, "relay1");
    REQUIRE(held == 4);
    session_log log;
    log_sessions(net, log);
    net["lan2b"].up = false;
    const uint64_t keep = meshd::node_core_config{}.relay_keep_ms;
    net.run_for(keep + 4 * 60000);
    for (std::string r : {"relay1", "relay2"}) {
        CAPTURE(r);
        CHECK(sessions_at(net, r) == held);  // halved, not dropped
        CHECK(net[r].relay_table().node_sessions(id2b) == 0);
        CHECK(net[r].relay_table().node_sessions(id1b) == 2);
    }
    net["lan2b"].up = true;
    const uint64_t t_back = net.now();
    // Only lan2b sends (a TCP connect from its pod): lan1b must receive without sending first.
    const uint64_t rx = net["lan1b"].wg_rx["lan2b"];
    net.simulate_wireguard(100, 128, {{"lan2b", "lan1b"}});
    REQUIRE(net.run_until([&] { return net["lan1b"].wg_rx["lan2b"] > rx; }, 150000));
    MESSAGE("lan2b back after " << (keep + 4 * 60000) / 1000 << " s offline: its frames reach idle "
                                << "lan1b after " << net.now() - t_back << " ms");
    net.on_send = nullptr;
    CHECK(log.count("lan1b", 0x05) == 0);  // lan1b asked for nothing
}

TEST_CASE("sim: a relay restarted while idle has the idle sessions bound again; traffic flows") {
    restartable_mesh rm(1882, 0x72);
    auto& m = rm.m;
    auto& net = m.net;
    REQUIRE(net.run_until([&] { return m.all_know_all(); }, 15000));
    REQUIRE(net.run_until([&] { return m.relayed_live("lan1b", "lan2b"); }, 10000));
    REQUIRE(net.run_until([&] { return m.all_idle(); }, 60000));
    net.run_for(10 * 60000);  // idle, kept, well past the 180 s idle timeout
    const size_t held = sessions_at(net, "relay1");
    REQUIRE(held == 4);
    session_log log;
    log_sessions(net, log);
    // relay1 restarts: a new process, same identity, a later boot epoch, an empty table.
    rm.restart_relay1();
    auto& relay1 = net["relay1"];
    const uint64_t t_restart = net.now();
    // It serves again once dialled back (a few seconds); the nodes have not noticed yet (their
    // next PING to it is up to 120 s away) and their sessions there are gone.
    REQUIRE(net.run_until([&] { return relay1.core->role() == meshd::relay_role_state::active; },
                          30000));
    MESSAGE("restarted relay1 serves after " << net.now() - t_restart << " ms");
    CHECK(sessions_at(net, "relay1") == 0);
    // One pair sends now: its sessions are bound again at once as it turns active, and it flows
    // within 1 s.
    const uint64_t rx_a = net["lan1b"].wg_rx["lan2b"], rx_b = net["lan2b"].wg_rx["lan1b"];
    net.simulate_wireguard(100, 128, {{"lan1b", "lan2b"}, {"lan2b", "lan1b"}});
    const uint64_t t = net.now();
    REQUIRE(net.run_until([&] { return flowing(net, "lan1b", "lan2b", rx_a, rx_b); }, 1000));
    MESSAGE("an idle pair sending after relay1 restarted: flowing after " << net.now() - t
                                                                          << " ms");
    net.stop_wireguard();
    // The idle pairs: bound again when their nodes' next PING shows the new epoch.
    const uint64_t idle_probe = meshd::node_core_config{}.idle_used_ping_interval_ms;
    REQUIRE(net.run_until([&] { return sessions_at(net, "relay1") == held; }, idle_probe + 5000));
    MESSAGE("restarted relay1 held all " << held << " sessions again after "
                                         << net.now() - t_restart << " ms");
    // ... and only once: another idle half hour, no request.
    REQUIRE(net.run_until([&] { return m.all_idle(); }, 60000));
    net.run_for(60000);
    log.at.clear();
    net.run_for(30 * 60000);
    net.on_send = nullptr;
    size_t requests = 0;
    for (const auto& n : lan_names) requests += log.count(n, 0x05);
    CHECK(requests == 0);
    CHECK(sessions_at(net, "relay1") == held);
    // A pair that was idle all along flows at once through its session at the restarted relay.
    const uint64_t rx_c = net["lan1a"].wg_rx["lan2a"], rx_d = net["lan2a"].wg_rx["lan1a"];
    net.simulate_wireguard(100, 128, {{"lan1a", "lan2a"}, {"lan2a", "lan1a"}});
    const uint64_t t2 = net.now();
    REQUIRE(net.run_until([&] { return flowing(net, "lan1a", "lan2a", rx_c, rx_d); }, 1000));
    MESSAGE("an idle pair after relay1's restart: flowing after " << net.now() - t2 << " ms");
}

TEST_CASE("sim: a relay that does not announce keeping gets the idle refresh every 150 s") {
    const meshd::node_core_config defaults;
    std_mesh m(1883, false);
    auto& net = m.net;
    auto specs = net.relay_specs();
    meshd::node_core_config old_relay;
    old_relay.relay_keep_ms = 0;  // as a relay from before issue 18: neither keeps nor says so
    for (auto& h : net.hosts()) {
        net.start_core(*h, specs, "sim cluster psk 0123456789",
                       h->relay ? old_relay : meshd::node_core_config{});
    }
    REQUIRE(net.run_until([&] { return m.all_know_all(); }, 15000));
    REQUIRE(net.run_until([&] { return m.relayed_live("lan1b", "lan2b"); }, 10000));
    REQUIRE(net.run_until([&] { return m.all_idle(); }, 60000));
    net.run_for(5 * 60000);
    session_log log;
    log_sessions(net, log);
    const uint64_t window = 30 * 60000;
    net.run_for(window);
    net.on_send = nullptr;
    const double per_session = double(window) / double(defaults.idle_session_refresh_ms);
    for (const auto& n : lan_names) {
        CAPTURE(n);
        // 2 relayed pairs (the other LAN's nodes) x 2 relays, each refreshed every 150 s.
        const double requests = double(log.count(n, 0x05));
        CHECK(requests >= 4 * (per_session - 1));
        CHECK(requests <= 4 * (per_session + 1));
        const auto& at = log.at[{n, 0x05}];
        for (size_t i = 4; i < at.size(); ++i) {
            CHECK(at[i] - at[i - 4] <= defaults.idle_session_refresh_ms + 2000);
        }
    }
    CHECK(log.count("relay1", 0x0e) + log.count("relay2", 0x0e) == 0);
    // And the sessions stay up: frames flow at once when traffic resumes.
    const uint64_t rx_a = net["lan1b"].wg_rx["lan2b"], rx_b = net["lan2b"].wg_rx["lan1b"];
    net.simulate_wireguard(100, 128, {{"lan1b", "lan2b"}, {"lan2b", "lan1b"}});
    REQUIRE(net.run_until([&] { return flowing(net, "lan1b", "lan2b", rx_a, rx_b); }, 1000));
}

}  // namespace mw::sim
