// Keys derived from the cluster PSK and from two nodes' static keys.
//
// cluster_key(): a 32-byte key for one purpose (`label`), BLAKE2b-256 keyed with the PSK: the raw
// PSK never keys a cipher, and each protocol version or use gets an unrelated key.
//
// pair_key(): the key only two nodes of one cluster can compute, each from its own X25519 private
// key (the WireGuard key node_identity derives from the seed) and the other's public key:
//   BLAKE2b-256(key = cluster_key(psk, "meshwire pair v2"),
//               "meshwire pair v2" | X25519(own private, peer public) | the two public keys in
//               ascending byte order)
// Both ends get the same bytes; a PSK holder without either private key cannot. It authenticates
// control messages per pair (issue 17: one stolen PSK must not let a node speak for others) and
// seals what a pair sends through a relay. An X25519 costs ~50 µs: callers cache the result per
// peer key.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "common/result.hpp"
#include "common/wireguard/wg_key.hpp"

namespace mw::meshd {

using symmetric_key = std::array<uint8_t, 32>;

constexpr const char* pair_key_label = "meshwire pair v2";

// Any PSK length (the length policy is the caller's); PSKs over 64 bytes are hashed first.
symmetric_key cluster_key(std::span<const uint8_t> psk, const char* label);

// Fails (errc::protocol_error) when the peer's public key is a low-order point (the shared
// secret would be all zero, known to everyone).
result<symmetric_key> pair_key(const symmetric_key& pair_cluster_key, const wg_key& own_private,
                               const wg_key& own_public, const wg_key& peer_public);

}  // namespace mw::meshd
