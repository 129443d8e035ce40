// meshctl: argument parsing, requests, response checking, the human tables and --json on sample
// results in the documented wire format (docs/meshctl-json.md), and run() end to end against
// meshd's real control_server.
#include "meshctl/meshctl_format.hpp"

#include <doctest/doctest.h>
#include <stdio.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include "meshctl/control_client.hpp"
#include "meshctl/meshctl_cli.hpp"
#include "meshd/io/control_server.hpp"

using json = nlohmann::json;
using namespace mw::meshctl;
using namespace std::chrono_literals;

namespace {

const std::string hex64(char c) {
    return std::string(64, c);
}

json sample_status() {
    return json::parse(R"({
      "node": {"name": "node-a", "id": ")" +
                       hex64('a') + R"(", "wgPublicKey": "QUJD+/==",
               "podCIDRs": ["10.244.1.0/24", "fd00:244:1::/64"], "interface": "meshwire0",
               "backend": "userspace", "mtu": 1408, "wgListenPort": 51820, "listenPort": 51821,
               "endpoints": ["192.0.2.10:51820"], "relayRole": true, "uptimeSeconds": 3725},
      "peers": {"total": 3, "direct": 1, "relay": 1, "none": 1},
      "relays": {"total": 2, "up": 1},
      "relayService": {"sessions": 4, "nodes": 3, "forwardedPackets": 1000,
                       "forwardedBytes": 1572864,
                       "drops": {"unknown_session": 1, "wrong_source": 2, "not_established": 3,
                                 "expired": 4, "rate_limited_packets": 5,
                                 "rate_limited_bytes": 6}},
      "control": {"accepted": 100, "authFailed": 1, "malformed": 2, "oldVersion": 3,
                  "wrongRecipient": 4, "pairAuthFailed": 8, "staleEpoch": 9,
                  "replayed": 5, "notControl": 6, "badRecord": 7}})");
}

json sample_peers() {
    return json::parse(R"({"peers": [
      {"name": "node-c", "id": ")" +
                       hex64('c') + R"(", "wgPublicKey": "Yw==",
       "podCIDRs": ["10.244.3.0/24"], "path": "relay", "pathReason": "no_direct_answer", "relay": "relay1",
       "relayId": ")" + hex64('1') +
                       R"(", "sessionId": "0123456789abcdef",
       "endpoint": "127.0.0.1:40001", "rttMs": 3.14, "pathMtu": 1308, "pathMtuSearch": "complete", "lastHandshake": 1700000000,
       "lastHandshakeAgoSeconds": 12, "rxBytes": 10, "txBytes": 20,
       "learnedVia": ["relay", "cache"]},
      {"name": "node-b", "id": ")" +
                       hex64('b') + R"(", "wgPublicKey": "Yg==",
       "podCIDRs": ["10.244.2.0/24"], "path": "direct", "pathReason": "lan", "relay": null, "relayId": null,
       "sessionId": null, "endpoint": "192.0.2.20:51820", "rttMs": 0.8,
       "lastHandshake": 1699999800, "lastHandshakeAgoSeconds": null, "rxBytes": 0,
       "txBytes": 0, "learnedVia": ["mdns"]},
      {"name": "node-d", "id": ")" +
                       hex64('d') + R"(", "wgPublicKey": "ZA==", "podCIDRs": [],
       "path": "none", "relay": null, "relayId": null, "sessionId": null, "endpoint": null,
       "rttMs": null, "lastHandshake": null, "lastHandshakeAgoSeconds": null, "rxBytes": 0,
       "txBytes": 0}]})");
}

json sample_relays() {
    return json::parse(R"({"relays": [
      {"name": "relay2", "id": null, "addresses": ["198.51.100.2", "2001:db8::2"],
       "endpoint": null, "state": "down", "origin": "configured", "rttMs": null,
       "reflexive": null, "load": 0},
      {"name": "relay1", "id": ")" +
                       hex64('1') + R"(", "addresses": ["198.51.100.1"],
       "endpoint": "198.51.100.1:51821", "state": "up", "origin": "discovered", "rttMs": 12.25,
       "reflexive": "203.0.113.7:40000", "load": 2}]})");
}

mw::result<options> parse(std::vector<std::string> args, const char* env = nullptr) {
    return parse_args(args, env);
}

struct captured {
    int rc;
    std::string out, err;
};

captured run_captured(const options& o) {
    char *out_buf = nullptr, *err_buf = nullptr;
    size_t out_len = 0, err_len = 0;
    FILE* out = open_memstream(&out_buf, &out_len);
    FILE* err = open_memstream(&err_buf, &err_len);
    int rc = run(o, out, err);
    std::fclose(out);
    std::fclose(err);
    captured c{rc, std::string(out_buf, out_len), std::string(err_buf, err_len)};
    std::free(out_buf);
    std::free(err_buf);
    return c;
}

}  // namespace

TEST_CASE("meshctl: arguments") {
    auto o = parse({"status"});
    REQUIRE(o.ok());
    CHECK(o->command == "status");
    CHECK(o->socket == "/run/meshwire/meshd.sock");
    CHECK(!o->json);
    CHECK(timeout(*o) == 5000ms);

    // Options before or after the command, both value spellings; env, and --socket over env.
    o = parse({"peers", "--json", "--socket", "/x.sock"}, "/env.sock");
    REQUIRE(o.ok());
    CHECK((o->command == "peers" && o->json && o->socket == "/x.sock"));
    o = parse({"--json", "relays"}, "/env.sock");
    REQUIRE(o.ok());
    CHECK(o->socket == "/env.sock");
    o = parse({"--timeout=1.5", "ping", "node-b", "--count=5"});
    REQUIRE(o.ok());
    CHECK((o->command == "ping" && o->node == "node-b" && o->count == 5));
    CHECK(timeout(*o) == 1500ms);
    o = parse({"ping", "--count", "2", "--", "-odd-name"});
    REQUIRE(o.ok());
    CHECK(o->node == "-odd-name");
    CHECK(timeout(*o) == 7000ms);  // 5 s + 1 s per probe

    // --help and --version win over a missing command.
    CHECK(parse({"--help"})->help);
    CHECK(parse({"status", "-h"})->help);
    CHECK(parse({"-V"})->version);

    for (std::vector<std::string> bad : {std::vector<std::string>{},
                                         {"frobnicate"},
                                         {"ping"},
                                         {"ping", "a", "b"},
                                         {"status", "extra"},
                                         {"peers", "--count", "3"},
                                         {"ping", "a", "--count", "0"},
                                         {"ping", "a", "--count", "101"},
                                         {"ping", "a", "--count", "1.5"},
                                         {"status", "--timeout"},
                                         {"status", "--timeout", "0"},
                                         {"status", "--timeout", "-1"},
                                         {"status", "--verbose"},
                                         {"status", "--socket="},
                                         {"status", "--json=yes"}}) {
        CAPTURE(bad.size() ? bad.back() : std::string("(none)"));
        auto r = parse(bad);
        REQUIRE(!r.ok());
        CHECK(r.err().is(mw::errc::invalid_argument));
    }
    CHECK(std::string(help_text()).find("EXIT STATUS") != std::string::npos);
}

TEST_CASE("meshctl: requests and the response envelope") {
    CHECK(build_request("status", "", 3) == json{{"cmd", "status"}});
    CHECK(build_request("peers", "", 3) == json{{"cmd", "peers"}});
    CHECK(build_request("relays", "", 3) == json{{"cmd", "relays"}});
    CHECK(build_request("ping", "node-b", 4) ==
          json{{"cmd", "ping"}, {"node", "node-b"}, {"count", 4}});

    auto r = parse_response(R"({"ok":true,"result":{"a":1}})");
    REQUIRE(r.ok());
    CHECK(r->ok);
    CHECK(r->result == json{{"a", 1}});
    r = parse_response(R"({"ok":false,"error":"unknown node \"x\""})");
    REQUIRE(r.ok());
    CHECK(!r->ok);
    CHECK(r->error == "unknown node \"x\"");
    for (const char* bad : {"", "nope", "[]", R"({"result":{}})", R"({"ok":"yes"})",
                            R"({"ok":true})", R"({"ok":true,"result":[1]})"}) {
        CAPTURE(bad);
        auto e = parse_response(bad);
        REQUIRE(!e.ok());
        CHECK(e.err().is(mw::errc::protocol_error));
    }
}

TEST_CASE("meshctl: value formats") {
    CHECK(format_rtt(json(0.04)) == "0.04ms");
    CHECK(format_rtt(json(1.234)) == "1.2ms");
    CHECK(format_rtt(json(3)) == "3.0ms");
    CHECK(format_rtt(json(250.0)) == "250.0ms");
    CHECK(format_rtt(json(1250.0)) == "1.25s");
    CHECK(format_rtt(json(nullptr)) == "-");
    CHECK(format_rtt(json("x")) == "-");
    CHECK(format_duration(0) == "0s");
    CHECK(format_duration(59) == "59s");
    CHECK(format_duration(187) == "3m07s");
    CHECK(format_duration(7500) == "2h05m");
    CHECK(format_duration(3 * 86400 + 4 * 3600 + 5) == "3d04h");
    CHECK(format_duration(-5) == "0s");
    CHECK(format_bytes(512) == "512 B");
    CHECK(format_bytes(1536) == "1.5 KiB");
    CHECK(format_bytes(1572864) == "1.5 MiB");
}

TEST_CASE("meshctl: status") {
    std::string s = format_status(sample_status());
    CHECK(s ==
          "node:           node-a\n"
          "id:             " +
              hex64('a') +
              "\n"
              "public key:     QUJD+/==\n"
              "pod CIDRs:      10.244.1.0/24 fd00:244:1::/64\n"
              "interface:      meshwire0 (userspace, mtu 1408)\n"
              "listen ports:   wireguard 51820/udp, control 51821/udp\n"
              "endpoints:      192.0.2.10:51820\n"
              "relay role:     yes\n"
              "uptime:         1h02m\n"
              "\n"
              "peers:          3 total, 1 direct, 1 relay, 1 none\n"
              "relays:         2 total, 1 up\n"
              "relay service:  4 sessions, 3 nodes, 1000 packets (1.5 MiB) forwarded\n"
              "relay drops:    unknown_session=1 wrong_source=2 not_established=3 expired=4 "
              "rate_limited_packets=5 rate_limited_bytes=6\n"
              "control:        100 accepted; dropped: authFailed=1 malformed=2 oldVersion=3 "
              "wrongRecipient=4 pairAuthFailed=8 staleEpoch=9 replayed=5 notControl=6 "
              "badRecord=7\n");
    json refused = sample_status();
    refused["node"]["relayRoleState"] = "refused";
    refused["node"]["relayRoleReason"] = "advertiseAddress 198.51.100.2:51821 not reachable";
    CHECK(format_status(refused).find(
              "relay role:     refused (advertiseAddress 198.51.100.2:51821 not reachable)\n") !=
          std::string::npos);
    // The session caps (relayService.maxSessions / maxSessionsPerNode) and their refusals.
    json caps = sample_status();
    caps["relayService"]["maxSessions"] = 16384;
    caps["relayService"]["maxSessionsPerNode"] = 1024;
    caps["relayService"]["refused"] = {{"node_limit", 7}, {"table_full", 0}, {"node_table", 1}};
    CHECK(format_status(caps).find("relay limits:   max 16384 sessions, 1024 per node; refused: "
                                   "node_limit=7 table_full=0 node_table=1\n") !=
          std::string::npos);
    // The NAT per family (issue 13): a line when meshd reports it, none from an older meshd.
    CHECK(format_status(sample_status()).find("nat:") == std::string::npos);
    json nat = sample_status();
    nat["node"]["nat"] = {{"ipv4",
                           {{"mapping", "endpoint-independent"},
                            {"reflexive", "198.51.100.1:51821"},
                            {"observers", 2},
                            {"portPreserved", true}}},
                          {"ipv6",
                           {{"mapping", "unknown"},
                            {"reflexive", nullptr},
                            {"observers", 0},
                            {"portPreserved", false}}}};
    CHECK(
        format_status(nat).find("uptime:         1h02m\n"
                                "nat:            ipv4 endpoint-independent (198.51.100.1:51821, 2 "
                                "relays, port kept); ipv6 unknown\n") != std::string::npos);
    json off = sample_status();
    off["relayService"] = nullptr;
    CHECK(format_status(off).find("relay service:  off\n") != std::string::npos);
    // mDNS: a line when meshd reports it (null: switched off); none from an older meshd.
    CHECK(format_status(sample_status()).find("mdns:") == std::string::npos);
    json md = sample_status();
    md["mdns"] = {{"interfaces", {"eth0", "wlan0"}},
                  {"announcements", 6},
                  {"answers", 3},
                  {"peersFound", 2},
                  {"malformed", 1},
                  {"ignored", 0}};
    CHECK(format_status(md).find("mdns:           eth0 wlan0; 6 announcements, 3 answers, 2 peers "
                                 "found; dropped: malformed=1 ignored=0\n") != std::string::npos);
    md["mdns"] = nullptr;
    CHECK(format_status(md).find("mdns:           off\n") != std::string::npos);
    // The control traffic rate (issue 18): absent from an older meshd, null before a window.
    CHECK(format_status(sample_status()).find("control rate:") == std::string::npos);
    json tr = sample_status();
    tr["controlTraffic"] = {{"rxPackets", 40}, {"rxBytes", 6000},      {"txPackets", 44},
                            {"txBytes", 6100}, {"perSecond", nullptr}, {"activePairs", 0}};
    CHECK(format_status(tr).find("control rate:   in -, out -; 0 active pairs\n") !=
          std::string::npos);
    tr["controlTraffic"]["perSecond"] = {{"rxPackets", 0.2},
                                         {"rxBytes", 30.4},
                                         {"txPackets", 0.3},
                                         {"txBytes", 35.0},
                                         {"windowMs", 10000}};
    tr["controlTraffic"]["activePairs"] = 2;
    CHECK(format_status(tr).find("control rate:   in 0.2 pkt/s 30 B/s, out 0.3 pkt/s 35 B/s; 2 "
                                 "active pairs\n") != std::string::npos);
    // Peers by how they were learned, and the record cache: a line each when meshd reports them.
    CHECK(format_status(sample_status()).find("learned via:") == std::string::npos);
    CHECK(format_status(sample_status()).find("record cache:") == std::string::npos);
    json lc = sample_status();
    lc["peers"]["learnedVia"] = {{"relay", 2}, {"bootstrap", 0},  {"mdns", 1},        {"cache", 3},
                                 {"dht", 0},   {"kubernetes", 0}, {"registration", 1}};
    lc["recordCache"] = {{"load", "loaded"},   {"loaded", 3},
                         {"expired", 1},       {"refused", 0},
                         {"writes", 4},        {"recordsWritten", 3},
                         {"writeFailures", 0}, {"lastWriteAgoSeconds", 7}};
    std::string st = format_status(lc);
    CHECK(st.find("learned via:    relay=2 bootstrap=0 mdns=1 cache=3 dht=0 kubernetes=0 "
                  "registration=1\n") != std::string::npos);
    CHECK(st.find("record cache:   loaded 3 records (1 expired, 0 refused); 4 writes, last 7s "
                  "ago (3 records), 0 failed\n") != std::string::npos);
    lc["recordCache"] = {{"load", "set aside"}, {"loadError", "record cache: trailing bytes"},
                         {"writes", 0},         {"lastWriteAgoSeconds", nullptr},
                         {"recordsWritten", 0}, {"writeFailures", 0}};
    CHECK(format_status(lc).find("record cache:   set aside (record cache: trailing bytes); 0 "
                                 "writes, last never (0 records), 0 failed\n") !=
          std::string::npos);
    lc["recordCache"] = nullptr;
    CHECK(format_status(lc).find("record cache:   off\n") != std::string::npos);
    // An empty or odd result prints dashes rather than failing.
    std::string empty = format_status(json::object());
    CHECK(empty.find("node:           -\n") != std::string::npos);
    CHECK(empty.find("peers:          - total") != std::string::npos);
    CHECK_NOTHROW(format_status(json::parse(R"({"node":[1],"peers":"x","control":7})")));
}

// sample_peers() as the table prints it (node-d from an older meshd: no pathReason).
const std::string k_peers_table =
    "NAME    PATH    REASON            RELAY   ENDPOINT          RTT    MTU   HANDSHAKE  "
    "LEARNED\n"
    "node-b  direct  lan               -       192.0.2.20:51820  0.8ms  -     3m20s ago  "
    "mdns\n"
    "node-c  relay   no_direct_answer  relay1  127.0.0.1:40001   3.1ms  1308  12s ago    "
    "relay,cache\n"
    "node-d  none    -                 -       -                 -      -     never      "
    "-\n";

TEST_CASE("meshctl: peers table") {
    // node-b's handshake age comes from lastHandshake and now (200 s before).
    std::string t = format_peers(sample_peers(), 1700000000);
    CHECK(t == k_peers_table);
    CHECK(format_peers(json{{"peers", json::array()}}, 0) ==
          "NAME  PATH  REASON  RELAY  ENDPOINT  RTT  MTU  HANDSHAKE  LEARNED\n");
    CHECK_NOTHROW(format_peers(json{{"peers", {1, "x", nullptr}}}, 0));
    CHECK_NOTHROW(format_peers(json{{"peers", 5}}, 0));
    // Refused pod CIDRs (route authority) are listed under the table, sorted.
    auto refused = sample_peers();
    refused["peers"][2]["refusedCIDRs"] = json::parse(
        R"([{"cidr": "8.0.0.0/8", "reason": "outside_cluster"},
            {"cidr": "10.244.3.0/25", "reason": "wrong_block_size"}])");
    refused["peers"][0]["refusedCIDRs"] = json::array();
    CHECK(format_peers(refused, 1700000000) ==
          k_peers_table +
              "node-d: 10.244.3.0/25 refused (wrong_block_size)\n"
              "node-d: 8.0.0.0/8 refused (outside_cluster)\n");
    refused["peers"][2]["refusedCIDRs"] = json::parse(R"([7, {"cidr": 1}])");
    CHECK_NOTHROW(format_peers(refused, 0));
    // A search still running shows its current value with "?".
    refused["peers"][0]["pathMtuSearch"] = "searching";
    CHECK(format_peers(refused, 1700000000).find("3.1ms  1308?  12s ago") != std::string::npos);
    CHECK_NOTHROW(format_peers(refused, 0));
}

TEST_CASE("meshctl: relays table") {
    CHECK(format_relays(sample_relays()) ==
          "NAME    STATE  ORIGIN      ENDPOINT            RTT     LOAD  REFLEXIVE          "
          "ADDRESSES\n"
          "relay1  up     discovered  198.51.100.1:51821  12.2ms  2     203.0.113.7:40000  "
          "198.51.100.1\n"
          "relay2  down   configured  -                   -       0     -                  "
          "198.51.100.2,2001:db8::2\n");
}

TEST_CASE("meshctl: ping") {
    json r = json::parse(R"({"node":"node-c","id":")" + hex64('c') +
                         R"(","path":"relay","relay":"relay1","sent":3,"received":2,
                         "rttMs":[3.1,5.0]})");
    CHECK(format_ping(r) ==
          "reply from node-c via relay relay1: rtt=3.1ms\n"
          "reply from node-c via relay relay1: rtt=5.0ms\n"
          "--- node-c ping statistics ---\n"
          "3 sent, 2 received, 33% loss, rtt min/avg/max = 3.1ms/4.0ms/5.0ms\n");
    CHECK(ping_exit_code(r) == 0);
    json d = json::parse(R"({"node":"node-b","id":")" + hex64('b') +
                         R"(","path":"direct","relay":null,"sent":2,"received":0,"rttMs":[]})");
    CHECK(format_ping(d) ==
          "--- node-b ping statistics ---\n"
          "2 sent, 0 received, 100% loss\n");
    CHECK(ping_exit_code(d) == 1);
    d["received"] = 1;
    d["rttMs"] = {0.5};
    CHECK(format_ping(d).find("reply from node-b via direct path: rtt=0.5ms") == 0);
}

TEST_CASE("meshctl: --json output is the result, indented and sorted") {
    json r = sample_relays();
    std::string j = format_json(r);
    CHECK(j.back() == '\n');
    CHECK(json::parse(j) == r);
    CHECK(j.find("\n  \"relays\": [\n    {\n      \"addresses\"") != std::string::npos);
    CHECK(format_json(json{{"b", 1}, {"a", 2}}) == "{\n  \"a\": 2,\n  \"b\": 1\n}\n");
}

TEST_CASE("meshctl: run() against meshd's control_server") {
    char tmpl[] = "/tmp/mw-meshctl-XXXXXX";
    std::string dir = mkdtemp(tmpl);
    std::string path = dir + "/meshd.sock";
    boost::asio::io_context io;
    json last_request;
    mw::meshd::control_server::reply_fn held;
    auto server = mw::meshd::control_server::start(
        io, path, [&](const json& req, mw::meshd::control_server::reply_fn reply) {
            last_request = req;
            std::string cmd = req.value("cmd", "");
            if (cmd == "peers")
                reply(json{{"ok", true}, {"result", sample_peers()}});
            else if (cmd == "ping" && req.value("node", "") == "node-c")
                reply(json{{"ok", true},
                           {"result",
                            {{"node", "node-c"},
                             {"id", hex64('c')},
                             {"path", "relay"},
                             {"relay", "relay1"},
                             {"sent", req["count"]},
                             {"received", 1},
                             {"rttMs", {3.1}}}}});
            else if (cmd == "ping")
                reply(json{{"ok", false},
                           {"error", "unknown node \"" + req.value("node", "") + "\""}});
            else if (cmd == "status") {
                held = reply;  // answers too late: meshctl times out
            } else
                reply(json{{"garbage", true}});
        });
    REQUIRE(server.ok());

    auto run_with = [&](std::vector<std::string> args) {
        auto o = parse_args(args, path.c_str());
        REQUIRE(o.ok());
        auto f = std::async(std::launch::async, [&, o = *o] { return run_captured(o); });
        auto deadline = std::chrono::steady_clock::now() + 10s;
        while (f.wait_for(0s) != std::future_status::ready &&
               std::chrono::steady_clock::now() < deadline) {
            io.restart();
            io.run_for(5ms);
        }
        REQUIRE(f.wait_for(0s) == std::future_status::ready);
        return f.get();
    };

    auto c = run_with({"peers", "--json"});
    CHECK(c.rc == exit_ok);
    CHECK(last_request == json{{"cmd", "peers"}});
    CHECK(json::parse(c.out) == sample_peers());
    CHECK(c.err.empty());

    c = run_with({"peers"});
    CHECK(c.rc == exit_ok);
    CHECK(c.out.rfind("NAME    PATH", 0) == 0);

    c = run_with({"ping", "node-c", "--count", "2"});
    CHECK(c.rc == exit_ok);
    CHECK(last_request == json{{"cmd", "ping"}, {"node", "node-c"}, {"count", 2}});
    CHECK(c.out.rfind("reply from node-c via relay relay1: rtt=3.1ms\n", 0) == 0);

    c = run_with({"ping", "nobody"});
    CHECK(c.rc == exit_failed);
    CHECK(c.out.empty());
    CHECK(c.err == "meshctl: meshd: unknown node \"nobody\"\n");

    c = run_with({"relays"});
    CHECK(c.rc == exit_unreachable);
    CHECK(c.err.find("unexpected answer") != std::string::npos);

    c = run_with({"status", "--timeout", "0.2"});
    CHECK(c.rc == exit_unreachable);
    CHECK(c.err.find("did not answer within 0.2s") != std::string::npos);

    server->reset();
    c = run_with({"status"});
    CHECK(c.rc == exit_unreachable);
    CHECK(c.err == "meshctl: cannot connect to " + path +
                       ": No such file or directory (is meshd running? use --socket PATH or "
                       "MESHCTL_SOCKET to choose another socket)\n");
    std::filesystem::remove_all(dir);
}
