// A relayed pair's in-band probe (DESIGN §7, issue 17): sealed with the pair's key and shaped like
// a WireGuard transport data message, so that a relay cannot tell it from the WireGuard packets it
// carries by looking at a frame (before, probes were control datagrams starting "MW\x01": a relay
// could forward them and drop WireGuard, and the pair looked healthy while it carried nothing).
//
// The frame is the payload of a RELAY_DATA frame of the pair's session, 96 bytes:
//   0      u8   4 (WireGuard "transport data")
//   1..3        0, 0, 0 (reserved)
//   4..7   u32  receiver index, little-endian: the receiving node's probe index for this pair
//   8..15  u64  counter, little-endian: the AEAD nonce (random per frame; see below)
//   16..95      ChaCha20-Poly1305-IETF of the 64-byte plaintext (nonce = 4 zero bytes | counter,
//               WireGuard's own construction), associated data = bytes 0..15
// 96 bytes is what WireGuard sends for a 49-64 byte inner packet (16 header + 64 + 16 tag), the
// size of a TCP ACK with timestamps, the commonest small data frame; keepalives are 32.
//
// Padded frames (issue 15, the path MTU search of path_mtu.hpp): a PING may carry more plaintext,
// zero padding up to `size` bytes, so that the frame is exactly what WireGuard sends for an inner
// packet of `size` bytes (16 + size + 16, as a full-size data frame is). The receiver answers with
// an ordinary 96-byte PONG (only the forward direction is measured; the PONG echoes the request
// id, and the sender knows the size it asked). A node from before padded frames does not take
// them for probes (their size is not 96) and hands them to WireGuard, which drops them: no PONG,
// and path_mtu.hpp's user applies nothing until a padded probe was answered once.
//
// Plaintext (64 bytes, or `size` when padded): kind (1 PING, 2 PONG), request id (u64, random; a
// PONG echoes its PING's), then what the sender's WireGuard reports for the receiver: rx_bytes
// (u64) and the age of that reading in ms (u32, UINT32_MAX: none), and zero padding. The receiver
// uses the rx_bytes to see whether its WireGuard traffic reaches the peer (relay_election: "relays
// judged by what they carry").
//
// Keys (probe_keys): per direction, BLAKE2b-256 keyed with the pair key (pair_key.hpp) over
// "meshwire probe v1 key" | sender ID | receiver ID; the receiver index is the first 4 bytes of
// BLAKE2b keyed with the pair key over "meshwire probe v1 index" | receiver ID. Both ends compute
// all of it without talking; a PSK holder outside the pair can neither read, forge nor redirect a
// probe. A frame reflected back to its sender fails to open (the other direction's key).
//
// Why a fixed, derived receiver index: the receiving relay proxy must tell its probes from
// WireGuard packets on the hot path without keys or crypto; one 4-byte compare (and the size) does,
// and only frames that pass it are opened. A WireGuard session picks its own random index, so a
// collision is a 2^-32 chance per handshake; a colliding WireGuard frame fails to open and is
// counted (never taken as a probe). What a relay that keeps state can still do: notice that one
// index of a session never changes across WireGuard's 2-minute rekeys and carries about one frame
// a second, and forward only those. That is why relays are also judged by WireGuard's own
// progress (the rx_bytes in the probes), which a relay cannot fake without carrying the data.
//
// Why a random 64-bit counter: the key is static per pair (the nodes' static keys), so a counter
// would repeat after a restart (and a repeated nonce breaks ChaCha20-Poly1305). Random nonces
// repeat after ~2^32 frames per direction (at ~2 probes/s, decades). A relay can see that the
// counter is large where a WireGuard session's counts up from 0: the same caveat as the index.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/result.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/pair_key.hpp"

namespace mw::meshd {

constexpr size_t probe_frame_size = 96;
constexpr size_t probe_plaintext_size = 64;
constexpr size_t probe_overhead = probe_frame_size - probe_plaintext_size;  // header + tag
// The largest padded probe: any tunnel MTU over a 1500-byte underlay. Bounded because the
// receiving daemon queues probes in fixed buffers (control_inbox); a larger interface MTU (a
// jumbo underlay) turns the path MTU search off (meshd_runtime).
constexpr size_t probe_max_plaintext_size = 1500;
constexpr uint8_t probe_frame_type = 4;  // WireGuard transport data

enum class probe_frame_kind : uint8_t { ping = 1, pong = 2 };

struct probe_frame_body {
    probe_frame_kind kind = probe_frame_kind::ping;
    uint64_t request_id = 0;
    // The sender's WireGuard counters for the receiver: bytes received from it, and how old that
    // reading was when the frame was sealed (no_reading: WireGuard not read yet).
    uint64_t wg_rx_bytes = 0;
    uint32_t wg_reading_age_ms = no_reading;
    static constexpr uint32_t no_reading = UINT32_MAX;
    // Plaintext bytes (the inner packet size the frame stands for): sealed padded to it (at
    // least probe_plaintext_size), and what open_probe found.
    uint32_t size = probe_plaintext_size;

    bool operator==(const probe_frame_body&) const = default;
};

// One pair's probe keys, seen from one end.
struct probe_keys {
    symmetric_key send{}, recv{};
    uint32_t send_index = 0;  // the receiver index of frames we send (the peer's probe index)
    uint32_t recv_index = 0;  // ours: frames carrying it are tried as probes

    static probe_keys derive(const symmetric_key& pair_key, const node_id& self,
                             const node_id& peer);
};

// The receiver index of a WireGuard-shaped frame of a probe's size (96 bytes up to a padded
// probe's largest; nullopt: not that shape). Cheap: no crypto; the relay proxy calls it per frame.
std::optional<uint32_t> peek_probe_index(std::span<const uint8_t> frame) noexcept;

// `counter` is the nonce: random per frame (the caller's RNG). The frame has probe_overhead +
// max(body.size, probe_plaintext_size) bytes (body.size at most probe_max_plaintext_size).
std::vector<uint8_t> seal_probe(const probe_keys& keys, uint64_t counter,
                                const probe_frame_body& body);

// Fails (errc::parse_error) on a wrong shape or index, (errc::protocol_error) on a failed
// authentication, an unknown kind or non-zero padding.
result<probe_frame_body> open_probe(const probe_keys& keys, std::span<const uint8_t> frame);

}  // namespace mw::meshd
