// meshctl's views and the metrics render one node_snapshot (meshd/node_snapshot.hpp): the counts
// they show are the same numbers, and the peer endpoint shown is the one WireGuard uses.
#include <doctest/doctest.h>

#include <string>

#include "meshd/control_api.hpp"
#include "meshd/metrics_export.hpp"
#include "meshd_test_util.hpp"

using namespace mw;
using namespace mw::meshd;
using meshd_test::identity;

namespace {

bool has_line(const std::string& text, const std::string& line) {
    return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

node_snapshot example() {
    node_snapshot s;
    s.now_ms = 1'764'000'000'000ull;
    s.name = "a";
    s.id = identity(1).id();
    s.wg_public_key = identity(1).wg_public_key();
    s.backend = "userspace";
    s.role = relay_role_state::active;
    s.role_cause = relay_role_cause::partly_reachable;
    s.role_reason = "advertiseAddress reachable: 192.0.2.1:51821 (not dialled back yet: ...)";
    auto peer = [&](uint8_t n, path_kind k) {
        node_snapshot::peer p;
        p.view.id = identity(n).id();
        p.view.name = "node-" + std::to_string(n);
        p.view.wg_public_key = identity(n).wg_public_key();
        p.view.path = k;
        return p;
    };
    s.peers = {peer(2, path_kind::direct), peer(3, path_kind::direct), peer(4, path_kind::relay),
               peer(5, path_kind::none)};
    s.peers[0].endpoint = wg_endpoint::parse("192.0.2.2:51820").value();
    wg_peer dev;
    dev.last_handshake_sec = static_cast<int64_t>(s.now_ms / 1000) - 7;
    dev.rx_bytes = 100;
    s.peers[0].device = dev;
    s.peers[2].view.relay_sessions = {{"relay2", true, true}, {"relay1", false, false}};
    s.peers[0].view.record_seq = 12345;
    s.peers[0].view.record_expires_in_ms = 512'999;
    s.paths = {4, 2, 1, 1};
    relay_view up, down;
    up.name = "r1";
    up.state = relay_state::up;
    up.rtt_ms = 3.5;
    down.name = "r2";
    down.state = relay_state::down;
    s.relays = {up, down};
    s.relays_up = 1;
    s.service = node_snapshot::relay_service{5, 3, {}};
    s.service->stats.forwarded_packets = 42;
    s.control.accepted = 9;
    s.records = 4;
    s.relay_wg_stalls = 2;
    s.probe_frames_dropped = 3;
    s.traffic = control_traffic{10, 1500, 12, 1700};
    s.traffic_rate = control_traffic_rate{0.5, 70, 0.6, 80, 10000};
    s.active_pairs = 1;
    return s;
}

}  // namespace

TEST_CASE("node snapshot: meshctl status and the metrics show the same counts") {
    auto s = example();
    auto st = status_json(s);
    std::string m = metrics_text(s);
    CHECK(st["peers"]["total"] == 4);
    CHECK(st["peers"]["direct"] == 2);
    CHECK(st["peers"]["relay"] == 1);
    CHECK(st["peers"]["none"] == 1);
    CHECK(has_line(m, "meshwire_peers{path=\"direct\"} 2"));
    CHECK(has_line(m, "meshwire_peers{path=\"relay\"} 1"));
    CHECK(has_line(m, "meshwire_peers{path=\"none\"} 1"));

    CHECK(st["relays"]["total"] == 2);
    CHECK(st["relays"]["up"] == 1);
    CHECK(has_line(m, "meshwire_relay_up{relay=\"r1\"} 1"));
    CHECK(has_line(m, "meshwire_relay_up{relay=\"r2\"} 0"));

    CHECK(st["relayService"]["sessions"] == 5);
    CHECK(st["relayService"]["nodes"] == 3);
    CHECK(st["relayService"]["forwardedPackets"] == 42);
    CHECK(has_line(m, "meshwire_relay_sessions 5"));
    CHECK(has_line(m, "meshwire_relay_forwarded_packets_total 42"));
    // Fixed labels, both always present (the proxy side is 0 while the forwarder owns the port).
    CHECK(has_line(m, "meshwire_oversize_drops_total{socket=\"relay_forward\"} 0"));
    CHECK(has_line(m, "meshwire_oversize_drops_total{socket=\"relay_uplink\"} 0"));
    CHECK(st["relayProxy"].is_null());  // the forwarder owns the port

    CHECK(st["control"]["accepted"] == 9);
    CHECK(has_line(m, "meshwire_control_accepted_total 9"));
    CHECK(has_line(m, "meshwire_records 4"));
    CHECK(has_line(m, "meshwire_relay_wg_stalls_total 2"));
    CHECK(has_line(m, "meshwire_probe_frames_dropped_total 3"));
    // Our control traffic (issue 18): totals in both views, the rate in meshctl's.
    CHECK(st["controlTraffic"]["rxPackets"] == 10);
    CHECK(st["controlTraffic"]["txBytes"] == 1700);
    CHECK(st["controlTraffic"]["perSecond"]["txBytes"] == 80.0);
    CHECK(st["controlTraffic"]["activePairs"] == 1);
    CHECK(has_line(m, "meshwire_control_packets_total{direction=\"in\"} 10"));
    CHECK(has_line(m, "meshwire_control_bytes_total{direction=\"out\"} 1700"));
    CHECK(has_line(m, "meshwire_active_pairs 1"));
    CHECK(st["node"]["relayRole"] == true);
    CHECK(st["node"]["backend"] == "userspace");
    // The label is the fixed code, never the text (issue 14 §8).
    CHECK(has_line(m, "meshwire_relay_role{state=\"active\",reason=\"partly_reachable\"} 1"));
    CHECK(st["node"]["relayRoleCause"] == "partly_reachable");
    CHECK(m.find("dialled back") == std::string::npos);
}

TEST_CASE("node snapshot: peers show the endpoint in use and the device's handshake") {
    auto s = example();
    auto p = peers_json(s)["peers"];
    REQUIRE(p.size() == 4);
    CHECK(p[0]["endpoint"] == "192.0.2.2:51820");
    CHECK(p[0]["lastHandshakeAgoSeconds"] == 7);
    CHECK(p[0]["rxBytes"] == 100);
    CHECK(p[1]["endpoint"].is_null());
    CHECK(p[1]["lastHandshake"].is_null());
    CHECK(p[3]["path"] == "none");
    // A relayed pair's sessions, the one in use first; none for other paths.
    CHECK(p[2]["relaySessions"] == nlohmann::json::parse(R"([
        {"relay": "relay2", "inUse": true, "accepted": true},
        {"relay": "relay1", "inUse": false, "accepted": false}])"));
    CHECK(p[0]["relaySessions"] == nlohmann::json::array());
    // The record's lifetime left on this node (its clock, from first receipt), in whole seconds.
    CHECK(p[0]["recordSeq"] == 12345);
    CHECK(p[0]["recordExpiresInSeconds"] == 512);
    CHECK(p[1]["recordExpiresInSeconds"].is_null());
    CHECK(p[0]["refusedCIDRs"] == nlohmann::json::array());
    auto r = relays_json(s)["relays"];
    REQUIRE(r.size() == 2);
    CHECK(r[0]["rttMs"] == 3.5);
    CHECK(r[1]["state"] == "down");
}

TEST_CASE("control api: requests are checked before anything runs") {
    using nlohmann::json;
    CHECK(parse_control_request(json{{"cmd", "status"}})->cmd == "status");
    CHECK(parse_control_request(json::array()).err().message == "request needs a \"cmd\" string");
    CHECK(parse_control_request(json{{"cmd", "reboot"}}).err().message ==
          "unknown command \"reboot\"");
    CHECK(parse_control_request(json{{"cmd", "ping"}}).err().message == "ping needs \"node\"");
    auto ping = parse_control_request(json{{"cmd", "ping"}, {"node", "b"}});
    REQUIRE(ping);
    CHECK(ping->count == 3);
    CHECK(parse_control_request(json{{"cmd", "ping"}, {"node", "b"}, {"count", 0}}).err().message ==
          "\"count\" must be 1..100");
    CHECK(parse_control_request(json{{"cmd", "ping"}, {"node", "b"}, {"count", 100}})->count ==
          100);
}

TEST_CASE("node snapshot: refused pod CIDRs in meshctl peers and in the metrics, by reason") {
    auto s = example();
    s.peers[1].view.pod_cidrs = {ip_prefix::parse("10.244.3.0/24").value()};
    s.peers[1].view.refused_cidrs = {
        {ip_prefix::parse("8.0.0.0/8").value(), cidr_refusal::outside_cluster},
        {ip_prefix::parse("10.244.2.0/24").value(), cidr_refusal::overlaps_peer}};
    s.cidrs_refused_total[size_t(cidr_refusal::outside_cluster)] = 3;
    s.cidrs_refused_now[size_t(cidr_refusal::outside_cluster)] = 1;
    s.cidrs_refused_now[size_t(cidr_refusal::overlaps_peer)] = 1;
    auto p = peers_json(s)["peers"];
    CHECK(p[1]["podCIDRs"] == nlohmann::json::array({"10.244.3.0/24"}));
    CHECK(p[1]["refusedCIDRs"] ==
          nlohmann::json::parse(R"([{"cidr": "8.0.0.0/8", "reason": "outside_cluster"},
                                    {"cidr": "10.244.2.0/24", "reason": "overlaps_peer"}])"));
    std::string m = metrics_text(s);
    // The fixed label set: every reason is exported, also at zero.
    for (const char* r : {"outside_cluster", "wrong_block_size", "overlaps_own", "covers_underlay",
                          "overlaps_peer", "no_node", "not_node_podcidr"}) {
        CAPTURE(r);
        CHECK(m.find(std::string("meshwire_pod_cidrs_refused_total{reason=\"") + r + "\"}") !=
              std::string::npos);
    }
    CHECK(has_line(m, "meshwire_pod_cidrs_refused_total{reason=\"outside_cluster\"} 3"));
    CHECK(has_line(m, "meshwire_pod_cidrs_refused{reason=\"outside_cluster\"} 1"));
    CHECK(has_line(m, "meshwire_pod_cidrs_refused{reason=\"overlaps_peer\"} 1"));
    CHECK(has_line(m, "meshwire_pod_cidrs_refused_total{reason=\"wrong_block_size\"} 0"));
}

TEST_CASE("node snapshot: how peers were learned and the record cache, in meshctl and metrics") {
    auto s = example();
    s.peers[0].view.sources = learned_via_set(0) | learned_via::relay | learned_via::cache;
    s.peers[1].view.sources = learned_via_set(0) | learned_via::mdns;
    s.peers_learned[0] = 1;  // relay
    s.peers_learned[2] = 1;  // mdns
    s.peers_learned[3] = 1;  // cache
    auto p = peers_json(s)["peers"];
    CHECK(p[0]["learnedVia"] == nlohmann::json::array({"relay", "cache"}));
    CHECK(p[1]["learnedVia"] == nlohmann::json::array({"mdns"}));
    CHECK(p[2]["learnedVia"] == nlohmann::json::array());
    auto st = status_json(s);
    CHECK(st["peers"]["learnedVia"]["cache"] == 1);
    CHECK(st["peers"]["learnedVia"]["bootstrap"] == 0);
    CHECK(st["peers"]["learnedVia"].size() == 8);  // every learned_via bit, neighbour last
    CHECK(st["recordCache"].is_null());            // not set up
    std::string m = metrics_text(s);
    // Fixed label values: every source, also at zero; no cache series without a cache.
    CHECK(has_line(m, "meshwire_peers_learned{via=\"relay\"} 1"));
    CHECK(has_line(m, "meshwire_peers_learned{via=\"cache\"} 1"));
    CHECK(has_line(m, "meshwire_peers_learned{via=\"kubernetes\"} 0"));
    CHECK(has_line(m, "meshwire_peers_learned{via=\"neighbour\"} 0"));
    CHECK(m.find("meshwire_record_cache") == std::string::npos);

    record_cache_stats c;
    c.path = "/var/lib/meshwire/records.cache";
    c.load = "loaded";
    c.loaded = 4;
    c.expired = 1;
    c.elapsed_ms = 61'500;
    c.basis = elapsed_basis::wall_clock;
    c.writes = 3;
    c.write_failures = 1;
    c.records_written = 5;
    c.last_write_unix_ms = s.now_ms - 9'000;
    s.cache = c;
    st = status_json(s);
    CHECK(st["recordCache"]["load"] == "loaded");
    CHECK(st["recordCache"]["loadError"].is_null());
    CHECK(st["recordCache"]["loaded"] == 4);
    CHECK(st["recordCache"]["elapsedSeconds"] == 61);
    CHECK(st["recordCache"]["elapsedClock"] == "wall_clock");
    CHECK(st["recordCache"]["lastWriteAgoSeconds"] == 9);
    m = metrics_text(s);
    CHECK(has_line(m, "meshwire_record_cache_loaded_records{outcome=\"loaded\"} 4"));
    CHECK(has_line(m, "meshwire_record_cache_loaded_records{outcome=\"expired\"} 1"));
    CHECK(has_line(m, "meshwire_record_cache_writes_total{result=\"ok\"} 3"));
    CHECK(has_line(m, "meshwire_record_cache_writes_total{result=\"failed\"} 1"));
    CHECK(has_line(m, "meshwire_record_cache_records 5"));
}
