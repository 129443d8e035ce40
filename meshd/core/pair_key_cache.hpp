// The pair keys (pair_key.hpp) of the nodes this node talks to, by node ID: computed on a miss
// (one X25519, ~50 µs) and kept in a bounded table that forgets the least recently used peer.
//
// Why a cache: every control message in and out carries a pair tag keyed by the pair key, and a
// relay exchanges several per second with each of hundreds of nodes. Why bounded: any PSK holder
// can present new public keys at will (identities cost nothing); each one costs us an X25519 and
// one slot, and pushes out the least recently used peer, whose key is then computed again when
// it next speaks. Nothing here trusts a key: a key is only as good as the tag it verifies.
//
// Pure: no clock (recency is an internal use counter).
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>

#include "common/result.hpp"
#include "common/wireguard/wg_key.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/pair_key.hpp"

namespace mw::meshd {

class pair_key_cache {
public:
    static constexpr size_t default_capacity = 4096;

    // `pair_cluster_key` is psk_sealer::pair_cluster_key(); own keys are this node's WireGuard
    // (X25519) pair. The private key is wiped on destruction.
    pair_key_cache(const symmetric_key& pair_cluster_key, const wg_key& own_private,
                   const wg_key& own_public, size_t capacity = default_capacity);
    pair_key_cache(const pair_key_cache&) = delete;
    pair_key_cache& operator=(const pair_key_cache&) = delete;
    ~pair_key_cache();

    // The pair key with the holder of `peer_public` (computed on a miss). Fails
    // (errc::protocol_error) for a low-order public key; our own key is refused as well (a
    // datagram "from" us is a loop or a forgery). The reference is valid until the next call.
    result<const symmetric_key*> key_for(const wg_key& peer_public);
    // The public key of a node seen before (by key_for or remember), if still in the table.
    std::optional<wg_key> public_key_of(const node_id& id) const;

    size_t size() const noexcept { return by_id_.size(); }
    size_t capacity() const noexcept { return capacity_; }
    // X25519 computations so far (misses), for tests and the cost of key churn.
    uint64_t computed() const noexcept { return computed_; }

private:
    struct entry {
        node_id id;
        wg_key public_key;
        symmetric_key key;
    };
    symmetric_key cluster_key_;
    wg_key own_private_;
    wg_key own_public_;
    node_id own_id_;
    size_t capacity_;
    uint64_t computed_ = 0;
    std::list<entry> lru_;  // most recently used first
    std::unordered_map<node_id, std::list<entry>::iterator> by_id_;
};

}  // namespace mw::meshd
