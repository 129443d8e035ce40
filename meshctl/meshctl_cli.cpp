#include "meshctl/meshctl_cli.hpp"

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <string_view>

#include "meshctl/control_client.hpp"
#include "meshctl/meshctl_format.hpp"

#ifndef MESHWIRE_VERSION
#define MESHWIRE_VERSION "unknown"
#endif

namespace mw::meshctl {

namespace {

const char* const k_help = R"(NAME
    meshctl - show the state of the local meshwire daemon (meshd)

SYNOPSIS
    meshctl [--socket PATH] [--json] [--timeout SEC] status
    meshctl [--socket PATH] [--json] [--timeout SEC] peers
    meshctl [--socket PATH] [--json] [--timeout SEC] relays
    meshctl [--socket PATH] [--json] [--timeout SEC] ping NODE [--count N]
    meshctl --help | --version

DESCRIPTION
    meshctl asks the meshd running on this machine (or in this network namespace) about the
    WireGuard mesh: who this node is, how each peer is reached (directly or through which
    relay), the relays' state and round-trip times. It talks to meshd over meshd's control
    socket, a unix socket (mode 0660: run meshctl as root or as a member of the socket's
    group). Options may come before or after the command.

COMMANDS
    status          This node (name, ID, WireGuard key, pod CIDRs, interface, ports, public
                    endpoints, uptime), then summary counts: peers by path, relays up, the
                    relay service's traffic and drops (relay nodes only), the control
                    protocol's accepted and dropped messages, mDNS (interfaces, records
                    announced, answers, peers found, drops), peers by how they were learned,
                    and the on-disk record cache (loaded at start, writes).
    peers           One line per peer node.
    relays          One line per configured relay.
    ping NODE       Probe NODE (a node name or its 64-hex-digit node ID) over the control
                    protocol, along the path WireGuard traffic to it takes, and print the
                    round-trip time of each reply.

OPTIONS
    --socket PATH   meshd's control socket (default $MESHCTL_SOCKET, else
                    /run/meshwire/meshd.sock; meshd's `socket` setting, which defaults to
                    <runDir>/meshd.sock).
    --json          Print the command's result as JSON (see JSON below) instead of a table.
    --timeout SEC   How long to wait for meshd's answer, in seconds, fractions allowed
                    (default 5; for ping 5 plus 1 per probe).
    --count N       ping: number of probes, 1-100 (default 3).
    -h, --help      This text.
    -V, --version   The version.
    Both --opt VALUE and --opt=VALUE are accepted; "--" ends the options.

OUTPUT
    Tables have a header line and fixed, left-aligned columns separated by at least two
    spaces; rows are sorted by name; "-" means unknown or not applicable.
    RTT is shown as 0.05ms, 1.2ms or 1.25s; durations as 59s, 3m07s, 2h05m or 3d04h.

    peers:
      NAME       the peer's node name
      PATH       direct (WireGuard talks to the peer's endpoint), relay (WireGuard traffic
                 goes through a relay), none (no working path yet)
      REASON     why: lan or public (that address of the peer answers), learned (the peer
                 reaches us: it is behind a NAT), kept (its meshd is silent, WireGuard still
                 receives), no_direct_answer, relayed_before_restart, symmetric_nat_here (our
                 own NAT maps per destination), waiting (a new peer's addresses get a moment),
                 none
      RELAY      the relay's node name when PATH is relay
      ENDPOINT   the WireGuard endpoint the device uses for this peer (for a relayed peer a
                 local loopback address of meshd's relay proxy)
      RTT        the last measured round-trip time over that path
      MTU        the path MTU measured on that path ("?" while its search runs), "-" when
                 not measured
      HANDSHAKE  time since the last WireGuard handshake ("12s ago"), or "never"
      LEARNED    how the peer's record reached this node, comma-separated: relay, bootstrap
                 (a dht.bootstrap node), mdns, cache (meshd's on-disk record cache, at
                 start), dht, kubernetes, registration (the peer registered with this relay)

    relays:
      NAME       the relay's node name
      STATE      up (answering), down (not answering), self (this node is the relay)
      ENDPOINT   the address:port this node talks to it on
      RTT        the last measured round-trip time to it
      LOAD       how many of this node's peers are reached through it
      REFLEXIVE  this node's public address:port as the relay sees it (behind NAT: the
                 NAT's mapping)
      ADDRESSES  the relay's configured advertise addresses

    ping prints one line per reply, "reply from NODE via relay R: rtt=3.1ms" or
    "reply from NODE via direct path: rtt=0.8ms", then a summary like ping(8)'s.

JSON
    With --json, meshctl prints the "result" object of meshd's answer, 2-space indented, keys
    sorted. The format is stable: fields may be added, none are renamed or removed. null means
    unknown or not applicable. IDs are lowercase hex, keys base64, times unix seconds.

    status:
      {"node": {"name", "id", "wgPublicKey", "podCIDRs": [str], "interface",
                "backend": "userspace"|"kernel", "mtu", "wgListenPort", "listenPort",
                "endpoints": ["ip:port"], "relayRole": bool, "uptimeSeconds",
                "nat": {"ipv4"|"ipv6": {"mapping": "none"|"endpoint-independent"|
                        "endpoint-dependent"|"single-observer"|"unknown",
                        "reflexive": "ip:port"|null, "observers", "portPreserved": bool}}},
       "peers": {"total", "direct", "relay", "none",
                 "learnedVia": {"relay", "bootstrap", "mdns", "cache", "dht", "kubernetes",
                                "registration"}},
       "relays": {"total", "up"},
       "relayService": null | {"sessions", "nodes", "maxSessions", "maxSessionsPerNode",
                "refused": {"node_limit", "table_full", "node_table"}, "malformed",
                "forwardedPackets", "forwardedBytes", "natKeepalives", "keptEvicted", "drops": {"unknown_session", "wrong_source", "not_established", "expired",
                          "rate_limited_packets", "rate_limited_bytes"}},
       "control": {"accepted", "authFailed", "malformed", "oldVersion", "wrongRecipient",
                   "pairAuthFailed", "staleEpoch", "replayed", "notControl", "badRecord",
                   "openedSeal", "openedAccept", "retiredKey"},
       "clusterKeys": {"seal": FINGERPRINT, "accept": [FINGERPRINT, ...], "retired": null | FINGERPRINT},
       "controlTraffic": {"rxPackets", "rxBytes", "txPackets", "txBytes", "activePairs",
                "perSecond": null | {"rxPackets", "rxBytes", "txPackets", "txBytes",
                                     "windowMs"}},
       "mdns": null | {"interfaces": [str], "instance", "announcements", "answers",
                "legacyAnswers", "queries", "peersFound", "conflicts", "received", "sent",
                "malformed", "ignored", "ownLooped", "sendErrors"},
       "recordCache": null | {"path", "load": "loaded"|"none"|"set aside"|"unreadable"|"off",
                "loadError": str|null, "loaded", "expired", "refused", "elapsedSeconds",
                "elapsedClock", "writes", "writeFailures", "recordsWritten",
                "lastWriteAgoSeconds": int|null}}
    peers:
      {"peers": [{"name", "id", "wgPublicKey", "podCIDRs": [str],
                  "path": "direct"|"relay"|"none",
                  "pathReason": "lan"|"public"|"learned"|"kept"|"no_direct_answer"|
                                "relayed_before_restart"|"symmetric_nat_here"|"waiting"|"none",
                  "relay": str|null, "relayId": hex|null,
                  "sessionId": hex16|null, "relaySessions": [{"relay", "inUse", "accepted"}],
                  "endpoint": "ip:port"|null, "rttMs": num|null,
                  "learnedVia": [str], "recordSeq": int, "recordExpiresInSeconds": int|null,
                  "lastHandshake": unix-seconds|null, "lastHandshakeAgoSeconds": int|null,
                  "rxBytes", "txBytes"}]}
    relays:
      {"relays": [{"name", "id": hex|null, "addresses": [str], "endpoint": "ip:port"|null,
                   "state": "up"|"down"|"refusing"|"self",
                   "origin": "configured"|"bootstrap"|"discovered", "rttMs": num|null,
                   "reflexive": "ip:port"|null, "load": int}]}
    ping:
      {"node", "id", "path": "direct"|"relay", "relay": str|null, "sent", "received",
       "rttMs": [num]}
    The full field reference is docs/meshctl-json.md in the meshwire sources.

    The socket protocol itself: one JSON object per line, e.g. {"cmd":"peers"} or
    {"cmd":"ping","node":"node-b","count":3}; meshd answers {"ok":true,"result":{...}} or
    {"ok":false,"error":"..."} and closes the connection.

EXIT STATUS
    0    success (ping: at least one reply)
    1    meshd answered with an error (e.g. unknown node), or ping got no reply
    2    cannot talk to meshd: cannot connect to the socket, no answer within --timeout, or
         an answer that is not meshd's protocol
    64   command-line usage error

ENVIRONMENT
    MESHCTL_SOCKET  default for --socket

EXAMPLES
    meshctl status
    meshctl peers
    meshctl relays --json | jq '.relays[] | select(.state == "down") | .name'
    meshctl ping node-b --count 5
    meshctl --socket /run/meshwire-test/meshd.sock peers --json
)";

bool parse_number(std::string_view s, double& out) {
    if (s.empty()) return false;
    std::string copy(s);
    char* end = nullptr;
    out = std::strtod(copy.c_str(), &end);
    return end && *end == '\0' && std::isfinite(out);
}

}  // namespace

const char* help_text() {
    return k_help;
}

result<options> parse_args(const std::vector<std::string>& args, const char* env_socket) {
    options o;
    if (env_socket && *env_socket) o.socket = env_socket;
    std::vector<std::string> positional;
    bool count_given = false;
    bool options_done = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string_view a = args[i];
        if (options_done || a.empty() || a[0] != '-' || a == "-") {
            positional.emplace_back(a);
            continue;
        }
        if (a == "--") {
            options_done = true;
            continue;
        }
        // --name=value or --name value, for the options that take one.
        std::string name(a);
        std::string value;
        bool has_inline = false;
        if (auto eq = name.find('='); eq != std::string::npos && name.rfind("--", 0) == 0) {
            value = name.substr(eq + 1);
            name.resize(eq);
            has_inline = true;
        }
        auto take_value = [&]() -> result<std::string> {
            if (has_inline) return value;
            if (i + 1 >= args.size()) return error(errc::invalid_argument, name + " needs a value");
            return args[++i];
        };
        if (name == "-h" || name == "--help") {
            o.help = true;
        } else if (name == "-V" || name == "--version") {
            o.version = true;
        } else if (name == "--json") {
            o.json = true;
        } else if (name == "--socket") {
            o.socket = MW_TRY(take_value());
            if (o.socket.empty()) return error(errc::invalid_argument, "--socket: empty path");
        } else if (name == "--timeout") {
            std::string v = MW_TRY(take_value());
            if (!parse_number(v, o.timeout_seconds) || o.timeout_seconds <= 0 ||
                o.timeout_seconds > 3600)
                return error(errc::invalid_argument,
                             "--timeout: \"" + v + "\" is not a number of seconds in (0, 3600]");
        } else if (name == "--count") {
            std::string v = MW_TRY(take_value());
            double n = 0;
            if (!parse_number(v, n) || n != std::floor(n) || n < 1 || n > 100)
                return error(errc::invalid_argument,
                             "--count: \"" + v + "\" is not a whole number from 1 to 100");
            o.count = static_cast<int>(n);
            count_given = true;
        } else {
            return error(errc::invalid_argument, "unknown option " + std::string(a));
        }
        if (has_inline && (name == "-h" || name == "--help" || name == "-V" ||
                           name == "--version" || name == "--json"))
            return error(errc::invalid_argument, name + " takes no value");
    }
    if (o.help || o.version) return o;
    if (positional.empty())
        return error(errc::invalid_argument, "no command given (status, peers, relays, ping NODE)");
    o.command = positional[0];
    if (o.command != "status" && o.command != "peers" && o.command != "relays" &&
        o.command != "ping")
        return error(errc::invalid_argument,
                     "unknown command \"" + o.command + "\" (status, peers, relays, ping NODE)");
    if (o.command == "ping") {
        if (positional.size() < 2) return error(errc::invalid_argument, "ping: which NODE?");
        if (positional.size() > 2)
            return error(errc::invalid_argument, "ping: unexpected argument \"" + positional[2] +
                                                     "\" (one NODE at a time)");
        o.node = positional[1];
        if (o.node.empty() || o.node.size() > 253)
            return error(errc::invalid_argument, "ping: NODE must be a node name or a node ID");
    } else {
        if (positional.size() > 1)
            return error(errc::invalid_argument,
                         o.command + ": unexpected argument \"" + positional[1] + "\"");
        if (count_given) return error(errc::invalid_argument, "--count is only for ping");
    }
    return o;
}

std::chrono::milliseconds timeout(const options& o) {
    double s =
        o.timeout_seconds > 0 ? o.timeout_seconds : 5.0 + (o.command == "ping" ? o.count : 0);
    return std::chrono::milliseconds(static_cast<long long>(std::ceil(s * 1000)));
}

int run(const options& o, std::FILE* out, std::FILE* err) {
    if (o.help) {
        std::fputs(k_help, out);
        return exit_ok;
    }
    if (o.version) {
        std::fprintf(out, "meshctl %s\n", MESHWIRE_VERSION);
        return exit_ok;
    }
    std::string line = build_request(o.command, o.node, o.count).dump() + "\n";
    auto answer = exchange(o.socket, line, timeout(o));
    if (!answer) {
        std::fprintf(err, "meshctl: %s\n", answer.err().message.c_str());
        return exit_unreachable;
    }
    auto resp = parse_response(*answer);
    if (!resp) {
        std::fprintf(err, "meshctl: unexpected answer from %s: %s\n", o.socket.c_str(),
                     resp.err().message.c_str());
        return exit_unreachable;
    }
    if (!resp->ok) {
        std::fprintf(err, "meshctl: meshd: %s\n", resp->error.c_str());
        return exit_failed;
    }
    std::string text;
    try {
        text = o.json ? format_json(resp->result)
                      : format_human(o.command, resp->result,
                                     static_cast<std::int64_t>(std::time(nullptr)));
    } catch (const std::exception& e) {  // the formatters are defensive; this is a last resort
        std::fprintf(err, "meshctl: unexpected answer from %s: %s\n", o.socket.c_str(), e.what());
        return exit_unreachable;
    }
    std::fputs(text.c_str(), out);
    std::fflush(out);
    if (o.command == "ping") return ping_exit_code(resp->result);
    return exit_ok;
}

}  // namespace mw::meshctl
