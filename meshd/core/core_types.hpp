// The node core's plain types: its configuration, what it hands the daemon (datagrams, log
// events, the desired data plane, meshctl's views) and the small enums its parts share.
// node_core.hpp includes this, so users of node_core see them all as before.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/ip_address.hpp"
#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "common/wireguard/wg_key.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/peer_record.hpp"
#include "meshd/core/relay_session_table.hpp"
#include "meshd/core/route_authority.hpp"

namespace mw::meshd {

// How the core learned of a node or an address: the discovery sources behind the one entry
// (discovery_sink, DESIGN §6). A bit each, so one node can be known through several.
enum class learned_via : uint8_t {
    relay = 1 << 0,         // a RECORDS answer or push from a relay
    bootstrap = 1 << 1,     // a dht.bootstrap address, or RECORDS from a bootstrap node
    mdns = 1 << 2,          // mDNS on the LAN
    cache = 1 << 3,         // the on-disk record cache
    dht = 1 << 4,           // the DHT
    kubernetes = 1 << 5,    // the Kubernetes API
    registration = 1 << 6,  // the node registered with us (its HELLO: we are its rendezvous)
    neighbour = 1 << 7,     // anti-entropy with a node we reach directly (anti_entropy.hpp)
};
using learned_via_set = uint8_t;
const char* to_string(learned_via v) noexcept;
// The names of the bits set, in the order above (meshctl's `learnedVia`).
std::vector<std::string> learned_via_names(learned_via_set s);
constexpr learned_via_set operator|(learned_via_set s, learned_via v) noexcept {
    return static_cast<learned_via_set>(s | static_cast<uint8_t>(v));
}

// PINGs that got no PONG within ping_timeout_ms, by what they probed.
struct probe_loss_counts {
    uint64_t relay = 0, direct = 0, inband = 0, user = 0, pmtu = 0;
};

enum class path_kind : uint8_t { none, direct, relay };
const char* to_string(path_kind k) noexcept;

// Why a pair has the path it has (meshctl peers REASON, `pathReason`; issue 13), fixed codes:
// direct to a private address of the peer ("lan") or a public one ("public"), reached by the peer
// ("learned": it is behind a NAT, we are not), kept by WireGuard's traffic while the peer's meshd
// is silent ("kept"); relayed because no direct address answered ("no_direct_answer"), because
// it was relayed before our restart ("relayed_before_restart"), or because our own NAT maps per
// destination ("symmetric_nat_here": no peer can reach our mapping); no path yet while direct
// addresses get a moment ("waiting"), or none ("none").
enum class path_reason : uint8_t {
    none,
    waiting,
    lan,
    public_address,
    learned,
    kept,
    no_direct_answer,
    relayed_before_restart,
    symmetric_nat_here,
};
const char* to_string(path_reason r) noexcept;

// The relay role of this node (DESIGN §5 "Relay role"): listed in relayNodes -> verifying (its
// advertiseAddress must be dialled back by another node) -> active, or refused with a reason.
enum class relay_role_state : uint8_t { none, verifying, active, refused };
const char* to_string(relay_role_state s) noexcept;
// Why the relay role is what it is, as a fixed code: the metric label (a label with free text,
// such as addresses or "N s ago", would make a new series per change); the text with the
// addresses goes to the log and `meshctl status` (relay_role::reason()).
enum class relay_role_cause : uint8_t {
    none,               // not decided yet
    not_listed,         // relayNodes configured without this node (or no longer with it)
    no_public_address,  // no relayNodes and no public address (or no public IPv4) to offer
    listed,             // listed in relayNodes, waiting for a dial-back
    offering,           // no relayNodes, offering at its public addresses
    rechecking,         // refused before; checking again
    reachable,          // every advertised address dialled back
    partly_reachable,   // some advertised address dialled back, not all yet
    still_reachable,    // serving on at addresses already dialled back
    no_helper,          // refused: no other node could be asked to dial back
    unreachable,        // refused: asked, no dial-back in time
    restarted,          // serving since the start on the role saved before it; checked again
};
const char* to_string(relay_role_cause c) noexcept;

// Where a relay entry comes from. With relayNodes configured only those are relays. Without
// (DESIGN §5: "with none configured, nodes whose advertised address others can verifiably reach
// become relay candidates"): the dht.bootstrap addresses are asked for the cluster's records, and
// every node whose record says it serves (its public address was dialled back) is a relay.
enum class relay_origin : uint8_t { configured, bootstrap, discovered };
const char* to_string(relay_origin o) noexcept;

struct relay_spec {
    std::string name;
    std::vector<ip_address> addresses;
    friend bool operator==(const relay_spec&, const relay_spec&) = default;
};

struct node_core_config {
    // The control protocol's boot epoch (boot_epoch.hpp; the daemon persists it): larger on every
    // start; also the high part of our records' seqs (membership.hpp). 0: now / 1000 at start()
    // (tests and simulations, whose clocks read like unix ms and which never restart an identity
    // within one second).
    uint64_t boot_epoch = 0;
    std::string node_name;
    std::vector<ip_prefix> pod_cidrs;
    // Route authority (route_authority.hpp): which pod CIDRs of other nodes are routed.
    std::vector<ip_prefix> cluster_cidrs;  // empty: no cluster-CIDR check
    int node_cidr_mask_v4 = 24;
    int node_cidr_mask_v6 = 64;
    uint16_t control_port = 51821;  // ours, and the port relays are reached on
    uint16_t wg_port = 51820;
    std::vector<wg_endpoint> endpoints;  // our control endpoints, advertised in our record
    std::vector<relay_spec> relays;
    bool relay_role = false;
    // The relay role this node had when its last meshd stopped (the daemon's relay_role_file):
    // serving at `verified` (all of our advertised relay endpoints then: `advertised`, listed or
    // offering), last known serving `age_ms` before this start. Unset: none, or not usable.
    struct saved_relay_role {
        bool listed = false;
        std::vector<wg_endpoint> advertised;
        std::vector<wg_endpoint> verified;
        uint64_t age_ms = 0;
    };
    std::optional<saved_relay_role> saved_role;
    // dht.bootstrap: nodes (control port) asked for the cluster's records when no relayNodes
    // are configured; they serve as relays only if their record says so.
    std::vector<ip_address> bootstrap;
    // revokedNodes, sorted: their records, messages and session requests are refused.
    std::vector<node_id> revoked;
    // kubernetes.requireNode: when set, only these nodes (sorted; the node IDs annotated on the
    // API's Nodes) are accepted; every other node is refused like a revoked one.
    bool require_listed = false;
    std::vector<node_id> listed;
    // Relays taken from records (no relayNodes): a sample, by a hash of their ID keyed with a
    // salt of our own (relay_directory.hpp).
    size_t max_found_relays = 16;

    // Adaptive liveness (issue 18): a pair is *active* while its WireGuard carries traffic (or
    // for a moment after it appeared, its addresses changed, or meshctl pinged it); only active
    // pairs are probed (direct every ping_interval, in-band every ping_interval, their warm
    // relays every fast_ping_interval). An idle pair sends no probes of its own: its path
    // decision holds until traffic tests it again, and the relays are checked every
    // idle_used_ping_interval (retried every ping_interval while unanswered). So an idle node's
    // control traffic grows with its relays, not with the cluster.
    uint64_t ping_interval_ms = 1000;  // paths of active pairs (direct and in-band); retries
    // WireGuard's counters are read this often (node_core::wg_read_interval), and at the fast
    // interval while an active direct pair's PONGs are late: its path is then kept by the rx from
    // the peer (peer_paths, "kept by WireGuard"), credited to the read before the growth, which
    // must come within path_timeout_ms of the next (reads 2 s apart left gaps of 0.5 s).
    uint64_t wg_read_interval_ms = 2000;
    uint64_t wg_read_fast_interval_ms = 1000;
    // The NAT keepalive interval: a used relay's address in use gets a NAT_KEEPALIVE (4 bytes,
    // wire_codec.hpp) this often between full probes; also the retry cap of a relay not up.
    uint64_t idle_ping_interval_ms = 25000;
    // Idle relays in detail (issue 18, relay_directory.hpp): the relays our relayed pairs send
    // through or would fail over to first (their warm sets; with none, the first relay that
    // answers) are *used*: probed every idle_used_ping_interval, at one address: the one in use,
    // whose NAT mapping carries those pairs' WireGuard packets (the relay proxy sends them from
    // the control socket), the relay's pushes and our HELLOs. That mapping is kept open by a
    // NAT_KEEPALIVE every idle_ping_interval between the probes, when a NAT may sit between (the
    // relay saw us at an address that is not one of our endpoints, or we do not know yet). 25 s:
    // below the 30 s Linux conntrack keeps an unreplied UDP flow and WireGuard's own keepalive
    // figure for NATs with short UDP timeouts. 120 s for the full probe: liveness at idle only
    // ranks relays and tells which one a pair that resumes tries first, and a pair that turns
    // active probes its warm relays fast at once and fails over within fast_relay_timeout; 120 s
    // keeps the probes' other duties in their limits (the relay's cookie for our requests lives
    // 2-4 min, cookie_jar.hpp; a serving relay's learned path to us lasts this + path_timeout,
    // peer_paths). A dead used relay is noticed at idle within this + path_timeout (it was 25 s).
    // Every other relay (one no pair of ours keeps warm) is probed every
    // idle_spare_ping_interval and gets no keepalives: its liveness only ranks it for pairs that
    // move to it, which probe it at once (spare to used). A relay's other addresses (its other
    // family) are checked every idle_other_address_ms, or at once while the address in use goes
    // unanswered.
    uint64_t idle_used_ping_interval_ms = 120000;
    uint64_t idle_spare_ping_interval_ms = 120000;
    uint64_t idle_other_address_ms = 300000;
    // A pair stays active this long after the last sign of traffic (WireGuard counter growth,
    // on_traffic, a meshctl ping) or after it was discovered or its addresses changed.
    uint64_t active_hold_ms = 10000;
    // WireGuard counter growth (tx + rx) in one device read above which a pair has traffic: a
    // 2 s read of an idle pair holds at most a keepalive each way and a handshake (32 + 32 + 148
    // + 92 bytes); one 84-byte ping a second each way is 512.
    uint64_t traffic_bytes_per_read = 400;
    // Traffic into a black hole: tx grew by at least this over reads in a row in which rx did
    // not grow at all (a pod pinging once a second over a path that silently died: 2 x 128 bytes
    // a read, 0 back) makes the pair active too, so its path is tested and fails over. The end
    // that only receives gets there by its keepalive and WireGuard's handshake retries (32 +
    // 148 + 148 bytes, ~20 s after the keepalive). Above what an idle pair sends before an
    // answer can be counted: a keepalive, or a handshake initiation and the keepalive queued
    // behind it (148 + 32 bytes; the peer's keepalive comes at least every 25 s, the response
    // at once, in the next read when the read falls within the round trip).
    uint64_t unanswered_tx_bytes_per_read = 200;
    // control_traffic_rate is measured over windows of at least this (on the tick).
    uint64_t traffic_window_ms = 10000;
    // Sessions of idle relayed pairs are refreshed this often (the relay's session table forgets
    // a session after 180 s without traffic or refresh; relays of every version). An idle
    // refresh is retried every session_retry_ms until answered, so 30 s of margin is 30 tries.
    // 150 s (issue 18; 60 s before): WireGuard's keepalives no longer cross relayed sessions.
    uint64_t idle_session_refresh_ms = 150000;
    // Serving as a relay: an idle session is kept while both its nodes are heard (an
    // authenticated control message from the bound address) within this, and the relay says so
    // (RELAY_SESSION_KEPT) so that idle pairs stop refreshing. 300 s = 2.5x the idle PING interval
    // to a relay (idle_used/spare_ping_interval_ms): two lost PINGs in a row do not drop a
    // session. Must match relay_table_limits::keep_ms. 0: neither (a relay before issue 18).
    uint64_t relay_keep_ms = default_relay_keep_ms;
    // A session such a relay keeps is still requested again this often while the pair is idle:
    // the backstop for what the relay does not tell us (it evicted the session for a new one in
    // a full table, or its forwarder was rebuilt without a restart, a relay role flap). A peer
    // that went quiet is covered without it: the relay unbinds only that peer's side, which its
    // next request completes. One hour: 2 datagrams per relayed pair and relay an hour, against
    // 24 with the 150 s refresh.
    uint64_t kept_session_refresh_ms = 3'600'000;
    // Relays that carry (or stand by for) one of our active relayed pairs are probed this often and
    // declared dead for those pairs after fast_relay_timeout_ms without an answer: the failover
    // budget is that timeout plus one tick.
    uint64_t fast_ping_interval_ms = 100;
    uint64_t fast_relay_timeout_ms = 400;
    // Called this much later than the deadline we asked for, our own process was stalled (an
    // overloaded machine): the relays' silence over that time is not theirs, so their liveness
    // clock is paused for it instead of failing every pair over.
    uint64_t stall_ms = 150;
    size_t warm_relays = 2;  // sessions kept per relayed pair (in use + standby)
    // The RTTs that rank relays and direct addresses are the minimum of this window's probe
    // samples, not an average: on a busy machine samples are mostly CPU wait (windowed_min.hpp).
    uint64_t rtt_window_ms = 3000;
    // The RTT a node publishes for each of its relays (relay_directory::attachments) is the
    // minimum over this window, and moves only by more than half the switching margin: every
    // move is a record pushed to the whole cluster (issue 18: at idle, noisy samples re-signed
    // LAN nodes' records every few minutes). At idle a real rise shows within this window;
    // while the relay is probed fast (a pair with traffic), the ranking's rtt_window_ms applies.
    uint64_t publish_rtt_window_ms = 600000;
    // Election hysteresis: a better relay replaces the one in use only if it is better by both.
    double switch_abs_ms = 5;
    double switch_rel = 0.2;
    // Relays within this of the best score count as equally good (pairs spread over them).
    double spread_abs_ms = 2;
    double spread_rel = 0.1;
    uint64_t direct_grace_ms = 1000;  // a new peer gets this long to answer directly
    // Relay role verification: DIALBACK_REQUESTs to up to dialback_helpers other nodes every
    // dialback_interval_ms; without a probe back within dialback_timeout_ms the role is refused.
    uint64_t dialback_interval_ms = 1000;
    uint64_t dialback_timeout_ms = 15000;
    size_t dialback_helpers = 3;
    // A refused relay role is checked again after role_retry_ms, doubling up to the max.
    uint64_t role_retry_ms = 60000;
    uint64_t role_retry_max_ms = 960000;
    // A role saved at most this long ago (saved_role.age_ms) for the same advertised addresses
    // serves from the start and is verified again meanwhile (relay_role.hpp). Bounded so that a
    // relay down for longer (its firewall or port forward may have changed) verifies first.
    uint64_t role_saved_max_age_ms = 60000;
    uint64_t dialback_probes_per_s = 20;  // as a helper: probes we send for others, at most
    uint64_t upgrade_interval_ms = 5000;  // direct candidates of an active pair not using them
    uint64_t path_timeout_ms = 3500;      // no answer for this long: path / relay is down
    // Path MTU search on active relayed pairs (issue 15, path_mtu.hpp): inner sizes from 1280 up
    // to pmtu_max (the WireGuard interface's MTU; 0: off). A complete search confirms its MTU
    // every pmtu_confirm_interval_ms with one padded probe (RFC 8899 suggests less often; ours
    // bounds how long a black hole on a path in use lasts, ~ interval + 3 probe timeouts, and
    // only active pairs pay it: ~300 B/s each).
    unsigned pmtu_max = 0;
    uint64_t pmtu_confirm_interval_ms = 5000;
    // HELLO to each relay (registration, membership.hpp): every hello_interval once the relay
    // answered one, every hello_retry_interval until it does; at once when our record changes,
    // the relay restarted (a new boot epoch in its PONG), came back up, or answers a probe
    // again after a round that went unanswered (it may have dropped us: revoked, restarting).
    // 300 s (issue 18): what registration needs, not liveness (NAT keepalives every
    // idle_ping_interval keep the NAT mapping the relay's pushes use); records live
    // record_lifetime (12 h) and are re-signed at half of it. A relay counts a node registered
    // for three intervals (membership::registration_ms), so two lost HELLOs do not cost its
    // pushes.
    uint64_t hello_interval_ms = 300000;
    uint64_t hello_retry_interval_ms = 10000;
    // Anti-entropy with the nodes we reach directly (anti_entropy.hpp): a digest exchange per
    // neighbour per interval, new records pushed on to `fanout` neighbours. Off: rendezvous that
    // are not relays answer every HELLO with every record, as before (the benchmark's baseline).
    // A pair whose digests matched waits twice as long for its next round, up to the max
    // (idle cost, issue 18); a round that differed starts again from the interval.
    bool anti_entropy = true;
    uint64_t anti_entropy_interval_ms = 10000;
    uint64_t anti_entropy_max_interval_ms = 640000;
    size_t anti_entropy_neighbours = 64;  // at most this many, a random sample beyond
    size_t anti_entropy_fanout = 3;
    uint64_t session_refresh_ms = 15000;
    uint64_t session_retry_ms = 1000;   // until the relay accepted
    uint64_t relay_exclude_ms = 30000;  // a relay that failed a pair is not retried for it
    // A relayed pair whose WireGuard traffic through the relay in use does not reach the peer
    // (its sealed probes report no rx growth this long after ours grew, over 3 of our readings)
    // excludes that relay, even when the probes answer (relay_election.hpp).
    uint64_t wg_stall_ms = 6000;
    // Our record's signed lifetime, counted by every receiver from its first receipt; re-signed at
    // half of it. 12 h (issue 18; was 10 min): a re-sign that changes nothing reaches every node
    // (through the relays' pushes), so its cost is N records per node per half lifetime; a node
    // that stops is forgotten 6-12 h after it stopped (revokedNodes: at once).
    uint64_t record_lifetime_ms = 12ull * 3600 * 1000;
    uint64_t ping_timeout_ms = 3000;  // pending PINGs are forgotten after this
    // Admission (issue 17). A relay admits at most new_ids_per_min new identities (nodes it holds
    // no record of) per source address per minute, with a burst of new_ids_burst; sources beyond
    // its table of new_ids_sources share new_ids_shared_per_min (burst new_ids_shared_burst).
    uint64_t new_ids_per_min = 30;
    uint64_t new_ids_burst = 64;
    uint64_t new_ids_shared_per_min = 120;
    uint64_t new_ids_shared_burst = 256;
    size_t new_ids_sources = 1024;
    // As a dial-back helper: probes for one requester per second (the global budget is
    // dialback_probes_per_s), so one requester cannot starve the others' verification.
    uint64_t dialback_probes_per_requester_s = 4;
};

// One remote node as the data plane should have it.
struct peer_dataplane {
    node_id id;
    std::string name;
    wg_key wg_public_key;
    std::vector<ip_prefix> allowed_ips;
    path_kind path = path_kind::none;
    // direct: the peer's address and WireGuard port; nullopt: learned by WireGuard (see above).
    std::optional<wg_endpoint> endpoint;
    node_id relay;               // relay path: the relay we send through
    wg_endpoint relay_endpoint;  // relay path: the relay's socket
    uint64_t session_id = 0;     // relay path
    // relay path: the receiver index of the pair's sealed probes to us (probe_frame.hpp); the
    // relay proxy hands frames carrying it to the core, not to WireGuard. 0: none.
    uint32_t probe_index = 0;
    // relay path: warm standby sessions (accepted by their relay) the peer may send on
    std::vector<std::pair<uint64_t, wg_endpoint>> standby;
    // WireGuard persistent keepalive at the NAT rate wanted (issue 18): false on a direct path
    // the peer answered at with our own address as it saw us (no NAT between: the planner sets
    // a slow one); on a learned direct path, true only when the peer's PINGs come from one of
    // its own addresses (no NAT, maybe a firewall: a NATed peer keeps its mapping). Relayed paths
    // through the relay proxy get none whatever this says (dataplane_planner: their packets leave
    // from the control socket, whose NAT mapping to the relay the relay probes keep).
    bool keepalive = true;
    // relay path: the path MTU measured on it (issue 15, path_mtu.hpp) when below the interface
    // MTU: the MTU of the routes to the peer's pod CIDRs. 0: none (the interface MTU holds).
    unsigned path_mtu = 0;
    // relay path: the pair is active (peer_paths: traffic, or a fresh path, for active_hold_ms).
    // The planner gives a relayed peer through the relay proxy a persistent keepalive only while
    // it is (issue 18). False on other paths, so that their active/idle turns change nothing.
    bool active = false;

    friend bool operator==(const peer_dataplane&, const peer_dataplane&) = default;
};

// What WireGuard counted for one peer (wireguard_worker's device read, fed to the core).
struct wg_peer_counters {
    wg_key public_key;
    uint64_t rx_bytes = 0, tx_bytes = 0;
    // Where WireGuard sends to the peer now (it roams to the source of the last packet it
    // authenticated); nullopt: unknown.
    std::optional<wg_endpoint> endpoint;
};

struct outgoing_datagram {
    wg_endpoint to;
    uint64_t session_id = 0;  // non-zero: send inside RELAY_DATA of this session (in-band)
    std::vector<uint8_t> bytes;
    // Send from a new ephemeral port, not the control socket (dial-back probes: an answer from
    // the control port could pass the target's NAT as the reply to a flow the target opened).
    bool fresh_socket = false;
};

struct core_log_event {
    int level = 1;  // log::level values: 0 debug, 1 info, 2 warn, 3 error
    std::string msg;
    std::vector<std::pair<std::string, std::string>> fields;
};

// The relay's session table, as the control side of the relay service sees it.
class relay_binder {
public:
    virtual ~relay_binder() = default;
    virtual result<relay_bind_state> bind(uint64_t session_id, const node_id& from,
                                          const node_id& to, const wg_endpoint& observed,
                                          uint16_t via) = 0;
    // An authenticated control message from `node` arrived from `observed` (not in-band, not an
    // anonymous PING): its sessions bound there are kept (relay_session_table::heard).
    virtual void heard(const node_id& node, const wg_endpoint& observed) {
        (void)node, (void)observed;
    }
};

// meshctl's views.
struct peer_view {
    node_id id;
    std::string name;
    wg_key wg_public_key;
    std::vector<ip_prefix> pod_cidrs;         // accepted and routed
    std::vector<refused_cidr> refused_cidrs;  // claimed in its record, refused (never routed)
    path_kind path = path_kind::none;
    path_reason reason = path_reason::none;
    bool learned = false;  // direct, endpoint learned by WireGuard
    std::optional<node_id> relay;
    std::string relay_name;
    uint64_t session_id = 0;
    bool session_accepted = false;
    // A relayed pair's sessions: at the relay it sends through first, then its warm standby (and
    // the relay the peer sends through, when that is a third), each with whether that relay
    // accepted our side. A failover to an accepted standby whose peer accepted its side too needs
    // no session request (the sub-second promise).
    struct relay_session {
        std::string relay_name;
        bool in_use = false;
        bool accepted = false;
    };
    std::vector<relay_session> relay_sessions;
    std::optional<wg_endpoint> endpoint;
    std::optional<double> rtt_ms;  // of the path in use
    // The path MTU (inner bytes) of the path in use as measured, and whether that search is
    // complete; nullopt: not measured (a direct path, an idle pair not probed yet, a search off).
    std::optional<unsigned> path_mtu;
    bool path_mtu_complete = false;
    learned_via_set sources = 0;  // how its record reached us (learned_via bits)
    uint64_t record_seq = 0;
    // Left of its record's lifetime here (counted from our first receipt of that seq, on our
    // clock), at the last instant the core saw; nullopt when no record is held.
    std::optional<uint64_t> record_expires_in_ms;
};

enum class relay_state { unknown, up, down, self, refusing };
const char* to_string(relay_state s) noexcept;

struct relay_view {
    std::string name;
    relay_origin origin = relay_origin::configured;
    std::vector<ip_address> addresses;
    std::optional<node_id> id;
    std::optional<wg_endpoint> endpoint;
    relay_state state = relay_state::unknown;
    std::optional<double> rtt_ms;
    std::optional<wg_endpoint> reflexive;  // our address as the relay sees it
    size_t load = 0;                       // our pairs relayed through it
};

// The node's own control traffic (issue 18: what liveness and membership cost it): datagrams
// the core took in (on_datagram, in-band probe frames included) and handed out (take_outgoing),
// in UDP payload bytes (an in-band frame's RELAY_DATA header included; not IP/UDP headers).
// WireGuard's packets are not in it.
struct control_traffic {
    uint64_t rx_packets = 0, rx_bytes = 0, tx_packets = 0, tx_bytes = 0;
};
// Its rate over the last full window (node_core_config::traffic_window_ms); window_ms 0: none
// yet.
struct control_traffic_rate {
    double rx_packets_per_s = 0, rx_bytes_per_s = 0, tx_packets_per_s = 0, tx_bytes_per_s = 0;
    uint64_t window_ms = 0;
};

struct ping_result {
    uint64_t token = 0;
    double rtt_ms = 0;
};

}  // namespace mw::meshd
