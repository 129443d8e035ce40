// Seals and opens control datagrams with XChaCha20-Poly1305-IETF under a key derived from the
// cluster PSK. Datagram layout (all control messages; RELAY_DATA frames are not sealed):
//
//   offset  size  field
//   0       2     magic "MW" (0x4d 0x57)
//   2       1     version (2; a version-1 datagram is refused as errc::unsupported, so the
//                 caller can count a not-yet-upgraded peer apart from noise)
//   3       1     message type
//   4       24    nonce (from the caller's RNG; XChaCha's 192-bit nonce makes random nonces safe)
//   28      n+16  ciphertext of the n-byte plaintext, then the Poly1305 tag
//
// The 4-byte header (magic, version, type) is the associated data, so a type byte cannot be
// swapped onto another message's body. The AEAD key is BLAKE2b-256 keyed with the PSK over the
// label "meshwire control v2": the raw PSK never keys the cipher, and each protocol version
// gets an unrelated key from the same PSK.
//
// The PSK is only the outer filter (non-members get nothing, and metadata stays encrypted):
// every PSK holder can open and seal. Who sent a message is proven by the pair tag inside the
// plaintext (wire_codec, keyed by pair_key); the sealer also keeps the two PSK-derived keys that
// tag needs, so the raw PSK is not kept anywhere.
//
// open() never throws and never answers: every failure is an error value the caller counts.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "common/result.hpp"

namespace mw::meshd {

using aead_nonce = std::array<uint8_t, 24>;

class psk_sealer {
public:
    static constexpr uint8_t magic0 = 0x4d;  // 'M'
    static constexpr uint8_t magic1 = 0x57;  // 'W'
    static constexpr uint8_t version = 2;
    static constexpr uint8_t previous_version = 1;
    static constexpr size_t header_size = 4;
    static constexpr size_t nonce_size = 24;
    static constexpr size_t tag_size = 16;
    static constexpr size_t overhead = header_size + nonce_size + tag_size;  // 44
    static constexpr size_t key_size = 32;
    // A PSK shorter than this is refused: it would be guessable offline from one captured packet.
    static constexpr size_t min_psk_size = 16;
    static constexpr const char* key_label = "meshwire control v2";
    // Keys the pair tag of a first-contact PING (no recipient yet): PSK-only, see wire_codec.
    static constexpr const char* anon_label = "meshwire anon v2";

    static result<psk_sealer> create(std::span<const uint8_t> psk);

    psk_sealer(const psk_sealer&) = default;
    psk_sealer& operator=(const psk_sealer&) = default;
    ~psk_sealer();

    std::vector<uint8_t> seal(uint8_t type, std::span<const uint8_t> plaintext,
                              const aead_nonce& nonce) const;

    struct opened {
        uint8_t type = 0;
        aead_nonce nonce{};
        std::vector<uint8_t> plaintext;
    };
    // Fails (errc::parse_error) on a short datagram, a wrong magic or an unknown version,
    // (errc::unsupported) on a version-1 datagram, and (errc::protocol_error) on a failed
    // authentication: wrong PSK, tampering, wrong type byte.
    result<opened> open(std::span<const uint8_t> datagram) const;

    // cluster_key(psk, pair_key_label): the key pair_key() mixes into every pair's key.
    const std::array<uint8_t, key_size>& pair_cluster_key() const noexcept { return pair_key_; }
    // cluster_key(psk, anon_label): keys the tag of a PING that names no recipient.
    const std::array<uint8_t, key_size>& anon_key() const noexcept { return anon_key_; }

private:
    psk_sealer() = default;
    std::array<uint8_t, key_size> key_{};
    std::array<uint8_t, key_size> pair_key_{};
    std::array<uint8_t, key_size> anon_key_{};
};

}  // namespace mw::meshd
