// A node's self-description, signed by the node: what the relays, mDNS and the DHT pass around.
//
// Canonical binary form (big-endian; the signature covers every byte before it):
//   u8   format (3; formats 1 and 2 carried an absolute expiry in unix ms and came from nodes
//        speaking control protocol v1, which this version does not accept: not read)
//   32   WireGuard public key            (node ID = BLAKE2b-256 of it)
//   32   Ed25519 signing public key      (must be the Ed25519 form of the WG key, node_identity)
//   u64  sequence number                 (higher wins; the node bumps it on every change; from
//                                         a persisted counter, not a clock: membership.hpp)
//   u32  lifetime, ms (1..86,400,000)    a duration, not an instant: each receiver counts it
//                                         from its own first receipt of this (node, seq), on its
//                                         own clock (record_store.hpp), so no wall clock is
//                                         compared anywhere
//   u8   name length (1..253), name      ([A-Za-z0-9._-], e.g. the Kubernetes node name)
//   u8   pod CIDR count (<= 8), each: u8 family (4|6), 4|16 address bytes, u8 prefix length
//        (host bits must be zero)
//   u8   endpoint count (<= 8), each: u8 family (4|6), 4|16 address bytes, u16 port (non-zero):
//        where the node's control socket answers (its LAN or public addresses)
//   u16  WireGuard listen port (0: unknown); a direct path uses endpoint address : this port
//   u8   flags: 0x01 = serving as a relay (its advertised addresses were dialled back by other
//        nodes); other bits must be zero
//   u8   relay count (<= 8), each: 32-byte node ID of a relay the node is attached to, u16 the
//        node's RTT to it in ms (0xffff: unknown) — relay election adds both ends' RTTs
//   64   Ed25519 signature over "meshwire peer record v1" || all bytes above
//
// Every field has exactly one encoding (fixed widths, zero host bits, no trailing bytes), so
// decode(encode(r)) == r and equal records have equal bytes: the store compares records by bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/ip_address.hpp"
#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "common/wireguard/wg_key.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/node_identity.hpp"

namespace mw::meshd {

struct peer_record {
    static constexpr uint8_t format = 3;
    static constexpr uint8_t oldest_format = 3;
    static constexpr uint8_t flag_relay = 0x01;
    static constexpr uint8_t known_flags = flag_relay;
    static constexpr size_t max_name = 253;
    static constexpr size_t max_cidrs = 8;
    static constexpr size_t max_endpoints = 8;
    static constexpr size_t max_relays = 8;
    static constexpr size_t signature_size = 64;
    // A record's lifetime: at least 1 ms, at most a day (so no record lives forever).
    static constexpr uint32_t max_lifetime_ms = 24u * 3600 * 1000;
    // Largest possible encoding (all lists full, v6 everywhere): fits one control datagram.
    static constexpr size_t max_encoded_size = 1 + 32 + 32 + 8 + 4 + 1 + max_name + 1 +
                                               max_cidrs * 18 + 1 + max_endpoints * 19 + 2 + 1 + 1 +
                                               max_relays * 34 + signature_size;
    static constexpr const char* signing_label = "meshwire peer record v1";

    std::string name;
    wg_key wg_public_key;
    signing_public_key signing_key{};
    std::vector<ip_prefix> pod_cidrs;
    std::vector<wg_endpoint> endpoints;  // control endpoints
    uint16_t wg_port = 0;
    uint8_t version = format;  // as decoded (and signed); our own records are always `format`
    uint8_t flags = 0;
    bool relay_serving() const { return (flags & flag_relay) != 0; }
    std::vector<node_id> relays;
    // Parallel to relays (empty = all unknown); 0xffff = unknown.
    static constexpr uint16_t unknown_rtt = 0xffff;
    std::vector<uint16_t> relay_rtt_ms;
    uint16_t relay_rtt(size_t i) const {
        return i < relay_rtt_ms.size() ? relay_rtt_ms[i] : unknown_rtt;
    }
    uint64_t seq = 0;
    // How long a receiver keeps this record after it first received it (see above).
    uint32_t lifetime_ms = 0;
    signature sig{};

    node_id id() const { return node_id::of(wg_public_key); }

    // Field limits and canonical forms (what encode() requires and decode() enforces).
    status validate() const;
    // The signed bytes (everything but the signature).
    result<std::vector<uint8_t>> encode_body() const;
    // body || signature: the form carried in HELLO and RECORDS.
    result<std::vector<uint8_t>> encode() const;
    // Structure only: a decoded record is well-formed but NOT trusted until verify() passes.
    static result<peer_record> decode(std::span<const uint8_t> bytes);

    // Sets the key fields from the identity and signs. The caller sets the other fields first.
    status sign(const node_identity& identity);
    // Trust check: the signing key is bound to the WG key (so the record speaks for node id()),
    // the signature is valid, and, when given, id() is the node ID the caller expects (e.g. the
    // sender of the HELLO carrying it). No clock: whether the record is still current is the
    // receiver's business (record_store counts its lifetime from first receipt).
    // keys_known_bound: the caller already verified this (wg_public_key, signing_key) pair
    // (the record store, for a newer record of a node it holds), so that check is skipped.
    status verify(const std::optional<node_id>& expected_id = {},
                  bool keys_known_bound = false) const;

    // Same signed content (signature excluded: Ed25519 is deterministic for honest signers).
    bool same_content(const peer_record& other) const;
};

}  // namespace mw::meshd
