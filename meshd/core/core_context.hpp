// What every part of the node core shares (passed to each by reference): the live configuration,
// the identity, the control channel, the RNG, the outbox and log sink, the probes in flight and
// the deadline scheduler. The parts (membership, relay_directory, relay_role, relay_election,
// peer_paths) own their own state; this holds only what they all write to or read.
//
// Pure like the rest of the core: no clock (every call takes `now`), no socket (datagrams are
// queued for the daemon), no OS randomness (the caller's RNG).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/admission.hpp"
#include "meshd/core/control_channel.hpp"
#include "meshd/core/cookie_jar.hpp"
#include "meshd/core/core_types.hpp"
#include "meshd/core/endpoint_filter.hpp"
#include "meshd/core/node_identity.hpp"
#include "meshd/core/pmtu_prober.hpp"
#include "meshd/core/probe_frame.hpp"
#include "meshd/core/probe_tracker.hpp"
#include "meshd/core/send_budget.hpp"

namespace mw::meshd {

// A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the rest of the core (records, the
// relay config) names them as plain IPv4. One form for comparisons.
wg_endpoint normalize_endpoint(const wg_endpoint& e);

class core_context {
public:
    using rng_fn = std::function<void(std::span<uint8_t>)>;
    using log_fields = std::vector<std::pair<std::string, std::string>>;
    // Timers are batched to this grain: ticks are O(peers), so nearby deadlines share one.
    static constexpr uint64_t tick_quantum_ms = 20;

    core_context(node_core_config cfg, const node_identity& identity, psk_sealer sealer,
                 rng_fn rng);

    // Live: node_core's set_relays/set_endpoints/set_bootstrap change it.
    node_core_config cfg;
    // No relayNodes configured: relays are found (bootstrap + records of serving nodes).
    bool auto_relays() const noexcept { return cfg.relays.empty(); }
    // Not listed, offering ourselves at our own public addresses (no relayNodes configured).
    bool offering() const noexcept { return auto_relays() && !cfg.relay_role; }
    // Listed in revokedNodes (cfg.revoked is kept sorted), or not among the Kubernetes API's
    // nodes when kubernetes.requireNode is on (cfg.listed, sorted).
    bool revoked(const node_id& id) const noexcept {
        return std::binary_search(cfg.revoked.begin(), cfg.revoked.end(), id) ||
               (cfg.require_listed && id != identity_.id() &&
                !std::binary_search(cfg.listed.begin(), cfg.listed.end(), id));
    }

    const node_identity& identity() const noexcept { return identity_; }
    const node_id& id() const noexcept { return identity_.id(); }
    control_channel& channel() noexcept { return ch_; }
    const control_channel& channel() const noexcept { return ch_; }
    probe_tracker& probes() noexcept { return probes_; }
    const probe_tracker& probes() const noexcept { return probes_; }
    cookie_jar& cookies() noexcept { return cookies_; }
    const cookie_jar& cookies() const noexcept { return cookies_; }

    // Seals `body` for node `recipient` and queues it to `to` (session_id != 0: in-band, inside
    // RELAY_DATA of that session). Logged and dropped when the recipient's key is unknown.
    void send(message_body body, const node_id& recipient, const wg_endpoint& to,
              uint64_t session_id, uint64_t now);
    // RECORDS to node `to` at `to_ep` answering `request_id` (0: pushed): the records in order,
    // packed into as few datagrams as fit below the control size limit (at most 255 each).
    // Returns how many were sent (a record that cannot be encoded is skipped).
    size_t send_records(const node_id& to, const wg_endpoint& to_ep, uint64_t request_id,
                        std::span<const peer_record* const> records, uint64_t now);
    // The same from a fresh ephemeral port (dial-back probes); dropped silently if unsealable.
    void send_fresh(message_body body, const node_id& recipient, const wg_endpoint& to,
                    uint64_t now);
    // Records the probe (p.peer: the node that should answer, zero if not known yet) and sends
    // its PING to p.peer, or to no one in particular; returns the random request id (0: not
    // sent, the destination's send budget is spent). Out-of-band PINGs and send_fresh() take a
    // token of the destination address's send_budget (send_budget.hpp).
    // `budgeted` false only for an address that answers us with authenticated PONGs right now
    // (a fast-probed relay within its timeout): no record can aim those at a victim, and on a
    // lossy link they come faster than the budget's 16/s (probe_loss, issue 14 §5).
    uint64_t send_ping(const wg_endpoint& to, uint64_t session_id, probe p, uint64_t now,
                       bool budgeted = true);
    // A PING padded to a datagram of `size` bytes (a direct path's path MTU probe, issue 15):
    // out of band, to the address in use of a peer that answers us, so no send budget.
    uint64_t send_padded_ping(const wg_endpoint& to, probe p, size_t size, uint64_t now);
    // A NAT_KEEPALIVE (wire_codec.hpp) to a relay we probe: 4 bytes, never answered. No send
    // budget: it goes only to the address in use of a relay that answers us.
    void send_nat_keepalive(const wg_endpoint& to);
    // An endpoint taken from a record, an offer or a request (endpoint_filter.hpp): whether it
    // may be sent to at all. A refusal is counted and logged once per reason; `what` says where
    // the endpoint came from (for that log line).
    bool endpoint_allowed(const wg_endpoint& ep, const char* what);
    const endpoint_refusal_counts& endpoint_refusals() const noexcept { return refusals_; }
    // Path MTU searches of every pair (pmtu_prober counts them here).
    const pmtu_totals& pmtu() const noexcept { return pmtu_; }
    pmtu_totals& pmtu_totals_mut() noexcept { return pmtu_; }
    // A relayed pair's probe keys (probe_frame.hpp): an X25519 (~50 µs), so callers keep them.
    // Fails for a low-order peer key.
    result<probe_keys> probe_keys_for(const node_id& peer, const wg_key& peer_public) const;
    // Records the probe under a random request id and sends its sealed PING frame in
    // `session_id` to the relay at `to` (probe_frame.hpp); `body` carries our WireGuard reading.
    void send_probe_ping(const wg_endpoint& to, uint64_t session_id, const probe_keys& keys,
                         probe p, probe_frame_body body, uint64_t now);
    // A sealed probe frame (a PONG) in `session_id` to `to`, with a random counter.
    void send_probe_frame(const wg_endpoint& to, uint64_t session_id, const probe_keys& keys,
                          const probe_frame_body& body);
    void log(int level, std::string msg, log_fields f = {});
    uint64_t random_u64();
    // Records `p` under a fresh random request id and returns it (0: none found, not recorded).
    uint64_t add_probe(const probe& p, uint64_t now);

    // The deadline scheduler: every part asks for a wakeup with due(); node_core returns the
    // earliest. Nearby timers are rounded up to one tick_quantum_ms.
    void due(uint64_t t) {
        t += (tick_quantum_ms - t % tick_quantum_ms) % tick_quantum_ms;
        if (t < next_deadline_) next_deadline_ = t;
    }
    uint64_t next_deadline() const noexcept { return next_deadline_; }
    void set_next_deadline(uint64_t t) noexcept { next_deadline_ = t; }

    // A clock value moved forward by a stall of `late` ms, never past `now` (0: never set).
    static void shift_clock(uint64_t& t, uint64_t late, uint64_t now) {
        if (t) t = std::min(now, t + late);
    }

    // A node's name for log lines (its record's, a relay's configured one, or its short ID);
    // set by node_core, which knows where names live.
    std::function<std::string(const node_id&)> name_of;

    // A key roll (psk.path / psk.acceptPaths changed): the control channel's keys change now.
    // Probe keys (probe_keys_for) stay under the sealing key meshd started with, so that a roll
    // never changes a relayed pair's probe index or keys under it (see docs/architecture.md).
    void set_cluster_keys(psk_sealer sealer) { ch_.set_sealer(std::move(sealer)); }
    // A control datagram from `from` opened under none of our keys: logged (at most once per
    // source per 10 s, 10 lines per 10 s), saying whether it was sealed with the retired key.
    void note_unauthenticated(const wg_endpoint& from, bool retired, uint64_t now);

    // Admission refusals (issue 17), and the throttle for their log lines.
    admission_counters admission;
    log_throttle refusal_log;
    log_throttle key_refusal_log{10'000, 10, 64};

    std::vector<outgoing_datagram> take_outgoing() { return std::exchange(out_, {}); }
    std::vector<core_log_event> take_log() { return std::exchange(log_, {}); }

private:
    node_identity identity_;
    symmetric_key pair_cluster_key_;
    control_channel ch_;
    rng_fn rng_;
    probe_tracker probes_;
    cookie_jar cookies_;
    std::vector<outgoing_datagram> out_;
    std::vector<core_log_event> log_;
    uint64_t next_deadline_ = UINT64_MAX;
    send_budget budget_;
    endpoint_refusal_counts refusals_{};
    pmtu_totals pmtu_;
    void refuse(endpoint_refusal why, const wg_endpoint& ep, const char* what);
    bool budget_allows(const wg_endpoint& to, uint64_t now);
};

}  // namespace mw::meshd
