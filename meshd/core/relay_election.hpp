// Relay election for one relayed pair (DESIGN §5) and the pair's relay sessions.
//
// Score = RTT(A,R) + RTT(R,B) from the RTTs both nodes publish in their records, so both ends rank
// relays alike without talking; relays within spread_* of the best are equally good and ordered
// by the pair's rendezvous hash, which spreads pairs over them. Sessions are kept at the first
// warm_relays (make before break). The relay we send through stays while it is usable and in the
// warm set, unless the best is better by both switch_abs_ms and switch_rel (hysteresis). Each end
// chooses its sending relay on its own and accepts the peer's frames on any warm session: both
// directions fail over independently.
//
// rank_relays() is the pure ranking (unit-tested); relay_election applies it to a pair: candidate
// collection with exclusions, warm sessions and their requests, in-band liveness, switches.
//
// Session refresh: an active pair refreshes its sessions every session_refresh_ms; an idle pair
// every idle_session_refresh_ms, except at a relay that announced keeping them
// (relay_directory::keeps_sessions): there the relay keeps the session while our PINGs reach it,
// and the session is requested again only when something says the relay may have lost it (a new
// boot epoch, a new reflexive address, an answer after it was lost: peer_paths::rebind_sessions)
// or the pair turns active. An idle node then sends no session traffic at all (issue 18).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "meshd/core/core_context.hpp"
#include "meshd/core/pmtu_prober.hpp"
#include "meshd/core/relay_directory.hpp"

namespace mw::meshd {

// The pair's session id at a relay and the pair's rendezvous hash for it: both ends compute the
// same values without talking.
uint64_t relay_session_id(const node_id& a, const node_id& b, const node_id& relay);
uint64_t relay_rendezvous_score(const node_id& a, const node_id& b, const node_id& relay);

struct relay_candidate {
    node_id id;
    double score = 0;   // RTT(A,R) + RTT(R,B), ms
    uint64_t hash = 0;  // relay_rendezvous_score of the pair and this relay
};

struct election_params {
    size_t warm_relays = 2;
    double switch_abs_ms = 5, switch_rel = 0.2;
    double spread_abs_ms = 2, spread_rel = 0.1;
};

struct relay_ranking {
    std::vector<relay_candidate> warm;  // at most warm_relays, best first
    size_t use = 0;                     // index into warm: the relay to send through
    double current_score = -1;          // the current relay's score; -1: not a candidate
};

// Ranks a pair's candidate relays. `current`: the relay the pair sends through now (kept unless
// the best beats it by the switch margin). Empty `cands`: an empty ranking.
relay_ranking rank_relays(std::vector<relay_candidate> cands, const std::optional<node_id>& current,
                          const election_params& p);

// Whether our WireGuard traffic through the relay we send through reaches the peer: relays are
// judged by what they carry, not only by the probes (a relay could tell probes apart by their
// timing and forward only those). Our side: WireGuard's tx bytes for the peer (read every 2 s,
// on_wireguard_counters); the peer's side: its rx bytes from us, reported in its sealed probes.
// A reading in which our tx grew holds at least one packet of ours; the peer's rx unmoved at a
// reading late enough for that packet to have arrived (`lag_ms` after ours) says it was lost.
// The relay drops our WireGuard when `readings` such packets were all lost, and the peer read
// its counters wg_stall_ms after the first of them and still saw nothing new.
//
// How many readings: enough that losing them all by chance is unlikely on this path
// (readings_for_loss). Three were too few on a lossy path: the receiving end of a one-way stream
// sends only a keepalive every 10 s, at 19 % loss two or three in a row go several times an hour
// (sim_lossy_test: 25 false verdicts an hour) — and the peer's reading just after our third
// reading could not yet have seen the third packet.
struct wg_stall_rule {
    uint64_t stall_ms = 6000;
    unsigned readings = 3;
    uint64_t lag_ms = 0;
};

struct wg_progress {
    uint64_t our_tx = 0, our_rx = 0;
    uint64_t our_read_ms = 0;  // 0: never read (WireGuard has no such peer yet)
    uint64_t peer_rx = 0;
    uint64_t peer_read_ms = 0;  // when the peer read it, on our clock (receipt - its age)
    bool peer_reported = false;
    uint64_t tx_mark = 0;           // our tx when the peer's rx last moved / the relay was taken
    unsigned growth_readings = 0;   // our readings since then in which tx grew past the mark
    uint64_t pending_since_ms = 0;  // the first of them (0: none)
    // The newest of those readings' times (a ring): which ones the peer's reading could cover.
    static constexpr size_t recent_readings = 16;
    std::array<uint64_t, recent_readings> recent_ms{};
    // Either end's counters started again (its WireGuard restarted, and with it the session
    // keys: our packets fail to decrypt there until a new handshake, which the peer's 25 s
    // keepalive brings): no verdict before the peer read its counters after this.
    uint64_t hold_until_ms = 0;

    static constexpr uint64_t restart_hold_ms = 30000;
    // A verdict's chance of being drawn from packets lost by chance, at most.
    static constexpr double false_stall_probability = 1e-5;
    static constexpr unsigned min_readings = 3, max_readings = 12;
    // The readings whose packets must all be lost for a verdict, given the path's round-trip
    // probe loss (an upper bound of our direction's loss: symmetric loss would allow fewer, a
    // one-sided one not). Past probe_loss::max_forgiven_loss the path is broken, not noisy:
    // min_readings, as before.
    static unsigned readings_for_loss(double round_trip_loss);
    void note_ours(uint64_t tx, uint64_t rx, uint64_t read_ms);
    void note_peers(uint64_t rx, uint64_t read_ms);
    void restart();  // a new relay: judged from now on
    bool stalled(const wg_stall_rule& rule) const;
    // Readings of ours the peer's last reading came `lag_ms` or more after.
    unsigned covered_readings(uint64_t lag_ms) const;
};

// A relayed pair's relay state (owned per peer by peer_paths, changed only here).
struct relayed_pair {
    // The pair's sealed-probe keys (probe_frame.hpp), made for the peer's WireGuard key
    // `keys_for`; nullopt: not made yet, or the key is unusable (then old-style probes).
    std::optional<probe_keys> keys;
    wg_key keys_for;
    bool keys_tried = false;
    // The peer sends old-style in-band PINGs (control datagrams): a node from before sealed
    // probes (a rolling upgrade); it gets those back until it sends a sealed one.
    bool legacy_probes = false;
    wg_progress wg;
    // The relay the peer sends through, as its in-band probes show: kept warm on our side
    // whatever our own choice, so the two ends never disagree into silence.
    std::optional<node_id> peer_relay;
    uint64_t peer_relay_ms = 0;
    // Sessions at the warm relays (the one we send through first).
    struct warm_session {
        node_id relay;
        uint64_t session_id = 0;
        wg_endpoint ep;
        bool accepted = false;
        uint64_t next_request_ms = 0;
        // Our last two RELAY_SESSION_REQUESTs' random ids: only an answer to one of them, from
        // the address it went to, counts (a late answer to the one before a refresh still does).
        uint64_t request_id = 0;
        uint64_t prev_request_id = 0;
        // Accepted by a relay that keeps idle sessions while it hears us (issue 18), the pair
        // idle: requested again only when the pair turns active, the relay restarts, stops
        // announcing, sees us at another address or answers after it was lost, and as a
        // backstop every kept_session_refresh_ms (next_request_ms).
        bool kept = false;
    };
    std::vector<warm_session> warm;
    // Whether the pair is active (peer_paths sets it before choose()) and since when: only an
    // active pair sends in-band probes, refreshes its sessions every session_refresh_ms, keeps
    // its relays fast and is judged silent end to end.
    bool active = false;
    uint64_t active_since = 0;
    std::optional<node_id> relay;
    uint64_t session_id = 0;
    bool accepted = false;
    uint64_t next_inband_ms = 0;
    uint64_t relay_since_ms = 0;
    uint64_t last_inband_pong_ms = 0;
    double inband_rtt_ms = 0;
    // Loss of the in-band probes (through the relay to the peer and back: every hop of both
    // ends' uplinks, twice): the in-band interval shrinks with it so that path_timeout_ms holds
    // enough probes not to be reached by chance (issue 14 §5, probe_loss.hpp). Made at the first
    // in-band probe (only active relayed pairs send them).
    lazy_probe_loss inband_loss;
    std::map<node_id, uint64_t> excluded;  // relay -> until
    // relay -> how often it failed the pair end to end (silent, or WireGuard stalled) without
    // carrying it in between: each failure doubles its exclusion (relay_exclude_ms × 2^(n-1),
    // at most 32×), so a black hole that ranks first is not taken back every 30 s.
    std::map<node_id, uint32_t> strikes;
    // relay -> until: it REJECTed our session request; no new request before then.
    std::map<node_id, uint64_t> rejected;
    // The path MTU of the relay path in use (issue 15, pmtu_prober.hpp): searched with padded
    // in-band probes while the pair is active, again for each relay session it tracks. Its
    // losses count once an in-band probe sent after them was answered: the newest such send.
    pmtu_prober pmtu;
    uint64_t inband_answered_sent_ms = 0;
};

class relay_election {
public:
    relay_election(core_context& ctx, relay_directory& relays);
    // In-band probes of an active pair: every ping_interval_ms on a clean path, down to this on a
    // lossy one (probe_loss).
    static constexpr uint64_t min_inband_interval_ms = 100;

    // Picks the pair's relay (sets dp's relay fields) and keeps its sessions; leaves dp alone
    // when no relay can carry the pair.
    void choose(const node_id& peer, relayed_pair& p, const peer_record& rec, uint64_t now,
                peer_dataplane& dp);
    // The pair no longer goes through a relay.
    static void release(relayed_pair& p);
    // A relay's answer to our session request; false if it matches no warm session of the pair.
    bool on_session_answer(relayed_pair& p, const std::string& peer_name, const node_id& relay,
                           uint64_t request_id, const wg_endpoint& from, uint64_t session_id,
                           bool accepted, uint8_t reason, uint64_t now);

    // The body of a probe frame to the peer: our WireGuard's rx reading for it.
    static probe_frame_body wg_report(const relayed_pair& p, uint64_t now);
    // The peer answered our padded probe of `size` bytes through the relay in use.
    void on_pmtu_ack(relayed_pair& p, unsigned size, uint64_t now);

    uint64_t failovers() const noexcept { return failovers_; }
    uint64_t selections() const noexcept { return selections_; }
    // Relays excluded for a pair because its WireGuard made no progress through them.
    uint64_t wg_stall_exclusions() const noexcept { return wg_stalls_; }

private:
    // Counts a failure of `relay` for the pair; returns how long it is excluded.
    uint64_t strike(relayed_pair& p, const node_id& relay) const;
    wg_stall_rule stall_rule(const relayed_pair& p) const;
    // The path MTU search of an active pair: a padded probe when one is due, and dp.path_mtu.
    void probe_path_mtu(const node_id& id, relayed_pair& p, const peer_record& rec, uint64_t now,
                        peer_dataplane& dp);

    core_context& ctx_;
    relay_directory& relays_;
    uint64_t failovers_ = 0, selections_ = 0, wg_stalls_ = 0;
};

}  // namespace mw::meshd
