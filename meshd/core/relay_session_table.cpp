#include "meshd/core/relay_session_table.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

namespace mw::meshd {

const char* to_string(relay_drop d) noexcept {
    switch (d) {
        case relay_drop::unknown_session:
            return "unknown_session";
        case relay_drop::wrong_source:
            return "wrong_source";
        case relay_drop::not_established:
            return "not_established";
        case relay_drop::expired:
            return "expired";
        case relay_drop::rate_limited_packets:
            return "rate_limited_packets";
        case relay_drop::rate_limited_bytes:
            return "rate_limited_bytes";
    }
    return "unknown";
}

const char* to_string(relay_refusal r) noexcept {
    switch (r) {
        case relay_refusal::node_limit:
            return "node_limit";
        case relay_refusal::table_full:
            return "table_full";
        case relay_refusal::node_table:
            return "node_table";
    }
    return "unknown";
}

relay_session_table::relay_session_table(const relay_table_limits& limits)
    : limits_(limits),
      // At least one packet, and one maximum-size datagram, must always fit a full bucket, or a
      // low configured rate would block large packets forever instead of slowing them.
      packet_burst_(std::max<uint64_t>(limits.node_packets_per_s * limits.burst_ms, 1000)),
      byte_burst_(std::max<uint64_t>(limits.node_bytes_per_s * limits.burst_ms, 65535ull * 1000)),
      sessions_(limits.max_sessions),
      session_index_(limits.max_sessions, limits.hash_seed),
      nodes_(limits.max_nodes),
      node_index_(limits.max_nodes, limits.hash_seed ^ 0x5bd1e995u) {
    free_sessions_.reserve(limits.max_sessions);
    for (size_t i = limits.max_sessions; i > 0; --i) free_sessions_.push_back(uint32_t(i - 1));
    free_nodes_.reserve(limits.max_nodes);
    for (size_t i = limits.max_nodes; i > 0; --i) free_nodes_.push_back(uint32_t(i - 1));
}

uint64_t relay_session_table::node_key(const node_id& n) noexcept {
    uint64_t k;
    std::memcpy(&k, n.data(), sizeof k);
    return k;
}

uint32_t relay_session_table::find_node(const node_id& n) const noexcept {
    uint32_t slot = node_index_.find(node_key(n));
    if (slot == no_slot || nodes_[slot].id != n) return no_slot;
    return slot;
}

result<uint32_t> relay_session_table::acquire_node(const node_id& n, uint64_t now_ms) {
    uint32_t slot = node_index_.find(node_key(n));
    if (slot != no_slot) {
        // Two node IDs sharing 64 bits would need ~2^64 hashing to make on purpose; refuse the
        // newcomer rather than let it share (and drain) another node's bucket.
        if (nodes_[slot].id != n) {
            return error(errc::already_exists, "relay: node ID prefix collision");
        }
        if (nodes_[slot].sessions >= limits_.max_sessions_per_node) {
            ++refusals_[size_t(relay_refusal::node_limit)];
            return error(errc::exhausted, "relay: node " + n.short_hex() + " has " +
                                              std::to_string(nodes_[slot].sessions) +
                                              " sessions, the per-node maximum");
        }
        ++nodes_[slot].sessions;
        return slot;
    }
    if (free_nodes_.empty() || limits_.max_sessions_per_node == 0) {
        ++refusals_[size_t(free_nodes_.empty() ? relay_refusal::node_table
                                               : relay_refusal::node_limit)];
        return error(errc::exhausted, "relay: node table full");
    }
    slot = free_nodes_.back();
    free_nodes_.pop_back();
    node_slot& s = nodes_[slot];
    s = node_slot{};
    s.id = n;
    s.used = true;
    s.sessions = 1;
    s.packet_tokens = packet_burst_;  // a new node starts with a full bucket
    s.byte_tokens = byte_burst_;
    s.refilled_ms = now_ms;
    (void)node_index_.insert(node_key(n), slot);  // cannot fail: sized like nodes_
    return slot;
}

void relay_session_table::release_node(uint32_t slot) noexcept {
    if (slot == no_slot) return;
    node_slot& s = nodes_[slot];
    if (--s.sessions > 0) return;
    node_index_.erase(node_key(s.id));
    s.used = false;
    free_nodes_.push_back(slot);
}

result<relay_bind_state> relay_session_table::bind(uint64_t session_id, const node_id& from,
                                                   const node_id& to, const relay_addr& observed,
                                                   uint64_t now_ms, uint16_t via) {
    if (from == to) return error(errc::invalid_argument, "relay: session from a node to itself");
    if (!observed.valid()) return error(errc::invalid_argument, "relay: sender address port 0");

    uint32_t slot = session_index_.find(session_id);
    if (slot == no_slot) {
        // The node first: a request refused for its node limits must not evict anything.
        uint32_t node = MW_TRY(acquire_node(from, now_ms));
        if (free_sessions_.empty() && !evict_kept(now_ms)) {
            release_node(node);
            ++refusals_[size_t(relay_refusal::table_full)];
            return error(errc::exhausted, "relay: session table full");
        }
        slot = free_sessions_.back();
        free_sessions_.pop_back();
        session_slot& s = sessions_[slot];
        s = session_slot{};
        s.id = session_id;
        s.used = true;
        s.a = {node, from, observed, via};
        s.b = {no_slot, to, relay_addr{}, no_via};
        s.last_active_ms = now_ms;
        (void)session_index_.insert(session_id, slot);  // cannot fail: sized like sessions_
        return relay_bind_state::half_open;
    }

    session_slot& s = sessions_[slot];
    side* mine;
    side* other;
    if (s.a.id == from && s.b.id == to) {
        mine = &s.a, other = &s.b;
    } else if (s.b.id == from && s.a.id == to) {
        mine = &s.b, other = &s.a;
    } else {
        return error(errc::already_exists, "relay: session id in use by another pair");
    }
    if (other->node != no_slot && other->addr == observed) {
        return error(errc::invalid_argument, "relay: both sides of a session on one address");
    }
    if (mine->node == no_slot) mine->node = MW_TRY(acquire_node(from, now_ms));
    mine->addr = observed;
    mine->via = via;
    s.last_active_ms = std::max(s.last_active_ms, now_ms);
    return other->node != no_slot ? relay_bind_state::established : relay_bind_state::half_open;
}

void relay_session_table::erase_slot(uint32_t slot) noexcept {
    session_slot& s = sessions_[slot];
    release_node(s.a.node);
    release_node(s.b.node);
    session_index_.erase(s.id);
    s.used = false;
    free_sessions_.push_back(slot);
}

uint64_t relay_session_table::heard_until(const side& sd) const noexcept {
    if (sd.node == no_slot || limits_.keep_ms == 0) return 0;
    const node_slot& n = nodes_[sd.node];
    const size_t f = sd.addr.is_v4() ? 0 : 1;
    uint64_t until = 0;
    for (size_t i = 0; i < 2; ++i) {
        if (n.heard_ms[f][i] != 0 && n.heard_addr[f][i] == sd.addr)
            until = std::max(until, n.heard_ms[f][i] + limits_.keep_ms);
    }
    return until;
}

void relay_session_table::heard(const node_id& node, const relay_addr& observed,
                                uint64_t now_ms) noexcept {
    uint32_t slot = find_node(node);
    if (slot == no_slot || !observed.valid()) return;
    node_slot& n = nodes_[slot];
    const size_t f = observed.is_v4() ? 0 : 1;
    size_t i = 0;
    if (n.heard_addr[f][0] == observed && n.heard_ms[f][0] != 0) {
        i = 0;
    } else if (n.heard_addr[f][1] == observed && n.heard_ms[f][1] != 0) {
        i = 1;
    } else {
        i = n.heard_ms[f][0] <= n.heard_ms[f][1] ? 0 : 1;  // replace the one heard longest ago
        n.heard_addr[f][i] = observed;
        n.heard_ms[f][i] = 0;
    }
    n.heard_ms[f][i] = std::max(n.heard_ms[f][i], std::max<uint64_t>(now_ms, 1));
}

void relay_session_table::unbind_unheard(session_slot& s, uint64_t now_ms) noexcept {
    // Keep side a the bound one (route() and bind() read a half-open session that way).
    if (!heard_now(s.a, now_ms)) std::swap(s.a, s.b);
    release_node(s.b.node);
    s.b = {no_slot, s.b.id, relay_addr{}, no_via};
}

bool relay_session_table::kept(uint64_t session_id, uint64_t now_ms) const noexcept {
    uint32_t slot = session_index_.find(session_id);
    if (slot == no_slot) return false;
    const session_slot& s = sessions_[slot];
    return inactive(s, now_ms) && !idle(s, now_ms);
}

bool relay_session_table::evict_kept(uint64_t now_ms) noexcept {
    // A full table is rare and this is O(max_sessions), once per refused-otherwise bind.
    uint32_t oldest = no_slot;
    for (uint32_t i = 0; i < sessions_.size(); ++i) {
        const session_slot& s = sessions_[i];
        if (!s.used || !inactive(s, now_ms)) continue;
        if (oldest == no_slot || s.last_active_ms < sessions_[oldest].last_active_ms) oldest = i;
    }
    if (oldest == no_slot) return false;
    if (!idle(sessions_[oldest], now_ms)) ++evicted_kept_;  // else merely not swept yet
    erase_slot(oldest);
    return true;
}

bool relay_session_table::remove(uint64_t session_id) noexcept {
    uint32_t slot = session_index_.find(session_id);
    if (slot == no_slot) return false;
    erase_slot(slot);
    return true;
}

size_t relay_session_table::expire(uint64_t now_ms) noexcept {
    size_t n = 0;
    for (uint32_t i = 0; i < sessions_.size(); ++i) {
        if (!sessions_[i].used) continue;
        if (idle(sessions_[i], now_ms)) {
            erase_slot(i);
            ++n;
        } else if (half_idle(sessions_[i], now_ms)) {
            unbind_unheard(sessions_[i], now_ms);
        }
    }
    return n;
}

uint64_t relay_session_table::next_expiry(uint64_t now_ms) const noexcept {
    uint64_t next = std::numeric_limits<uint64_t>::max();
    for (const auto& s : sessions_) {
        if (!s.used) continue;
        // Its next change once inactive: the first bound side's keep running out (that side is
        // unbound, or the session goes with its last bound side).
        uint64_t at = s.last_active_ms + limits_.idle_timeout_ms + 1;
        uint64_t keep = heard_until(s.a);
        if (s.b.node != no_slot) keep = std::min(keep, heard_until(s.b));
        at = std::max(at, keep);
        next = std::min(next, std::max(at, now_ms));
    }
    return next;
}

bool relay_session_table::take_tokens(node_slot& n, size_t bytes, uint64_t now_ms) noexcept {
    if (now_ms > n.refilled_ms) {
        // Cap the elapsed time at the bucket depth before multiplying: no overflow after a long
        // idle period, and the bucket is full by then anyway.
        uint64_t elapsed = std::min(now_ms - n.refilled_ms, limits_.burst_ms + 1000);
        n.packet_tokens =
            std::min(packet_burst_, n.packet_tokens + elapsed * limits_.node_packets_per_s);
        n.byte_tokens = std::min(byte_burst_, n.byte_tokens + elapsed * limits_.node_bytes_per_s);
        n.refilled_ms = now_ms;
    }
    uint64_t byte_cost = uint64_t(bytes) * 1000;
    if (n.packet_tokens < 1000) {
        ++drops_[size_t(relay_drop::rate_limited_packets)];
        return false;
    }
    if (n.byte_tokens < byte_cost) {
        ++drops_[size_t(relay_drop::rate_limited_bytes)];
        return false;
    }
    n.packet_tokens -= 1000;
    n.byte_tokens -= byte_cost;
    return true;
}

const relay_addr* relay_session_table::route(uint64_t session_id, const relay_addr& from,
                                             size_t frame_bytes, uint64_t now_ms,
                                             uint16_t arrived_via, uint16_t* reply_via) noexcept {
    uint32_t slot = session_index_.find(session_id);
    if (slot == no_slot) {
        ++drops_[size_t(relay_drop::unknown_session)];
        return nullptr;
    }
    session_slot& s = sessions_[slot];
    side* src;
    side* dst;
    if (s.a.addr == from) {
        src = &s.a, dst = &s.b;
    } else if (s.b.node != no_slot && s.b.addr == from) {
        src = &s.b, dst = &s.a;
    } else {
        ++drops_[size_t(relay_drop::wrong_source)];
        return nullptr;
    }
    if (idle(s, now_ms)) {
        erase_slot(slot);
        ++drops_[size_t(relay_drop::expired)];
        return nullptr;
    }
    if (dst->node == no_slot) {
        ++drops_[size_t(relay_drop::not_established)];
        return nullptr;
    }
    if (!take_tokens(nodes_[src->node], frame_bytes, now_ms)) return nullptr;
    s.last_active_ms = std::max(s.last_active_ms, now_ms);
    if (src == &s.a) {
        ++s.packets_a_to_b;
        s.bytes_a_to_b += frame_bytes;
    } else {
        ++s.packets_b_to_a;
        s.bytes_b_to_a += frame_bytes;
    }
    ++routed_packets_;
    routed_bytes_ += frame_bytes;
    src->via = arrived_via;
    if (reply_via) *reply_via = dst->via;
    return &dst->addr;
}

bool relay_session_table::info(uint64_t session_id, relay_session_info& out) const noexcept {
    uint32_t slot = session_index_.find(session_id);
    if (slot == no_slot) return false;
    const session_slot& s = sessions_[slot];
    out.session_id = s.id;
    out.a = s.a.id;
    out.b = s.b.id;
    out.a_addr = s.a.addr;
    out.b_addr = s.b.node != no_slot ? s.b.addr : relay_addr{};
    out.last_active_ms = s.last_active_ms;
    out.packets_a_to_b = s.packets_a_to_b;
    out.bytes_a_to_b = s.bytes_a_to_b;
    out.packets_b_to_a = s.packets_b_to_a;
    out.bytes_b_to_a = s.bytes_b_to_a;
    return true;
}

size_t relay_session_table::node_sessions(const node_id& n) const noexcept {
    uint32_t slot = find_node(n);
    return slot == no_slot ? 0 : nodes_[slot].sessions;
}

}  // namespace mw::meshd
