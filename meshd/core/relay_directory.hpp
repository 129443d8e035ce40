// The relays this node knows and how they answer (DESIGN §5): where each is reached, its node ID,
// per address the last PONG, RTT and our reflexive address as it sees us, whether it is in some
// active relayed pair's warm set (probed fast), and whether it refused to serve lately.
//
// Liveness is adaptive (issue 18): a relay in the warm set of a pair with traffic is probed every
// fast_ping_interval (every address) and unusable after fast_relay_timeout without a PONG. At
// idle, a relay is *used* when one of our relayed pairs sends through it (with none, the first
// relay that answers: its mapping carries the pushes to us): probed every
// idle_used_ping_interval (120 s), and between the probes, when a NAT may sit between us (its
// PONG saw us at an address that is not one of our endpoints, or none told us yet), sent a
// NAT_KEEPALIVE (4 bytes, unanswered, wire_codec.hpp) every idle_ping_interval (25 s, about
// WireGuard's keepalive) to the address in use: that mapping carries our sessions, HELLOs and
// the relay's pushes. A full sealed PING + PONG is ~490 B on the wire, a keepalive 32 B. Every
// other relay (not used) is probed every idle_spare_ping_interval. An idle round goes to the
// address in use only (the family whose NAT mapping our sessions, HELLOs and the relay's pushes
// use), to every address every idle_other_address_ms and while the address in use goes unanswered.
// Unanswered, a relay is probed again after ping_interval, doubling up to its interval, and is down
// after its interval + path_timeout; an address that timed out stays down until it answers again
// (`lost`), so a relay that failed does not look alive again when its rate slows. A relay that
// turns faster (fast, or spare to used) is probed at once and judged from that moment
// (fast_since_ms), so the PONG it gave 20 s ago is no failure, but its first probes that go
// unanswered are.
//
// Where the list comes from: with relayNodes configured, those (and mDNS-found LAN neighbours as
// rendezvous that are no relays). Without, the rendezvous
// addresses offered through the discovery entry (dht.bootstrap today: asked for the cluster's
// records, relays only if their record says they serve) plus nodes whose verified record says
// they serve: up to max_found_relays, the first by a hash of their node ID keyed with a salt of
// our own (never published), so that nobody can grind IDs that rank first (add_found). rebuild()
// recomputes the list and keeps what was learned about relays that stay.
//
// Couplings, as explicit calls (wired by node_core): on_relays_changed when anything a pair's
// path decision reads changed (peer_paths re-decides every pair), on_self_changed when what our
// own record says about relays changed (membership re-signs it).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "meshd/core/core_context.hpp"
#include "meshd/core/nat_behaviour.hpp"
#include "meshd/core/probe_loss.hpp"
#include "meshd/core/record_store.hpp"
#include "meshd/core/windowed_min.hpp"

namespace mw::meshd {

struct relay_addr_state {
    wg_endpoint ep;
    uint64_t last_pong_ms = 0;
    double rtt_ms = 0;  // the minimum over cfg.rtt_window_ms (see windowed_min.hpp)
    windowed_min rtt_min;
    std::optional<wg_endpoint> reflexive;
    uint64_t reflexive_since_ms = 0;  // the first PONG that reported it (nat_observation)
    bool lost = false;                // timed out: down until it answers again (alive())
    probe_loss fast_loss;             // of the fast probes (fast_interval, probe_loss.hpp)
};

struct relay_entry {
    relay_spec spec;
    relay_origin origin = relay_origin::configured;
    // May carry pairs: configured, or (found ones) its record says it serves. A bootstrap
    // node that does not is only asked for records.
    bool candidate = true;
    // A rendezvous found by mDNS only (a LAN neighbour): kept in sync by anti-entropy, not asked
    // with HELLO once it speaks it (defer_hello). A dht.bootstrap node is registered with as
    // before: a node being verified as relay finds its dial-back helpers among registrations.
    bool lan_neighbour = false;
    bool self = false;
    std::optional<node_id> id;
    std::vector<relay_addr_state> addrs;
    uint64_t next_ping_ms = 0;
    uint64_t next_hello_ms = 0;
    // Our HELLO was answered since it (re)started or came up: HELLO every hello_interval, else
    // every hello_retry_interval (a relay answers a node registering anew, membership.hpp).
    bool registered = false;
    uint64_t last_hello_ms = 0;  // our last HELLO
    // Our last HELLO's request id and the seq of the record it carried, and the seq of the
    // record in the last HELLO it answered. An answer to an older HELLO does not say that our
    // newer record arrived (the relay may have lost it: its port changes hands when its role
    // turns active): until the HELLO with our current record is answered, HELLOs ask for an
    // answer (flag_ack) and are retried every hello_retry_interval.
    uint64_t hello_request_id = 0;
    uint64_t hello_seq = 0;
    uint64_t acked_seq = 0;
    size_t hello_addr = 0;    // with no address answering: the next one HELLOs go to
    uint64_t boot_epoch = 0;  // the relay's, from its PONGs: a new one is a restart
    // It announced keeping our idle sessions while it hears us (RELAY_SESSION_KEPT, its keep
    // window; 0: not in this boot epoch): relay_election stops refreshing them at idle.
    uint64_t keep_ms = 0;
    bool was_up = false;
    size_t active = SIZE_MAX;  // the address in use (sticky while it answers)
    uint16_t published_rtt = peer_record::unknown_rtt;  // in our record
    // What attachments() publishes: the minimum of the address in use's samples over
    // publish_rtt_window_ms (reset when the address in use changes).
    windowed_min publish_min;
    bool fast = false;  // probed fast: in an active relayed pair's warm set
    // At idle: one of our relayed pairs sends through it (or it is the first that answers):
    // probed every idle_used_ping_interval with NAT keepalives between, else every
    // idle_spare_ping_interval.
    bool used = false;
    uint64_t next_keepalive_ms = 0;  // used, idle, behind a NAT: the next NAT_KEEPALIVE
    bool used_now = false;           // keep_used() since the last tick
    uint64_t next_other_ms = 0;      // at idle: when all its addresses are probed next
    bool round_answered = true;      // the last probe round got a PONG
    bool retry_round = false;        // the round in flight follows one that went unanswered
    bool was_usable = false;
    uint64_t fast_until = 0;
    uint64_t fast_since_ms = 0;      // when it last turned fast: liveness is judged from then on
    uint64_t last_ping_ms = 0;       // our last probe round
    uint64_t retry_ms = 0;           // while unanswered: the doubling retry interval (0: answered)
    uint64_t not_serving_until = 0;  // it answered REJECT(not_a_relay)
    // Pairs of ours it failed lately (peer -> until): silent end to end, or our WireGuard made
    // no progress through it. Two or more: listed last in our record (attachments()).
    std::vector<std::pair<node_id, uint64_t>> failed_pairs;
    uint64_t reject_backoff_ms = 0;
};

// What of a record decides whether (and where) its node is a found relay.
using relay_facts = std::tuple<uint8_t, std::vector<wg_endpoint>, std::string>;
std::optional<relay_facts> relay_facts_of(const peer_record* rec);

class relay_directory {
public:
    relay_directory(core_context& ctx, const record_store& store,
                    std::function<void()> on_relays_changed, std::function<void()> on_self_changed);

    // Recomputes the list; `reset_timers`: probe and HELLO every relay now.
    void rebuild(uint64_t now, bool reset_timers);
    // A record that may add, drop or re-address a found relay changed: rebuilt on the next tick.
    void note_record(const peer_record& rec, const std::optional<relay_facts>& before);
    void note_records_expired();
    bool dirty() const noexcept { return dirty_; }

    // The discovery entry's id-less addresses: "a meshd may answer at ep" (dht.bootstrap).
    // Rendezvous points while no relayNodes are configured; the next tick rebuilds.
    void offer_rendezvous(const wg_endpoint& ep, learned_via via);
    void withdraw_rendezvous(learned_via via);

    // Probes, HELLOs (with our record), liveness changes. Call keep_fast() first.
    void tick(const peer_record& self, uint64_t now);
    // An active relayed pair keeps this relay warm: probe it fast for a while.
    void keep_fast(const node_id& relay, uint64_t now);
    // A relayed pair of ours sends through this relay (called before every tick): probed at the
    // NAT-keepalive rate while idle.
    void keep_used(const node_id& relay);
    // A PONG to a relay probe. True when our sessions there must be bound again at once: the
    // address in use saw us at another address than before (NAT rebinding), or answered after
    // it was lost (down long enough that a kept session may have expired there).
    bool on_pong(const probe& p, const node_id& sender, double rtt, const wg_endpoint& observed,
                 uint64_t now);
    // The relay announced that it keeps our idle sessions while it hears us (RELAY_SESSION_KEPT,
    // before its ACCEPT).
    void on_session_kept(const node_id& relay, uint64_t keep_ms, uint64_t now);
    // Whether an idle session there may go unrefreshed: it announced keeping in its current boot
    // epoch, with a window our idle probes fill (at least twice our slowest idle PING interval,
    // so one lost PING does not cost the session).
    bool keeps_sessions(const node_id& relay) const;
    // The relay accepted a session / refused to serve (REJECT not_a_relay).
    void on_session_accepted(const node_id& relay);
    void on_not_serving(const node_id& relay, uint64_t now);
    // HELLO every relay now (our record changed).
    void hello_now(uint64_t now);
    // The relay lacks our record (HELLO_WANTED: it had dropped it while we were revoked or not
    // listed): HELLO it now, as a node registering anew. At most once per
    // hello_wanted_gap_ms per relay, so a relay cannot make us HELLO faster than that.
    void on_hello_wanted(const node_id& relay, uint64_t now);
    static constexpr uint64_t hello_wanted_gap_ms = 1'000;
    // RECORDS from a relay answering a HELLO of ours (request id): we are registered there, and
    // it holds our current record if the request is our last HELLO's.
    void on_hello_answer(const node_id& relay, uint64_t request_id, uint64_t now);
    // A relay's boot epoch, from a message of its (PONG): a new one means it restarted and
    // lost our registration, so we HELLO it at once. True when it restarted (its sessions are
    // gone too: the caller binds them again).
    bool note_epoch(const node_id& relay, uint64_t epoch, uint64_t now);
    // The relays we are attached to and the RTT we publish for each, at most
    // peer_record::max_relays: in our order (found relays: our sample's), relays that failed two
    // or more of our pairs lately last. A pair's candidate relays are those both ends list.
    std::vector<std::pair<node_id, uint16_t>> attachments(uint64_t now);
    // It failed two or more of our pairs lately (note_pair_failure): a relay that black-holes
    // them. Listed last; pairs take it only when nothing else is left.
    bool failing(const relay_entry& r, uint64_t now) const;
    // Whether the last attachments() listed `relay`.
    bool listed(const node_id& relay) const;
    // The relay failed our pair with `peer` (relay_election excluded it for the pair).
    void note_pair_failure(const node_id& relay, const node_id& peer, uint64_t now);
    // Our own entry's addresses (listed in relayNodes).
    std::vector<wg_endpoint> self_addresses() const;
    // Clocks moved forward over a stall of our own process.
    void shift_clocks(uint64_t late, uint64_t now);

    bool up(const relay_entry& r, uint64_t now) const;
    bool usable(const relay_entry& r, uint64_t now) const;
    bool usable_fast(const relay_entry& r, uint64_t now) const;
    double rtt(const relay_entry& r) const;
    // While fast: no answer for fast_timeout() means dead for the pairs; probes every
    // fast_interval() (probe_loss: more often on a lossy link, so that the timeout holds enough
    // probes not to be reached by chance; issue 14 §5). The timeout is fast_relay_timeout_ms, or
    // the relay's RTT plus a probe interval if that is longer (a slow link's first answer), at
    // most twice fast_relay_timeout_ms.
    uint64_t fast_timeout(const relay_entry& r) const;
    uint64_t fast_interval(const relay_entry& r) const;
    static constexpr uint64_t min_fast_interval_ms = 25;
    std::optional<wg_endpoint> endpoint(const relay_entry& r, uint64_t now) const;
    const relay_entry* by_id(const node_id& id) const;
    const std::vector<relay_entry>& all() const noexcept { return relays_; }
    bool empty() const noexcept { return relays_.empty(); }
    // A node's name: its record's, a relay's configured one, or its short ID.
    std::string name_of(const node_id& id) const;

    // meshctl's view (load left 0: the pairs are peer_paths'). "Up" is judged at last_tick_ms.
    // Every relay address that answers now with where it saw us (nat_behaviour.hpp): not our
    // own relay role's addresses, nor a LAN neighbour's (it sees our LAN address, not the
    // NAT's), nor one whose last probe round went unanswered.
    std::vector<nat_observation> nat_observations(uint64_t now) const;
    std::vector<relay_view> views(uint64_t last_tick_ms) const;

    // Set by node_core: true for an mDNS rendezvous (lan_neighbour, no relay) whose records come
    // by anti-entropy (anti_entropy.hpp), so it is not asked for every record with HELLO.
    std::function<bool(const node_id&, uint64_t now)> defer_hello;
    // Set by node_core: adds our store's digest to a HELLO (membership::digest).
    std::function<void(hello_msg&)> add_digest;

private:
    relay_entry* find(const node_id& id);
    // How long after its last PONG (or turning fast) a relay address counts as answering.
    uint64_t timeout(const relay_entry& r) const;
    // A relay's probe interval while answered (not fast): used or spare.
    uint64_t idle_interval(const relay_entry& r) const;
    // A NAT may sit between us and the relay's address in use: its PONG saw us at an address
    // that is not one of our endpoints, or it has not told us yet.
    bool behind_nat(const relay_entry& r) const;
    // At idle, a used relay's address in use gets a NAT_KEEPALIVE between full probes.
    void keep_mapping(relay_entry& r, uint64_t now);
    bool alive(const relay_entry& r, const relay_addr_state& a, uint64_t timeout_ms,
               uint64_t now) const;
    void pick_address(relay_entry& r, uint64_t now);
    // rebuild()'s steps.
    relay_entry carry(relay_entry fresh, uint64_t now, bool reset_timers) const;
    void add_configured(std::vector<relay_entry>& next, uint64_t now, bool reset_timers) const;
    // `only`: the rendezvous learned that way (mDNS ones beside relayNodes).
    void add_rendezvous(std::vector<relay_entry>& next, uint64_t now, bool reset_timers,
                        std::optional<learned_via> only = std::nullopt) const;
    void add_found(std::vector<relay_entry>& next, uint64_t now, bool reset_timers) const;
    void log_changes(const std::vector<relay_entry>& next);
    // A found relay's place in our sample (add_found): keyed with found_salt_.
    uint64_t found_rank(const node_id& id) const;

    core_context& ctx_;
    const record_store& store_;
    std::function<void()> on_relays_changed_;
    std::function<void()> on_self_changed_;
    std::vector<relay_entry> relays_;
    struct rendezvous {
        wg_endpoint ep;
        learned_via via;
    };
    std::vector<rendezvous> rendezvous_;
    bool dirty_ = false;  // auto_relays: a record that may add or drop a relay changed
    std::array<uint8_t, 16> found_salt_{};
    std::vector<node_id> listed_;  // the last attachments()
};

}  // namespace mw::meshd
