// A path per remote node and its liveness (DESIGN §7; docs/architecture.md "Paths"): the
// candidates (control endpoints from the node's record, plus those offered through the discovery
// entry), their probes and RTTs, the node's own direct PINGs to us, and the decision — direct,
// direct (learned), relayed (relay_election picks the relay), or none — as the peer_dataplane
// the daemon applies.
//
// Peers follow the record store: a record that expired (or was never there) is no peer. A peer is
// decided again when something it depends on changed (next_check_ms); relays_changed() makes
// every peer decided again on the next tick (relay_directory and relay_role call it).
//
// Adaptive liveness (issue 18): a peer is probed only while its pair is active — WireGuard
// carries traffic to or from it (on_wireguard_counters, on_traffic), or it was just discovered,
// its addresses changed, or meshctl pinged it (for active_hold_ms). An idle pair sends nothing of
// its own: its decision holds (the last PONG does not expire while idle), its relayed sessions
// are refreshed every idle_session_refresh_ms, and its relays are checked slowly by
// relay_directory. When it turns active, its paths are probed at once and judged from that
// moment (active_since): the first probes that go unanswered move it, as for any active pair.
//
// A peer's allowed-ips are the pod CIDRs the route authority accepted from its record
// (route_authority.hpp); the refused ones are logged once, counted and shown, never applied.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "meshd/core/core_context.hpp"
#include "meshd/core/direct_pmtu.hpp"
#include "meshd/core/probe_loss.hpp"
#include "meshd/core/record_store.hpp"
#include "meshd/core/relay_directory.hpp"
#include "meshd/core/relay_election.hpp"
#include "meshd/core/relay_role.hpp"
#include "meshd/core/route_authority.hpp"
#include "meshd/core/windowed_min.hpp"

namespace mw::meshd {

class peer_paths {
public:
    struct candidate {
        wg_endpoint ep;  // control endpoint
        uint64_t last_pong_ms = 0;
        double rtt_ms = 0;  // the minimum over cfg.rtt_window_ms (see windowed_min.hpp)
        windowed_min rtt_min;
        // Its last PONG saw us at one of our own addresses: no NAT between us on this address,
        // so WireGuard's keepalive can be slow (peer_dataplane::keepalive).
        bool nat_free = false;
        // The newest of our PINGs to it that was answered: when it was sent (pmtu_prober: a
        // padded PING's loss counts once a later small one came back).
        uint64_t answered_sent_ms = 0;
    };
    struct peer_entry {
        std::vector<candidate> candidates;
        uint64_t next_probe_ms = 0;
        uint64_t last_inbound_ms = 0;  // last direct PING from the peer
        // The last direct PING from one of the peer's own addresses (its record's or offered):
        // no NAT between us on that one, though maybe a stateful firewall, whose UDP state may
        // time out before the peer's slow keepalive (it sees no NAT either) comes: our 25 s
        // keepalive keeps it. PINGs from elsewhere come through a NAT, whose mapping the peer
        // keeps with its own fast keepalive (peer_dataplane::keepalive). A time, not a flag of
        // the last PING: a dual-stack peer's PINGs from both kinds must not flip the keepalive.
        uint64_t own_inbound_ms = 0;
        uint64_t discovered_ms = 0;
        relayed_pair relayed;                    // relay path: the election's state for this pair
        path_reason reason = path_reason::none;  // of the last decision (peer_view::reason)
        // when decide() must run again (0: now); events that may change the decision reset it
        uint64_t next_check_ms = 0;
        uint64_t record_seq = 0;  // the record the candidates were taken from (0: rebuild)
        uint64_t uses_sig = 0;    // uses_sig() at the last walk of uses()
        // Adaptive liveness: active until active_until, since active_since (the start of
        // this active spell; probes are judged from there).
        uint64_t active_until = 0;
        uint64_t active_since = 0;
        uint64_t held_from_ms = 0;  // the end of the previous active spell (fresh())
        // WireGuard bytes sent since its counters last showed anything received (reads in a
        // row): unanswered_tx_bytes_per_read of them makes the pair active.
        uint64_t tx_unanswered = 0;
        // WireGuard's rx from the peer (on_wireguard_counters): the total at the last read, that
        // read's time, and the time rx last grew on the direct endpoint in use, credited to the
        // read before (the packets came after it; so a path that died is never held longer than
        // by its last PONG). It keeps a direct path whose PONGs stopped (the peer's meshd is
        // down, its WireGuard is not) for path_timeout_ms after that.
        uint64_t wg_rx = 0;
        uint64_t wg_read_ms = 0;
        uint64_t wg_rx_direct_ms = 0;
        bool held_by_wg = false;  // the decision was kept by WireGuard rx (logged once)
        // The loss rate of the probes to the direct address in use, while the pair is active
        // (probe_loss): on a lossy link they come faster, so that path_timeout_ms holds enough
        // of them that losing all by chance does not happen (an hour on the lossy testbed moved
        // two direct paths from a stale IPv4 address to the IPv6 one that happened to answer).
        // Lazy: ~1 KB, only for pairs that probed a direct path while active.
        lazy_probe_loss direct_loss;
        uint64_t next_others_ms = 0;  // meanwhile, the peer's other addresses (ping_interval_ms)
        // The path MTU of the direct path in use (issue 15): the candidate's route, or a
        // learned path's (direct_pmtu.hpp).
        direct_pmtu direct_mtu;
        // the decision
        peer_dataplane dp;
        bool learned = false;
    };

    peer_paths(core_context& ctx, const record_store& store, relay_directory& relays,
               relay_election& election, const relay_role& role);
    // Probes of an active direct path: every ping_interval_ms on a clean link, down to this on
    // a lossy one (direct_loss).
    static constexpr uint64_t min_direct_interval_ms = 100;
    // What a WireGuard device read may take, from its start to its result at the core
    // (wg_read_interval: reads come fast early enough to hold a direct path despite it).
    static constexpr uint64_t read_slack_ms = 500;

    // Follows the store, decides the peers that are due (all after relays_changed()).
    void tick(uint64_t now);
    // Something every pair's decision reads changed (relays, their liveness, our role).
    void relays_changed() noexcept { recheck_all_ = true; }

    // The discovery entry for addresses of known node IDs: "node `id` may answer at control
    // endpoint `ep`, learned via `via`". A candidate from then on, beside its record's, until
    // withdrawn; probed like them.
    void add_candidate(const node_id& id, const wg_endpoint& ep, learned_via via, uint64_t now);
    void withdraw_candidates(learned_via via, uint64_t now);
    // The sources that offered candidates for this node now (learned_via bits).
    learned_via_set offered_via(const node_id& id) const;

    // A PING from `sender`; in-band (session_id != 0) it came from `from`, which must be an
    // address of the relay whose session for the pair it names.
    void on_ping(const node_id& sender, uint64_t session_id, const wg_endpoint& from, uint64_t now);
    // A PONG to a direct or in-band probe.
    // `observed`: where the peer saw the PING come from (a direct PONG's reflexive address).
    void on_pong(const probe& p, const node_id& sender, double rtt, uint64_t now,
                 const wg_endpoint* observed = nullptr);
    // A sealed probe frame (probe_frame.hpp) that came in relay session `session_id` from
    // `from`: a PING is answered and tells the relay the peer sends through, a PONG credits its
    // probe. The pair is found by the session (a warm one, else any pair's session at the relay
    // `from` is an address of) and the frame must open with that pair's keys; anything else is
    // dropped and counted. Returns a meshctl ping's answer (its probe and RTT), if it was one.
    std::optional<std::pair<probe, double>> on_probe_frame(uint64_t session_id,
                                                           const wg_endpoint& from,
                                                           std::span<const uint8_t> frame,
                                                           uint64_t now);
    // WireGuard's counters per peer, read at `read_ms` (relays judged by what they carry; growth
    // beyond keepalives makes the pair active).
    void on_wireguard_counters(const std::vector<wg_peer_counters>& peers, uint64_t read_ms);
    // The data plane saw WireGuard send to `peer` (the relay proxy, at once, without waiting
    // for the next device read): the pair is active.
    void on_traffic(const node_id& peer, uint64_t now);
    // The peer was relayed before this start (node_core::on_relayed_before): no direct grace
    // when it is (or once it is) found; forgotten once it has a path.
    void relayed_before(const node_id& id, uint64_t now);
    // The route MTUs a previous meshd applied (node_core::on_route_mtus_before), by route
    // prefix: each peer whose routes carry one has it seeded into the path MTU search of the
    // first path it takes (confirmed there, pmtu_prober::seed), and until then on its routes.
    void route_mtus_before(const std::map<ip_prefix, unsigned>& routes, uint64_t now);
    // How soon WireGuard's counters should be read again (node_core::wg_read_interval).
    uint64_t wg_read_interval(uint64_t now) const;
    // Pairs active now (meshctl, metrics).
    size_t active_pairs(uint64_t now) const;
    // The candidate whose PONG still vouches for the direct path (as decide() judges it: an
    // idle pair's holds), if any: anti-entropy's neighbours, which idle pairs stay.
    const candidate* answering(const peer_entry& p, uint64_t now) const;
    // The candidate at the address of the direct path in use (none: not direct, learned).
    const candidate* candidate_in_use(const peer_entry& p) const;
    // Probe frames dropped: no pair for the session, not from its relay, failed to open.
    uint64_t probe_frames_dropped() const noexcept { return probe_frames_dropped_; }
    // A relay asked for a cookie (COOKIE_REPLY) in answer to session request `request_id`: that
    // session is requested again at once, now with the cookie (an accepted one too: a rebind
    // after the relay restarted carries the old cookie when the PONG that told of the restart
    // came from its other address; it would otherwise wait for the next refresh).
    void retry_session_request(const node_id& relay, uint64_t request_id, uint64_t now);
    // The relay restarted (a new boot epoch) and lost every session: each pair's sessions through
    // it (in use or warm standby) are requested again at once, not at the next refresh, so that a
    // failover to it right after finds the session bound.
    void rebind_sessions(const node_id& relay, uint64_t now);
    void on_session_answer(const node_id& relay, uint64_t request_id, const wg_endpoint& from,
                           uint64_t session_id, const node_id& to, bool accepted, uint8_t reason,
                           uint64_t now);
    // meshctl ping over the path in use; see node_core::ping.
    result<uint64_t> ping(const node_id& peer, uint64_t now);
    void shift_clocks(uint64_t late, uint64_t now);

    // The distinct relays in the warm sets of active pairs (they are probed fast), and those our
    // relayed pairs send through or would fail over to first (their warm sets: probed at the
    // NAT-keepalive rate at idle), as each tick asks. Walking every pair for it at every tick was
    // O(N) a tick (at 1,000 simulated nodes a third of the CPU while pairs were active), so the
    // lists are kept and walked again only when they may differ: a pair decided, rechecked or
    // activated since (uses_touched_) whose relays, path or activity changed (uses_sig), a pair
    // gone, or an active pair with warm relays turning idle (uses_valid_until_). The same lists
    // at every tick as the walk gave (but for a 64-bit signature collision, ~2^-64 a change,
    // which would keep them until the next walk).
    struct relay_uses {
        std::vector<node_id> warm_active;
        std::vector<node_id> used;
    };
    const relay_uses& uses(uint64_t now);
    const std::map<node_id, peer_entry>& all() const noexcept { return peers_; }
    uint64_t dataplane_version() const noexcept { return dp_version_; }
    std::vector<peer_dataplane> dataplane() const;
    std::vector<peer_view> views() const;
    std::optional<node_id> resolve(const std::string& name_or_id) const;
    // Our pairs relayed through `relay`.
    size_t relayed_through(const node_id& relay) const;
    const route_authority& routes() const noexcept { return routes_; }
    // The Kubernetes route authority on or off (route_authority::set_node_cidrs); the peers
    // whose routes changed are decided again on the next tick.
    void set_node_cidrs(std::optional<route_authority::node_cidrs> by_node, uint64_t now) {
        mark_routes(routes_.set_node_cidrs(std::move(by_node)));
        ctx_.due(now);
    }

private:
    bool active(const peer_entry& p, uint64_t now) const noexcept { return now < p.active_until; }
    // Makes the pair active until now + active_hold_ms; one that was idle is probed at once.
    void activate(peer_entry& p, uint64_t now);
    // A PONG (or inbound PING) at `last` still vouches for the path: while the pair is idle, if
    // it did when the pair went idle (the decision holds until traffic tests it); while active,
    // within `timeout_ms` of the later of it and the start of the active spell.
    bool fresh(uint64_t last, const peer_entry& p, uint64_t now, uint64_t timeout_ms) const;
    void decide(const node_id& id, peer_entry& p, const peer_record& rec, uint64_t now);
    // A route MTU from before the restart for the routes of `dp` (the smallest; 0: none).
    unsigned mtu_before(const peer_dataplane& dp) const;
    // An active pair's direct path in use: its path MTU search (a padded PING when one is due).
    void probe_direct_mtu(const node_id& id, peer_entry& p, const peer_record& rec,
                          const candidate& in_use, uint64_t now);
    // Makes the pair's probe keys for `key` (the peer's WireGuard key) if not made yet.
    void ensure_keys(const node_id& id, peer_entry& p, const wg_key& key);
    void unindex_keys(const node_id& id, const peer_entry& p);
    void take_candidates(const node_id& id, peer_entry& p, const peer_record& rec, uint64_t now);
    // decide() with the peer's own deadline kept apart from the tick's.
    void decide_now(const node_id& id, peer_entry& p, const peer_record& rec, uint64_t now);
    // Its candidates and routes from `rec`, unless taken from that record already.
    void take_record(const node_id& id, peer_entry& p, const peer_record& rec, uint64_t now);
    // The route authority's view of the host underlay (our addresses, relays, bootstrap).
    void sync_host_underlay();
    void mark_routes(const route_authority::changed& c) {
        routes_dirty_.insert(c.begin(), c.end());
    }
    void log_refusals();

    core_context& ctx_;
    const record_store& store_;
    relay_directory& relays_;
    relay_election& election_;
    const relay_role& role_;
    std::map<node_id, peer_entry> peers_;
    // The peers whose probe keys are derived, by the index their probe frames to us carry (a
    // 32-bit hash: two peers may share one). on_probe_frame finds a frame's pair here, not by
    // walking every peer (1,000 nodes: that walk was 87 % of the simulator's CPU once idle).
    std::unordered_multimap<uint32_t, node_id> by_probe_index_;
    struct offered {
        wg_endpoint ep;
        learned_via via;
    };
    std::map<node_id, std::vector<offered>> offered_;  // add_candidate(), bounded
    route_authority routes_;
    std::set<node_id> relayed_before_;          // relayed_before(), bounded like the store
    std::map<ip_prefix, unsigned> mtu_before_;  // route_mtus_before(), until a path is taken
    uint64_t mtu_before_until_ = 0;             // ... or until then (a pod's "too big" lifetime)
    std::vector<ip_address> host_underlay_;     // as last given to routes_
    std::set<node_id> routes_dirty_;            // their route decision changed: decide again
    uint64_t dp_version_ = 0;
    uint64_t next_token_ = 1;
    uint64_t probe_frames_dropped_ = 0;
    bool recheck_all_ = true;
    // Every peer's (next_check_ms, id), earliest first: tick() decides the peers due from here,
    // and walks every record only when the record set changed (the store's generation at the
    // last walk) or relays_changed(). With 1,000 peers a walk for each peer due (an idle peer is
    // due every few seconds to minutes, so several a second) was O(N) a tick: O(N^2) a node.
    std::set<std::pair<uint64_t, node_id>> due_;
    uint64_t latest_active_until_ = 0;  // the latest active_until of any pair (activate)
    uint64_t walked_generation_ = UINT64_MAX;
    relay_uses uses_;
    bool uses_stale_ = true;
    uint64_t uses_valid_until_ = 0;
    std::vector<node_id> uses_touched_;
    uint64_t uses_sig(const peer_entry& p, uint64_t now) const;
    void set_next_check(peer_entry& p, uint64_t t) {
        if (t == p.next_check_ms) return;
        due_.erase({p.next_check_ms, p.dp.id});
        p.next_check_ms = t;
        due_.emplace(t, p.dp.id);
    }
    void recheck(peer_entry& p) {
        set_next_check(p, 0);
        uses_touched_.push_back(p.dp.id);  // a handler may have changed its relays
    }
};

}  // namespace mw::meshd
