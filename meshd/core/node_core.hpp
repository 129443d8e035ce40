// The node's protocol brain (DESIGN §4, §5, §7): membership through the relays, a path per peer
// (direct or relayed), end-to-end liveness of every path, and — on nodes listed in relayNodes —
// the relay service's control side (registrations, RECORDS answers, session set-up).
//
// Pure: events and `now` in (ms on a clock that does not jump: the daemon's is CLOCK_BOOTTIME
// based, never the wall clock, and nothing here compares clocks between nodes); datagrams to
// send, log events, the desired data plane and the next deadline out. No clock, socket, thread
// or OS randomness: the caller passes an RNG, and the relay's session table is reached through
// relay_binder. That is what lets test/sim run
// hundreds of these on a simulated network with a virtual clock.
//
// Membership: every node sends HELLO (its signed record, "send me RECORDS", its store's digest)
// to every configured relay every hello_interval; a relay stores the record and answers with
// every record it holds, its own included, when the digests differ, and pushes a new or changed
// record to every node registered with it (membership.hpp). Records are the record_store's:
// verified, newest seq wins, bounded.
//
// Paths, per remote node B (see docs/architecture.md "Paths"):
//   direct   we got a PONG from one of B's advertised control endpoints within path_timeout;
//            the WireGuard endpoint is that address with B's WireGuard port. Probed every
//            ping_interval while in use, every upgrade_interval otherwise (so a relayed pair
//            upgrades by itself when direct starts to work, and the probing stays bounded).
//   direct (learned)  no probe of ours came back, but B's own direct PINGs reach us: B can reach
//            us, so B's WireGuard will reach ours and ours learns B's address from it (WireGuard
//            roaming); we leave B's endpoint alone.
//   relay    otherwise, through a relay both of us are attached to. Both ends pick the same
//            relay and session id without talking to each other: the relay with the lowest
//            rendezvous hash of (pair, relay), and a session id hashed from (pair, relay). Each
//            end asks the relay to bind its side (RELAY_SESSION_REQUEST, refreshed, which also
//            restores the session after a relay restart). Liveness is end to end on the data
//            path: PINGs inside RELAY_DATA frames of the session, sealed with the pair's key
//            and shaped like WireGuard data (probe_frame.hpp), answered the same way.
//            A relayed path whose in-band PINGs stop coming back while the relay itself answers
//            is given up for that pair and another common relay is tried.
//   none     no way yet (no record, no common relay).
// Nodes with the relay role never take relayed paths: every other node reaches them directly.
//
// Liveness is adaptive (issue 18): only *active* pairs (WireGuard traffic in the counters or
// on_traffic; a new peer, new addresses, meshctl ping: for active_hold_ms) are probed — direct
// and in-band every ping_interval, their warm relays every fast_ping_interval. An idle pair's
// decision holds without probes (sessions refreshed every idle_session_refresh_ms), and relays
// that carry no active pair are probed every idle_used_ping_interval (120 s; in between, a 4-byte
// NAT keepalive every idle_ping_interval keeps a NATed node's mapping). A pair that turns active is
// probed at once and judged from that moment, so a relay that died while it was idle fails it
// over after fast_relay_timeout (or was already found dead by the slow probes). Idle control
// traffic grows with the relays, not with the peers (docs/architecture.md, "Liveness is
// adaptive").
//
// Structure (docs/architecture.md "The node core"): node_core is a thin host. It owns the parts,
// routes each message type to the part that handles it, runs the tick in a fixed order, and
// builds meshctl's views. The parts: core_context (what all share: config, channel, outbox,
// log, RNG, probes in flight, deadline), membership (record store, own record, HELLO/RECORDS),
// relay_directory (the relays and their liveness), relay_role (our role, dial-back, session
// requests), relay_election (per relayed pair: which relay, its sessions), peer_paths (a path
// per peer) and anti_entropy (records kept in sync with the nodes we reach directly).
// Discovery sources feed it through discovery_sink (offer_record, offer_endpoint).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/anti_entropy.hpp"
#include "meshd/core/control_channel.hpp"
#include "meshd/core/core_context.hpp"
#include "meshd/core/core_types.hpp"
#include "meshd/core/discovery_sink.hpp"
#include "meshd/core/membership.hpp"
#include "meshd/core/nat_behaviour.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/node_identity.hpp"
#include "meshd/core/peer_paths.hpp"
#include "meshd/core/peer_record.hpp"
#include "meshd/core/record_store.hpp"
#include "meshd/core/relay_directory.hpp"
#include "meshd/core/relay_election.hpp"
#include "meshd/core/relay_role.hpp"

namespace mw::meshd {

class node_core final : public discovery_sink {
public:
    using rng_fn = core_context::rng_fn;
    using probe_loss_counts = mw::meshd::probe_loss_counts;

    node_core(node_core_config cfg, const node_identity& identity, psk_sealer sealer, rng_fn rng,
              relay_binder* binder = nullptr, record_store_config store_cfg = {});
    node_core(const node_core&) = delete;  // the parts hold references to each other
    node_core& operator=(const node_core&) = delete;

    // Starts registering; call once. Returns the next deadline.
    uint64_t start(uint64_t now_ms);
    // A control datagram that arrived from `from` (session_id != 0: in-band, inside RELAY_DATA of
    // that session); `via` is the relay forwarder's socket tag, passed back to relay_binder.
    // Returns the next deadline (the effects of a datagram are decided on the next tick, which is
    // at most tick_quantum_ms away: ticks are O(peers), so they are batched, not run per packet).
    uint64_t on_datagram(std::span<const uint8_t> datagram, const wg_endpoint& from,
                         uint64_t session_id, uint16_t via, uint64_t now_ms);
    // WireGuard's per-peer counters, read at `read_ms` (the daemon reads the device every 2 s):
    // a relayed pair whose WireGuard makes no progress through its relay leaves it, and growth
    // beyond keepalives makes a pair active (probed fast; see "Liveness" above).
    void on_wireguard_counters(const std::vector<wg_peer_counters>& peers, uint64_t read_ms);
    // When the daemon should read WireGuard's counters next, after a read: cfg
    // wg_read_interval_ms, or wg_read_fast_interval_ms while an active direct pair's PONGs are
    // late (its path may have to be kept by WireGuard's rx; see peer_paths), judged at `now`
    // (the read's start: the core's last tick may be a second old on a quiet node).
    uint64_t wg_read_interval(uint64_t now) const { return paths_.wg_read_interval(now); }
    // Peers the WireGuard device found at start (kept, or adopted from a meshd that crashed) sends
    // to through a relay proxy socket (a loopback endpoint): relayed when the last meshd stopped.
    // They get no direct grace: their relay sessions are requested at once, so that a relayed
    // pair is back within the session setup (a direct answer still wins, as always).
    void on_relayed_before(const std::vector<wg_key>& peers, uint64_t now_ms);
    // The MTUs on the routes of the WireGuard interface at start (wg_reconciler::
    // read_owned_routes), by prefix: what a previous meshd measured is kept on each peer's
    // routes and confirmed on the path it takes (peer_paths::route_mtus_before). Before start().
    void on_route_mtus_before(const std::map<ip_prefix, unsigned>& routes, uint64_t now_ms);
    // The data plane saw WireGuard send to the peer with this key (the relay proxy, as it
    // happens): the pair is active at once, not at the next device read.
    void on_traffic(const wg_key& peer, uint64_t now_ms);
    // Pairs active at the last instant the core saw.
    size_t active_pairs() const { return paths_.active_pairs(last_tick_ms_); }
    // Timers. Returns the next deadline (absolute, ms).
    uint64_t tick(uint64_t now_ms);
    // Live configuration changes (relayNodes, our addresses).
    // revokedNodes (live): their records are dropped now and refused from then on, their
    // messages ignored, session requests naming them refused (they have no record).
    void set_revoked(std::vector<node_id> revoked, uint64_t now_ms);
    // psk.path / psk.acceptPaths (live): control datagrams are sealed and opened under the new
    // keys from now on; paths, sessions and WireGuard are untouched.
    void set_cluster_keys(psk_sealer sealer, uint64_t now_ms);
    // kubernetes.requireNode (live): only these nodes are accepted (nullopt: every node); the
    // records of the others go now, as for revokedNodes.
    void set_listed(std::optional<std::vector<node_id>> listed, uint64_t now_ms);
    // kubernetes.routeAuthority node (live): each annotated node ID with its Node's
    // spec.podCIDRs; other nodes' pod CIDRs are routed only inside them (route_authority.hpp).
    // nullopt: the configuration's checks alone (before the API's first list, or
    // routeAuthority: config).
    void set_node_cidrs(std::optional<route_authority::node_cidrs> by_node, uint64_t now_ms) {
        paths_.set_node_cidrs(std::move(by_node), now_ms);
    }
    void set_relays(std::vector<relay_spec> relays, bool relay_role, uint64_t now_ms);
    void set_endpoints(std::vector<wg_endpoint> endpoints, uint64_t now_ms);
    // dht.bootstrap: offered through the discovery entry (id-less endpoints, learned_via
    // bootstrap), replacing the previous list.
    void set_bootstrap(std::vector<ip_address> bootstrap, uint64_t now_ms);
    // No relayNodes configured: relays are found (bootstrap + records of serving nodes), and a
    // node with a public address offers itself (verifies it by dial-back, then serves).
    bool auto_relays() const noexcept { return ctx_.auto_relays(); }
    // Not listed, offering ourselves at our own public addresses (no relayNodes configured).
    bool offering() const noexcept { return ctx_.offering(); }

    // The discovery entry (discovery_sink.hpp).
    result<put_outcome> offer_record(const peer_record& rec, learned_via via, uint64_t now_ms,
                                     uint64_t max_remaining_ms = UINT64_MAX) override;
    void offer_endpoint(const std::optional<node_id>& id, const wg_endpoint& ep, learned_via via,
                        uint64_t now_ms) override;
    void withdraw_endpoints(learned_via via, uint64_t now_ms) override;

    // meshctl ping: sends one PING over the peer's path in use; the answer shows up in
    // take_ping_results() with the returned token. Errors: not_found (no such peer), state_mismatch
    // (no path).
    result<uint64_t> ping(const node_id& peer, uint64_t now_ms);

    // The earliest deadline after the last call (events such as ping() can pull it in).
    uint64_t next_deadline() const noexcept { return ctx_.next_deadline(); }

    std::vector<outgoing_datagram> take_outgoing();
    std::vector<core_log_event> take_log() { return ctx_.take_log(); }
    std::vector<ping_result> take_ping_results() { return std::exchange(ping_results_, {}); }

    // Desired data plane; dataplane_version() changes whenever it does.
    uint64_t dataplane_version() const noexcept { return paths_.dataplane_version(); }
    std::vector<peer_dataplane> dataplane() const { return paths_.dataplane(); }

    std::vector<peer_view> peers() const;
    std::vector<relay_view> relays() const;
    // The NAT in front of our control socket, per family, from the relays' reports (meshctl
    // status, metrics; nat_behaviour.hpp). At the last instant the core saw.
    nat_view nat() const;
    const peer_record& self_record() const noexcept { return members_.self(); }
    control_counters counters() const noexcept {
        control_counters c = ctx_.channel().counters();
        c.revoked += revoked_drops_;  // the channel drops most; these got past it
        return c;
    }
    const admission_counters& admission() const noexcept { return ctx_.admission; }
    // The cluster keys control datagrams are sealed and opened with (fingerprints only leave).
    const psk_sealer& sealer() const noexcept { return ctx_.channel().sealer(); }
    // Our control traffic (datagrams in and out, issue 18) and its rate over the last window.
    const control_traffic& traffic() const noexcept { return traffic_; }
    const control_traffic_rate& traffic_rate() const noexcept { return traffic_rate_; }
    relay_role_state role() const noexcept { return role_.state(); }
    const std::string& role_reason() const noexcept { return role_.reason(); }
    relay_role_cause role_cause() const noexcept { return role_.cause(); }
    // Our relay addresses (addr:control port) that another node has dialled back.
    std::vector<wg_endpoint> verified_addresses() const { return role_.verified_addresses(); }
    // Our advertised relay endpoints (listed, or offered without relayNodes).
    const std::vector<wg_endpoint>& role_addresses() const noexcept { return role_.addresses(); }
    // Failovers (the relay we send through changed because it failed) and relay selections.
    uint64_t relay_failovers() const noexcept { return election_.failovers(); }
    // Wakeups later than stall_ms past the deadline (our process was stalled).
    uint64_t stalls() const noexcept { return stalls_; }
    uint64_t relay_selections() const noexcept { return election_.selections(); }
    // Relays left by a pair because its WireGuard made no progress through them.
    uint64_t relay_wg_stalls() const noexcept { return election_.wg_stall_exclusions(); }
    // The path MTU searches of relayed pairs (issue 15).
    const pmtu_totals& pmtu() const noexcept { return ctx_.pmtu(); }
    // Our record's re-signs in this run, by reason (record_changes.hpp).
    const std::array<uint64_t, resign_reason_count>& record_resigns() const noexcept {
        return members_.resigns();
    }
    // Sealed in-band probe frames dropped (no pair for the session, wrong source, not opening).
    uint64_t probe_frames_dropped() const noexcept { return paths_.probe_frames_dropped(); }
    // PINGs that got no PONG within ping_timeout_ms, by what they probed.
    const probe_loss_counts& probe_losses() const noexcept { return ctx_.probes().losses(); }
    // Endpoints from records, offers and requests we refused to send to, and datagrams dropped
    // for a destination's send budget, by reason (endpoint_filter.hpp, send_budget.hpp).
    const endpoint_refusal_counts& endpoint_refusals() const noexcept {
        return ctx_.endpoint_refusals();
    }
    const record_store& store() const noexcept { return members_.store(); }
    // Anti-entropy with direct neighbours (anti_entropy.hpp).
    const anti_entropy_counters& anti_entropy_stats() const noexcept { return ae_.counters(); }
    size_t anti_entropy_neighbours() const noexcept { return ae_.neighbours(); }
    const std::map<node_id, membership::registration>& registrations() const noexcept {
        return members_.registrations();
    }
    // Which peers' pod CIDRs are routed and which are refused (route_authority.hpp).
    const route_authority& routes() const noexcept { return paths_.routes(); }
    const node_core_config& config() const noexcept { return ctx_.cfg; }
    const node_id& id() const noexcept { return ctx_.id(); }
    // Resolves a name or a 64-hex node ID to a known peer.
    std::optional<node_id> resolve(const std::string& name_or_id) const {
        return paths_.resolve(name_or_id);
    }

    // The pair's relay choice and session id (exposed for tests and the simulation).
    static uint64_t session_id_for(const node_id& a, const node_id& b, const node_id& relay) {
        return relay_session_id(a, b, relay);
    }
    static uint64_t rendezvous_score(const node_id& a, const node_id& b, const node_id& relay) {
        return relay_rendezvous_score(a, b, relay);
    }

private:
    void note_wakeup(uint64_t now);
    // Relay: HELLO_WANTED to each node admitted again whose registration we dropped.
    void ask_readmitted(uint64_t now);
    void refresh_self(uint64_t now, bool force);
    void on_pong(const control_message& m, const pong_msg& b, const wg_endpoint& from,
                 uint64_t session_id, uint64_t now);
    // A request that allocates state or draws a larger answer: true if its cookie proves its
    // source; else answers with a COOKIE_REPLY and returns false.
    bool source_proven(const control_message& m, uint64_t request_id, const cookie_bytes& cookie,
                       const wg_endpoint& from, uint64_t now);
    void on_cookie_reply(const control_message& m, const cookie_reply_msg& b,
                         const wg_endpoint& from, uint64_t now);
    relay_role::helper_list dialback_helpers(bool public_only, size_t max, uint64_t now) const;
    // The nodes we reach directly that are not relays we register with (anti_entropy.hpp).
    std::vector<anti_entropy::neighbour> direct_neighbours(uint64_t now) const;

    // The parts, in construction order; each holds references only to parts declared above it.
    // Calls the other way (a change another part must react to) are the callbacks wired in the
    // constructor: the couplings, all in one place.
    core_context ctx_;
    relay_role role_;
    membership members_;
    relay_directory directory_;
    relay_election election_;
    peer_paths paths_;
    anti_entropy ae_;

    std::vector<ping_result> ping_results_;
    uint64_t next_neighbour_scan_ms_ = 0;
    uint64_t next_expire_ms_ = 0;
    uint64_t stalls_ = 0;
    uint64_t last_tick_ms_ = 0;
    uint64_t revoked_drops_ = 0;
    control_traffic traffic_, traffic_mark_;
    uint64_t traffic_mark_ms_ = 0;
    control_traffic_rate traffic_rate_;
    void measure_traffic(uint64_t now);
};

}  // namespace mw::meshd
