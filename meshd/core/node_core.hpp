// The node's protocol brain (DESIGN §4, §5, §7): membership through the relays, a path per peer
// (direct or relayed), end-to-end liveness of every path, and — on nodes listed in relayNodes —
// the relay service's control side (registrations, RECORDS answers, session set-up).
//
// Pure: events and `now` (unix ms) in; datagrams to send, log events, the desired data plane and
// the next deadline out. No clock, socket, thread or OS randomness: the caller passes an RNG, and
// the relay's session table is reached through relay_binder. That is what lets test/sim run
// hundreds of these on a simulated network with a virtual clock.
//
// Membership: every node sends HELLO (its signed record, "send me RECORDS") to every configured
// relay every hello_interval; a relay stores the record and answers with every record it holds,
// its own included, and pushes a new or changed record to every node registered with it. Records
// are the record_store's: verified, newest seq wins, bounded.
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
//            path: sealed PINGs inside RELAY_DATA frames of the session, answered the same way.
//            A relayed path whose in-band PINGs stop coming back while the relay itself answers
//            is given up for that pair and another common relay is tried.
//   none     no way yet (no record, no common relay).
// Nodes with the relay role never take relayed paths: every other node reaches them directly.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/ip_address.hpp"
#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "common/wireguard/wg_key.hpp"
#include "meshd/core/control_channel.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/node_identity.hpp"
#include "meshd/core/peer_record.hpp"
#include "meshd/core/record_store.hpp"
#include "meshd/core/relay_session_table.hpp"

namespace mw::meshd {

enum class path_kind : uint8_t { none, direct, relay };
const char* to_string(path_kind k) noexcept;

// The relay role of this node (DESIGN §5 "Relay role"): listed in relayNodes -> verifying (its
// advertiseAddress must be dialled back by another node) -> active, or refused with a reason.
enum class relay_role_state : uint8_t { none, verifying, active, refused };
const char* to_string(relay_role_state s) noexcept;

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
    std::string node_name;
    std::vector<ip_prefix> pod_cidrs;
    uint16_t control_port = 51821;  // ours, and the port relays are reached on
    uint16_t wg_port = 51820;
    std::vector<wg_endpoint> endpoints;  // our control endpoints, advertised in our record
    std::vector<relay_spec> relays;
    bool relay_role = false;
    // dht.bootstrap: nodes (control port) asked for the cluster's records when no relayNodes
    // are configured; they serve as relays only if their record says so.
    std::vector<ip_address> bootstrap;
    size_t max_found_relays = 16;  // relays taken from records (no relayNodes), by node ID

    uint64_t ping_interval_ms = 1000;  // relays, paths in use (direct and in-band)
    // Relays that carry (or stand by for) one of our relayed pairs are probed this often and
    // declared dead for those pairs after fast_relay_timeout_ms without an answer: the failover
    // budget is that timeout plus one tick.
    uint64_t fast_ping_interval_ms = 100;
    uint64_t fast_relay_timeout_ms = 400;
    // Called this much later than the deadline we asked for, our own process was stalled (an
    // overloaded machine): the relays' silence over that time is not theirs, so their liveness
    // clock is paused for it instead of failing every pair over.
    uint64_t stall_ms = 150;
    size_t warm_relays = 2;  // sessions kept per relayed pair (in use + standby)
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
    uint64_t dialback_probes_per_s = 20;  // as a helper: probes we send for others, at most
    uint64_t upgrade_interval_ms = 5000;  // direct candidates of a pair not using them
    uint64_t path_timeout_ms = 3500;      // no answer for this long: path / relay is down
    uint64_t hello_interval_ms = 10000;
    uint64_t session_refresh_ms = 15000;
    uint64_t session_retry_ms = 1000;   // until the relay accepted
    uint64_t relay_exclude_ms = 30000;  // a relay that failed a pair is not retried for it
    uint64_t record_lifetime_ms = 10 * 60 * 1000;
    uint64_t ping_timeout_ms = 3000;  // pending PINGs are forgotten after this
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
    // relay path: warm standby sessions (accepted by their relay) the peer may send on
    std::vector<std::pair<uint64_t, wg_endpoint>> standby;

    friend bool operator==(const peer_dataplane&, const peer_dataplane&) = default;
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
};

// meshctl's views.
struct peer_view {
    node_id id;
    std::string name;
    wg_key wg_public_key;
    std::vector<ip_prefix> pod_cidrs;
    path_kind path = path_kind::none;
    bool learned = false;  // direct, endpoint learned by WireGuard
    std::optional<node_id> relay;
    std::string relay_name;
    uint64_t session_id = 0;
    bool session_accepted = false;
    std::optional<wg_endpoint> endpoint;
    std::optional<double> rtt_ms;  // of the path in use
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

struct ping_result {
    uint64_t token = 0;
    double rtt_ms = 0;
};

class node_core {
public:
    using rng_fn = std::function<void(std::span<uint8_t>)>;

    node_core(node_core_config cfg, const node_identity& identity, psk_sealer sealer, rng_fn rng,
              relay_binder* binder = nullptr, record_store_config store_cfg = {});

    // Starts registering; call once. Returns the next deadline.
    uint64_t start(uint64_t now_ms);
    // A control datagram that arrived from `from` (session_id != 0: in-band, inside RELAY_DATA of
    // that session); `via` is the relay forwarder's socket tag, passed back to relay_binder.
    // Returns the next deadline (the effects of a datagram are decided on the next tick, which is
    // at most tick_quantum_ms away: ticks are O(peers), so they are batched, not run per packet).
    uint64_t on_datagram(std::span<const uint8_t> datagram, const wg_endpoint& from,
                         uint64_t session_id, uint16_t via, uint64_t now_ms);
    // Timers. Returns the next deadline (absolute, ms).
    uint64_t tick(uint64_t now_ms);
    // Live configuration changes (relayNodes, our addresses).
    void set_relays(std::vector<relay_spec> relays, bool relay_role, uint64_t now_ms);
    void set_endpoints(std::vector<wg_endpoint> endpoints, uint64_t now_ms);
    void set_bootstrap(std::vector<ip_address> bootstrap, uint64_t now_ms);
    // No relayNodes configured: relays are found (bootstrap + records of serving nodes), and a
    // node with a public address offers itself (verifies it by dial-back, then serves).
    bool auto_relays() const noexcept { return cfg_.relays.empty(); }
    // Not listed, offering ourselves at our own public addresses (no relayNodes configured).
    bool offering() const noexcept { return auto_relays() && !cfg_.relay_role; }

    // meshctl ping: sends one PING over the peer's path in use; the answer shows up in
    // take_ping_results() with the returned token. Errors: not_found (no such peer), state_mismatch
    // (no path).
    result<uint64_t> ping(const node_id& peer, uint64_t now_ms);

    // The earliest deadline after the last call (events such as ping() can pull it in).
    uint64_t next_deadline() const noexcept { return next_deadline_; }

    std::vector<outgoing_datagram> take_outgoing() { return std::exchange(out_, {}); }
    std::vector<core_log_event> take_log() { return std::exchange(log_, {}); }
    std::vector<ping_result> take_ping_results() { return std::exchange(ping_results_, {}); }

    // Desired data plane; dataplane_version() changes whenever it does.
    uint64_t dataplane_version() const noexcept { return dp_version_; }
    std::vector<peer_dataplane> dataplane() const;

    std::vector<peer_view> peers() const;
    std::vector<relay_view> relays() const;
    const peer_record& self_record() const noexcept { return self_; }
    const control_counters& counters() const noexcept { return ch_.counters(); }
    relay_role_state role() const noexcept { return role_; }
    const std::string& role_reason() const noexcept { return role_reason_; }
    // Our relay addresses (addr:control port) that another node has dialled back.
    std::vector<wg_endpoint> verified_addresses() const;
    // Failovers (the relay we send through changed because it failed) and relay selections.
    uint64_t relay_failovers() const noexcept { return failovers_; }
    // Wakeups later than stall_ms past the deadline (our process was stalled).
    uint64_t stalls() const noexcept { return stalls_; }
    uint64_t relay_selections() const noexcept { return selections_; }
    // PINGs that got no PONG within ping_timeout_ms, by what they probed.
    struct probe_loss_counts {
        uint64_t relay = 0, direct = 0, inband = 0, user = 0;
    };
    const probe_loss_counts& probe_losses() const noexcept { return probe_losses_; }
    const record_store& store() const noexcept { return store_; }
    const node_core_config& config() const noexcept { return cfg_; }
    const node_id& id() const noexcept { return identity_.id(); }
    // Resolves a name or a 64-hex node ID to a known peer.
    std::optional<node_id> resolve(const std::string& name_or_id) const;

    // The pair's relay choice and session id (exposed for tests and the simulation).
    static uint64_t session_id_for(const node_id& a, const node_id& b, const node_id& relay);
    static uint64_t rendezvous_score(const node_id& a, const node_id& b, const node_id& relay);

private:
    struct relay_addr_state {
        wg_endpoint ep;
        uint64_t last_pong_ms = 0;
        double rtt_ms = 0;
        std::optional<wg_endpoint> reflexive;
    };
    struct relay_entry {
        relay_spec spec;
        relay_origin origin = relay_origin::configured;
        // May carry pairs: configured, or (found ones) its record says it serves. A bootstrap
        // node that does not is only asked for records.
        bool candidate = true;
        bool self = false;
        std::optional<node_id> id;
        std::vector<relay_addr_state> addrs;
        uint64_t next_ping_ms = 0;
        uint64_t next_hello_ms = 0;
        bool was_up = false;
        size_t active = SIZE_MAX;  // the address in use (sticky while it answers)
        uint16_t published_rtt = peer_record::unknown_rtt;  // in our record
        bool fast = false;  // probed fast: in a relayed pair's warm set
        bool was_usable = false;
        uint64_t fast_until = 0;
        uint64_t not_serving_until = 0;  // it answered REJECT(not_a_relay)
        uint64_t reject_backoff_ms = 0;
    };
    struct candidate {
        wg_endpoint ep;  // control endpoint
        uint64_t last_pong_ms = 0;
        double rtt_ms = 0;
    };
    struct peer_entry {
        std::vector<candidate> candidates;
        uint64_t next_probe_ms = 0;
        uint64_t last_inbound_ms = 0;  // last direct PING from the peer
        uint64_t discovered_ms = 0;
        // The relay the peer sends through, as its in-band probes show: kept warm on our side
        // whatever our own choice, so the two ends never disagree into silence.
        std::optional<node_id> peer_relay;
        uint64_t peer_relay_ms = 0;
        // relay path: sessions at the warm relays (the one we send through first)
        struct warm_session {
            node_id relay;
            uint64_t session_id = 0;
            wg_endpoint ep;
            bool accepted = false;
            uint64_t next_request_ms = 0;
        };
        std::vector<warm_session> warm;
        std::optional<node_id> relay;
        uint64_t session_id = 0;
        bool accepted = false;
        uint64_t next_inband_ms = 0;
        uint64_t relay_since_ms = 0;
        uint64_t last_inband_pong_ms = 0;
        double inband_rtt_ms = 0;
        std::map<node_id, uint64_t> excluded;  // relay -> until
        // relay -> until: it REJECTed our session request; no new request before then.
        std::map<node_id, uint64_t> rejected;
        // when decide() must run again (0: now); events that may change the decision reset it
        uint64_t next_check_ms = 0;
        uint64_t record_seq = 0;  // the record the candidates were taken from
        // the decision
        peer_dataplane dp;
        bool learned = false;
    };
    enum class ping_kind : uint8_t { relay, direct, inband, user };
    struct pending_ping {
        ping_kind kind;
        node_id peer;      // direct/inband/user: the peer; relay: unused
        size_t index = 0;  // relay: relay index; direct: candidate index
        size_t addr = 0;   // relay: address index
        wg_endpoint ep;    // relay: the address probed (indices move when relays_ is rebuilt)
        uint64_t sent_ms = 0;
        uint64_t token = 0;
    };

    void send(message_body body, const wg_endpoint& to, uint64_t session_id, uint64_t now);
    uint64_t send_ping(const wg_endpoint& to, uint64_t session_id, pending_ping p, uint64_t now);
    void log(int level, std::string msg, std::vector<std::pair<std::string, std::string>> f = {});
    static constexpr uint64_t tick_quantum_ms = 20;
    void due(uint64_t t) {
        t += (tick_quantum_ms - t % tick_quantum_ms) % tick_quantum_ms;  // batch nearby timers
        if (t < next_deadline_) next_deadline_ = t;
    }

    void refresh_self(uint64_t now, bool force);
    // relays_ from relayNodes, or (auto_relays) from bootstrap + serving records; keeps what was
    // learned about relays that stay. `reset_timers`: probe and HELLO every relay now.
    void rebuild_relays(uint64_t now, bool reset_timers);
    void update_auto_role(uint64_t now, bool was_listed = false);
    // Already active and dialled back at one of addrs: serve there at once (a switch between
    // relayNodes and none configured must not stop a working relay to verify it again).
    bool keep_serving_at(const std::vector<wg_endpoint>& addrs, const std::string& why,
                         uint64_t now);
    bool relays_dirty_ = false;  // auto_relays: a record that may add or drop a relay changed
    // What of a record decides whether (and where) its node is a found relay.
    using relay_facts = std::tuple<uint8_t, std::vector<wg_endpoint>, std::string>;
    static std::optional<relay_facts> relay_facts_of(const peer_record* rec);
    void note_record(const peer_record& rec, const std::optional<relay_facts>& before);
    void tick_relays(uint64_t now);
    void tick_peers(uint64_t now);
    void decide(const node_id& id, peer_entry& p, const peer_record& rec, uint64_t now);
    bool relay_up(const relay_entry& r, uint64_t now) const;
    bool relay_usable(const relay_entry& r, uint64_t now) const;
    bool relay_usable_fast(const relay_entry& r, uint64_t now) const;
    double relay_rtt(const relay_entry& r) const;
    void choose_relay(const node_id& id, peer_entry& p, const peer_record& rec, uint64_t now,
                      peer_dataplane& dp);
    std::optional<wg_endpoint> relay_endpoint(const relay_entry& r, uint64_t now) const;
    void pick_relay_address(relay_entry& r, uint64_t now);
    const relay_entry* relay_by_id(const node_id& id) const;
    relay_entry* relay_by_id(const node_id& id);
    std::string name_of(const node_id& id) const;

    void on_ping(const control_message& m, const ping_msg& b, const wg_endpoint& from,
                 uint64_t session_id, uint64_t now);
    void on_pong(const control_message& m, const pong_msg& b, uint64_t now);
    void on_hello(const control_message& m, const hello_msg& b, const wg_endpoint& from,
                  uint64_t now);
    void on_records(const control_message& m, const records_msg& b, uint64_t now);
    void on_session_request(const control_message& m, const relay_session_request_msg& b,
                            const wg_endpoint& from, uint16_t via, uint64_t now);
    void on_session_answer(const control_message& m, uint64_t session_id, const node_id& to,
                           bool accepted, uint8_t reason, uint64_t now);
    void send_records(const wg_endpoint& to, uint64_t now);
    void push_record(const peer_record& rec, const node_id& except, uint64_t now);

    node_core_config cfg_;
    node_identity identity_;
    control_channel ch_;
    rng_fn rng_;
    relay_binder* binder_;
    record_store store_;
    peer_record self_;
    bool self_dirty_ = true;
    uint64_t self_signed_ms_ = 0;

    std::vector<relay_entry> relays_;
    // Relay role: the nodes registered with us and where their HELLOs come from, so a new or
    // changed record reaches every node at once instead of at its next HELLO.
    struct registration {
        wg_endpoint from;
        uint64_t last_hello_ms = 0;
    };
    std::map<node_id, registration> registered_;
    std::map<node_id, peer_entry> peers_;
    std::map<uint64_t, pending_ping> pending_;
    uint64_t next_seq_ = 1;
    uint64_t next_token_ = 1;
    uint64_t next_expire_ms_ = 0;

    std::vector<outgoing_datagram> out_;
    std::vector<core_log_event> log_;
    std::vector<ping_result> ping_results_;
    uint64_t dp_version_ = 0;
    uint64_t next_deadline_ = UINT64_MAX;
    bool recheck_all_ = true;  // relay state changed: every peer's decision may change

    // Relay role.
    // Serving: only then does the node own its port with the relay forwarder and stop taking
    // relayed paths itself. While verifying it stays a normal node (the dial-back probe reaches
    // its ordinary control socket), so a node being considered loses nothing.
    bool serving() const noexcept { return role_ == relay_role_state::active; }
    // Rendezvous (accepts registrations) from the moment it is listed.
    // Without relayNodes every node is a rendezvous for whoever lists it in dht.bootstrap.
    bool relay_like() const noexcept {
        return role_ == relay_role_state::verifying || role_ == relay_role_state::active ||
               auto_relays();
    }
    void tick_role(uint64_t now);
    void set_role(relay_role_state s, std::string reason, uint64_t now);
    void note_wakeup(uint64_t now);
    void start_verifying(std::string why, uint64_t now);
    void on_dialback_request(const control_message& m, const dialback_request_msg& b, uint64_t now);
    void on_dialback_probe(const control_message& m, const dialback_probe_msg& b, uint64_t now);
    relay_role_state role_ = relay_role_state::none;
    std::string role_reason_;
    uint64_t role_since_ms_ = 0;
    uint64_t role_retry_backoff_ms_ = 60000;  // after the next refusal
    uint64_t next_dialback_ms_ = 0;
    uint64_t dialback_first_ms_ = 0;       // first DIALBACK_REQUEST of this verification
    std::vector<wg_endpoint> self_addrs_;  // our advertised relay endpoints
    std::vector<bool> self_verified_;
    std::map<uint64_t, size_t> dialback_nonces_;  // nonce -> index into self_addrs_
    std::vector<std::string> dialback_asked_;     // helpers asked so far (names)
    uint64_t probe_window_ms_ = 0, probes_in_window_ = 0;
    uint64_t failovers_ = 0, selections_ = 0, stalls_ = 0;
    uint64_t last_tick_ms_ = 0;
    probe_loss_counts probe_losses_;
};

}  // namespace mw::meshd
