// This node's relay role (DESIGN §5 "Relay role") and its control side: listed in relayNodes, or
// (none configured) offering itself at its public addresses -> verifying (another node must dial
// the address back) -> active, or refused with a reason and checked again later. Also the
// helper side of dial-back (probes for others, rate-limited per requester and in all) and the
// relay's session requests (bound in the relay_binder, the forwarder's session table).
//
// A restart (issue 14 §3): a role saved by the last meshd (node_core_config::saved_role) for the
// same advertised addresses, listed or offering as now, and at most role_saved_max_age_ms old,
// starts `active` (cause restarted) at once and is dialled back again meanwhile, as a verifying
// role would be; no dial-back within dialback_timeout_ms refuses it as today. Otherwise it
// verifies first (logged with why).
//
// Couplings, as explicit calls (wired by node_core): on_change whenever the state changes (pairs
// are decided again — a serving node takes no relayed paths — and our record re-signed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "meshd/core/core_context.hpp"

namespace mw::meshd {

class relay_role {
public:
    // Who may be asked to dial us back: (name, control endpoint), at most `max`; with
    // `public_only` only helpers at public addresses (see tick()).
    struct helper {
        std::string name;
        node_id id;
        wg_endpoint ep;
    };
    using helper_list = std::vector<helper>;
    using helper_source = std::function<helper_list(bool public_only, size_t max, uint64_t now)>;

    relay_role(core_context& ctx, relay_binder* binder, std::function<void()> on_change);

    // relayNodes (or whether we are listed) changed; `self_addrs`: our entry's addresses.
    void on_relay_config(bool listed, bool was_listed, std::vector<wg_endpoint> self_addrs,
                         uint64_t now);
    // No relayNodes: offer ourselves at our public addresses (or stop offering).
    void update_auto(uint64_t now, bool was_listed = false);
    void start(uint64_t now);
    // Verification rounds, refusal retries.
    void tick(const helper_source& helpers, uint64_t now);

    void on_dialback_request(const control_message& m, const dialback_request_msg& b, uint64_t now);
    void on_dialback_probe(const control_message& m, const dialback_probe_msg& b, uint64_t now);
    void on_session_request(const control_message& m, const relay_session_request_msg& b,
                            const wg_endpoint& from, uint16_t via, uint64_t now);
    // Any authenticated control message from `sender` at `from` (node_core, after the pair tag
    // and revocation checks; not in-band, not an anonymous PING): while serving, it keeps the
    // sender's idle sessions bound at `from` (issue 18). NAT_KEEPALIVE does not count: it is
    // unauthenticated, so anyone who can send from (or spoof) a node's address could keep that
    // node's sessions, and with them its table slots, alive after the node left.
    void on_heard(const node_id& sender, const wg_endpoint& from);

    relay_role_state state() const noexcept { return role_; }
    // The text (with addresses) for logs and `meshctl status`; cause() is the fixed code.
    const std::string& reason() const noexcept { return role_reason_; }
    relay_role_cause cause() const noexcept { return role_cause_; }
    // Serving: only then does the node own its port with the relay forwarder and stop taking
    // relayed paths itself. While verifying it stays a normal node (the dial-back probe reaches
    // its ordinary control socket), so a node being considered loses nothing.
    bool serving() const noexcept { return role_ == relay_role_state::active; }
    // Rendezvous (accepts registrations) from the moment it is listed.
    // Without relayNodes every node is a rendezvous for whoever lists it in dht.bootstrap.
    bool relay_like() const noexcept {
        return role_ == relay_role_state::verifying || role_ == relay_role_state::active ||
               ctx_.auto_relays();
    }
    // Our advertised relay endpoints, and those another node has dialled back.
    const std::vector<wg_endpoint>& addresses() const noexcept { return self_addrs_; }
    std::vector<wg_endpoint> verified_addresses() const;

private:
    void set_role(relay_role_state s, relay_role_cause cause, std::string reason, uint64_t now);
    void start_verifying(relay_role_cause cause, std::string why, uint64_t now);
    // At start: serve at once on the saved role when it still applies (see the header).
    void restore(uint64_t now);
    // One round of dial-back requests for the addresses not `done` yet, or the refusal when
    // dialback_timeout_ms passed without one.
    void dial_round(const helper_source& helpers, const std::vector<bool>& done, uint64_t now);
    // Already active and dialled back at one of addrs: serve there at once (a switch between
    // relayNodes and none configured must not stop a working relay to verify it again).
    bool keep_serving_at(const std::vector<wg_endpoint>& addrs, const std::string& why,
                         uint64_t now);

    core_context& ctx_;
    relay_binder* binder_;
    std::function<void()> on_change_;
    relay_role_state role_ = relay_role_state::none;
    std::string role_reason_;
    relay_role_cause role_cause_ = relay_role_cause::none;
    uint64_t role_since_ms_ = 0;
    uint64_t role_retry_backoff_ms_ = 60000;  // after the next refusal
    uint64_t next_dialback_ms_ = 0;
    uint64_t dialback_first_ms_ = 0;       // first DIALBACK_REQUEST of this verification
    std::vector<wg_endpoint> self_addrs_;  // our advertised relay endpoints
    std::vector<bool> self_verified_;
    // Serving on a restored role and not dialled back since the start (restore()); then which
    // addresses were.
    bool rechecking_ = false;
    std::vector<bool> rechecked_;
    std::map<uint64_t, size_t> dialback_nonces_;  // nonce -> index into self_addrs_
    std::vector<std::string> dialback_asked_;     // helpers asked so far (names)
    uint64_t probe_window_ms_ = 0, probes_in_window_ = 0;
    // Per target address: an honest requester asks each helper about each of its addresses
    // once per dialback_interval (1 s), so 2/s (burst 4) never delays it, while one requester
    // can no longer spend the whole dialback_probes_per_s on one victim.
    send_budget target_budget_{2, 4};
    std::map<node_id, uint64_t> probes_by_requester_;  // in this window
};

}  // namespace mw::meshd
