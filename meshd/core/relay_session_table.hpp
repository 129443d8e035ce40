// The relay's forwarding state: which RELAY_DATA frames it forwards, and where to.
//
// A session is set up by the authenticated control exchange (RELAY_SESSION_REQUEST, done by the
// caller): node A asks for session S to node B, and the relay binds A's side to the address the
// request came from; B's request for the same S (from B, to A) binds B's side. From then on a
// frame for S from A's bound address goes to B's bound address and vice versa. Anything else is
// dropped and counted by reason, so the relay is never an open relay: an unknown session, a known
// session from any other address, a half-open session, an idle-expired session, or a sender node
// over its token-bucket rate (packets/s and bytes/s).
//
// Kept sessions (issue 18): a session whose frames stopped is not forgotten while the relay still
// hears both of its nodes at their bound addresses (heard(): an authenticated control message from
// the node, from exactly that address, within keep_ms). An idle node then needs no session
// refresh at all: its PINGs to the relay, which it sends anyway, keep its sessions. When one node
// is no longer heard (gone, or behind a NAT that rebound it) and the other still is, only the
// quiet node's side is unbound: the session is half-open again with the heard side bound, so the
// quiet node's next request completes it although the heard one, idle, asks for nothing. With
// neither heard the session expires as before. When the table is full, a new session evicts the
// idle kept session inactive longest (evicted_kept()); nodes request kept sessions again every
// hour as a backstop for that (node_core_config::kept_session_refresh_ms).
//
// Pure and fixed-size: time is passed in (ms, any monotonic origin), all memory is reserved at
// construction, and route() — the per-packet call — allocates nothing and touches one index probe
// sequence, one session slot and one node slot. Not thread-safe; the forwarder serialises access.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "common/result.hpp"
#include "meshd/core/fixed_u64_map.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/relay_addr.hpp"

namespace mw::meshd {

// How long a relay keeps an idle session of nodes it hears (relay_table_limits::keep_ms) and
// announces keeping (node_core_config::relay_keep_ms): one value, so that the two agree.
constexpr uint64_t default_relay_keep_ms = 300'000;

struct relay_table_limits {
    size_t max_sessions = 16384;
    size_t max_nodes = 4096;
    // Sessions one node may have its side bound in: a node relays to at most this many peers.
    size_t max_sessions_per_node = 1024;
    // WireGuard sends a keepalive at least every 25 s on a path it uses (persistent keepalive) and
    // rekeys every 2 min, so a session quiet for longer than this is abandoned.
    uint64_t idle_timeout_ms = 180'000;
    // A session idle past idle_timeout_ms is kept while both nodes were heard at their bound
    // addresses within this (0: never kept, the behaviour before issue 18). 300 s = 2.5x a
    // node's idle full-PING interval to a relay (idle_used/spare_ping_interval_ms, 120 s): two
    // PINGs lost in a row do not drop a session, and a node gone for good is forgotten within
    // 5 min. core_config::relay_keep_ms must say the same (it is what the relay announces).
    uint64_t keep_ms = default_relay_keep_ms;
    // Per sending node. 1 Gbit/s of 1400-byte packets is ~90 kpps; allow headroom over that.
    uint64_t node_packets_per_s = 200'000;
    uint64_t node_bytes_per_s = 250'000'000;
    // Bucket depth, as this many ms worth of the rate: absorbs bursts (a TCP window) without
    // letting a node exceed its rate for long.
    uint64_t burst_ms = 200;
    uint64_t hash_seed = 0;  // from the caller's RNG (the core draws no randomness)
};

enum class relay_drop : uint8_t {
    unknown_session,       // no such session id
    wrong_source,          // session known, frame not from either bound address
    not_established,       // from the bound side of a half-open session (peer not bound yet)
    expired,               // session idle past idle_timeout_ms (removed on this frame)
    rate_limited_packets,  // sender node over node_packets_per_s
    rate_limited_bytes,    // sender node over node_bytes_per_s
};
constexpr size_t relay_drop_count = 6;
const char* to_string(relay_drop d) noexcept;

// Why bind() refused to create or bind a session for its limits (counted in refusals()): the
// figures that show a flood of session requests held (bench_control_flood).
enum class relay_refusal : uint8_t {
    node_limit,  // the requesting node has max_sessions_per_node sessions bound
    table_full,  // max_sessions in the table and no idle kept session to evict
    node_table,  // max_nodes distinct nodes hold sessions
};
constexpr size_t relay_refusal_count = 3;
const char* to_string(relay_refusal r) noexcept;

enum class relay_bind_state { half_open, established };

struct relay_session_info {
    uint64_t session_id = 0;
    node_id a, b;
    relay_addr a_addr, b_addr;  // b_addr invalid while half-open
    uint64_t last_active_ms = 0;
    uint64_t packets_a_to_b = 0, bytes_a_to_b = 0, packets_b_to_a = 0, bytes_b_to_a = 0;
};

class relay_session_table {
public:
    explicit relay_session_table(const relay_table_limits& limits = {});

    // The control plane's call after an authenticated RELAY_SESSION_REQUEST{session_id, from, to}
    // arrived from `observed`. Creates the session (binding `from`'s side) or binds the other
    // side; a repeat from an already bound side re-binds it to `observed` (NAT rebinding).
    // Errors: already_exists (the id belongs to another pair), exhausted (table, node table or the
    // node's session limit full), invalid_argument (from == to, a zero port, or both sides on one
    // address).
    // `via`: the caller's tag of where the request arrived (see route()).
    result<relay_bind_state> bind(uint64_t session_id, const node_id& from, const node_id& to,
                                  const relay_addr& observed, uint64_t now_ms,
                                  uint16_t via = 0xffff);
    bool remove(uint64_t session_id) noexcept;
    // The control plane heard `node` at `observed` (an authenticated control message, with the
    // node's pair tag, from that address): its sessions bound at exactly that address are kept
    // for keep_ms from now. A node with no session here is not stored (no state for strangers).
    // The last two addresses per family are remembered (a node heard both through its NAT and
    // on a shared LAN, or at a relay's second address through a symmetric NAT): a third one
    // replaces the one heard longest ago.
    void heard(const node_id& node, const relay_addr& observed, uint64_t now_ms) noexcept;
    // Idle sessions evicted to make room for a new one (kept only because their nodes were heard).
    uint64_t evicted_kept() const noexcept { return evicted_kept_; }
    // bind() calls refused for a limit (errc::exhausted), by which one.
    const std::array<uint64_t, relay_refusal_count>& refusals() const noexcept { return refusals_; }
    uint64_t refusals(relay_refusal r) const noexcept { return refusals_[static_cast<size_t>(r)]; }
    const relay_table_limits& limits() const noexcept { return limits_; }
    // Whether the session is past idle_timeout_ms and kept only because both nodes are heard.
    bool kept(uint64_t session_id, uint64_t now_ms) const noexcept;
    // Removes sessions idle past the timeout whose nodes are no longer heard; returns how many.
    // An idle session of which one node is still heard and the other not loses only the unheard
    // side: it goes back to half-open with the heard side bound, so that the other node's next
    // request completes it. (Dropping it whole would strand the heard node: while idle it does
    // not refresh a kept session, so nothing would bind its side again.) Meant for a periodic
    // timer (route() also drops an expired session lazily, so correctness does not depend on it).
    size_t expire(uint64_t now_ms) noexcept;
    // When the next session will expire if nothing is forwarded (UINT64_MAX when empty).
    uint64_t next_expiry(uint64_t now_ms) const noexcept;

    // Per packet: where a RELAY_DATA frame of `frame_bytes` for `session_id` from `from` goes, or
    // nullptr (dropped, counted in drops()). The pointer stays valid until the next call that
    // changes the table.
    // `arrived_via` is an opaque tag of the caller's (the forwarder's socket index); the table
    // remembers it for the sending side and puts the tag last seen from the destination side in
    // `*reply_via` (no_via until that side has sent), so a relay with one socket per address
    // answers each node from the address that node talks to (its NAT expects exactly that).
    static constexpr uint16_t no_via = 0xffff;
    const relay_addr* route(uint64_t session_id, const relay_addr& from, size_t frame_bytes,
                            uint64_t now_ms, uint16_t arrived_via = no_via,
                            uint16_t* reply_via = nullptr) noexcept;

    const std::array<uint64_t, relay_drop_count>& drops() const noexcept { return drops_; }
    uint64_t drops(relay_drop d) const noexcept { return drops_[static_cast<size_t>(d)]; }
    uint64_t routed_packets() const noexcept { return routed_packets_; }
    uint64_t routed_bytes() const noexcept { return routed_bytes_; }

    size_t size() const noexcept { return session_index_.size(); }
    size_t node_count() const noexcept { return node_index_.size(); }
    // For meshctl / metrics (relay load). Not for the hot path.
    bool info(uint64_t session_id, relay_session_info& out) const noexcept;
    size_t node_sessions(const node_id& n) const noexcept;

private:
    static constexpr uint32_t no_slot = fixed_u64_map::none;

    struct node_slot {
        node_id id;
        uint32_t sessions = 0;       // sessions with this node's side bound
        uint64_t packet_tokens = 0;  // in 1/1000 packet
        uint64_t byte_tokens = 0;    // in 1/1000 byte
        uint64_t refilled_ms = 0;
        // heard(): the node's last two authenticated control sources per family
        // ([0]: v4, [1]: v6), and when each was last heard.
        std::array<std::array<relay_addr, 2>, 2> heard_addr{};
        std::array<std::array<uint64_t, 2>, 2> heard_ms{};
        bool used = false;
    };
    struct side {
        uint32_t node = no_slot;  // node slot while bound
        node_id id;
        relay_addr addr;
        uint16_t via = no_via;  // the caller's tag of where this side's frames arrive
    };
    struct session_slot {
        uint64_t id = 0;
        side a, b;
        uint64_t last_active_ms = 0;
        uint64_t packets_a_to_b = 0, bytes_a_to_b = 0, packets_b_to_a = 0, bytes_b_to_a = 0;
        bool used = false;
    };

    static uint64_t node_key(const node_id& n) noexcept;
    uint32_t find_node(const node_id& n) const noexcept;
    result<uint32_t> acquire_node(const node_id& n, uint64_t now_ms);
    void release_node(uint32_t slot) noexcept;
    bool take_tokens(node_slot& n, size_t bytes, uint64_t now_ms) noexcept;
    void erase_slot(uint32_t slot) noexcept;
    bool inactive(const session_slot& s, uint64_t now_ms) const noexcept {
        return now_ms > s.last_active_ms && now_ms - s.last_active_ms > limits_.idle_timeout_ms;
    }
    // Until when the side's node was heard at its bound address plus keep_ms (0: not heard or
    // not bound).
    uint64_t heard_until(const side& sd) const noexcept;
    bool heard_now(const side& sd, uint64_t now_ms) const noexcept {
        return now_ms < heard_until(sd);
    }
    // Inactive and neither bound side heard: the session goes.
    bool idle(const session_slot& s, uint64_t now_ms) const noexcept {
        return inactive(s, now_ms) && !heard_now(s.a, now_ms) && !heard_now(s.b, now_ms);
    }
    // Inactive, one side heard, the other bound but not heard: that side is unbound (expire()).
    bool half_idle(const session_slot& s, uint64_t now_ms) const noexcept {
        return inactive(s, now_ms) && s.b.node != no_slot &&
               heard_now(s.a, now_ms) != heard_now(s.b, now_ms);
    }
    void unbind_unheard(session_slot& s, uint64_t now_ms) noexcept;
    // Frees the slot of the idle kept session inactive longest; false if there is none.
    bool evict_kept(uint64_t now_ms) noexcept;

    relay_table_limits limits_;
    uint64_t packet_burst_, byte_burst_;  // bucket depths, in 1/1000 units
    std::vector<session_slot> sessions_;
    std::vector<uint32_t> free_sessions_;
    fixed_u64_map session_index_;
    std::vector<node_slot> nodes_;
    std::vector<uint32_t> free_nodes_;
    fixed_u64_map node_index_;  // keyed by the node ID's first 8 bytes; slot holds the full ID
    std::array<uint64_t, relay_drop_count> drops_{};
    uint64_t routed_packets_ = 0, routed_bytes_ = 0;
    uint64_t evicted_kept_ = 0;
    std::array<uint64_t, relay_refusal_count> refusals_{};
};

}  // namespace mw::meshd
