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
// Key rotation (issue 14 §2): a sealer holds one sealing key (psk.path) and up to
// max_accepted more keys it opens with (psk.acceptPaths), tried in that order. Each key is a
// slot with its own derived keys; open() says which slot opened a datagram, so the pair tag is
// checked under that slot's keys. Why the bound: a datagram that fails costs one AEAD attempt
// per slot (~1 µs for a control-sized datagram), so a flood of forgeries costs at most
// 1 + max_accepted (+1 for the retired key's check, below) times what it cost with one key.
// Two accepted keys are enough for a roll (old and new) with one spare.
// The last key dropped from a sealer (retire_from) is kept as a verifier only: a datagram that
// no slot opens is tried against it once, so the receiver can say "sealed with a retired
// cluster key" (a node left behind) apart from noise. It never makes a datagram accepted.
//
// open() never throws and never answers: every failure is an error value the caller counts.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
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

    // At most this many keys besides the sealing key (see above for the cost).
    static constexpr size_t max_accepted = 2;
    static constexpr const char* fingerprint_label = "meshwire key fingerprint v1";

    static result<psk_sealer> create(std::span<const uint8_t> psk);
    // `seal_psk` seals and opens; each of `accepted` only opens. A key given twice is kept once.
    static result<psk_sealer> create(std::span<const uint8_t> seal_psk,
                                     const std::vector<std::span<const uint8_t>>& accepted);
    // 8 hex digits naming a key in logs and metrics: BLAKE2b keyed with it over
    // fingerprint_label. One-way; says which key, never what it is.
    static std::string fingerprint_of(std::span<const uint8_t> psk);

    // Keeps, as the retired verifier, the first key of `previous` this sealer no longer holds
    // (else `previous`'s own retired verifier, if this sealer does not hold that one).
    void retire_from(const psk_sealer& previous);

    psk_sealer(const psk_sealer&) = default;
    psk_sealer& operator=(const psk_sealer&) = default;
    // Movable, or every std::move of a sealer copied it: a move hands the key buffer over (one
    // copy fewer to wipe); the moved-from sealer still wipes what it kept when destroyed.
    psk_sealer(psk_sealer&&) noexcept = default;
    psk_sealer& operator=(psk_sealer&&) noexcept = default;
    ~psk_sealer();

    std::vector<uint8_t> seal(uint8_t type, std::span<const uint8_t> plaintext,
                              const aead_nonce& nonce) const;

    struct opened {
        uint8_t type = 0;
        size_t slot = 0;  // 0: the sealing key; 1..: the accepted keys, in order
        aead_nonce nonce{};
        std::vector<uint8_t> plaintext;
    };
    // Fails (errc::parse_error) on a short datagram, a wrong magic or an unknown version,
    // (errc::unsupported) on a version-1 datagram, and (errc::protocol_error) on a failed
    // authentication: wrong PSK, tampering, wrong type byte.
    // Slots are tried in order: the sealing key first (the common case costs one attempt).
    result<opened> open(std::span<const uint8_t> datagram) const;
    // Whether a datagram no slot opens was sealed with the retired key (see above).
    bool sealed_with_retired(std::span<const uint8_t> datagram) const;

    // cluster_key(psk, pair_key_label): the key pair_key() mixes into every pair's key.
    const std::array<uint8_t, key_size>& pair_cluster_key(size_t slot = 0) const noexcept {
        return slots_[slot].pair_key;
    }
    // cluster_key(psk, anon_label): keys the tag of a PING that names no recipient.
    const std::array<uint8_t, key_size>& anon_key(size_t slot = 0) const noexcept {
        return slots_[slot].anon_key;
    }
    size_t slots() const noexcept { return slots_.size(); }
    const std::string& fingerprint(size_t slot = 0) const noexcept {
        return slots_[slot].fingerprint;
    }
    // "" when there is no retired verifier.
    const std::string& retired_fingerprint() const noexcept { return retired_fingerprint_; }

private:
    struct slot {
        std::array<uint8_t, key_size> key{};
        std::array<uint8_t, key_size> pair_key{};
        std::array<uint8_t, key_size> anon_key{};
        std::string fingerprint;
    };
    psk_sealer() = default;
    static slot make_slot(std::span<const uint8_t> psk);
    bool open_with(const std::array<uint8_t, key_size>& key, std::span<const uint8_t> datagram,
                   opened& o) const;
    std::vector<slot> slots_;
    std::array<uint8_t, key_size> retired_{};
    std::string retired_fingerprint_;
};

}  // namespace mw::meshd
