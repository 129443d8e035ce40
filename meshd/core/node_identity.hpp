// A node's identity: one 32-byte secret seed from which both of its keys are derived:
//   - an Ed25519 signing keypair (crypto_sign_seed_keypair), which signs the node's peer record;
//   - its WireGuard X25519 keypair, the Curve25519 form of that same Ed25519 key
//     (crypto_sign_ed25519_sk_to_curve25519, already clamped as `wg genkey` clamps).
// Why derived and not two independent keys: a record must prove that its signer owns the WG key
// the node ID is hashed from. With independent keys anyone holding the PSK could publish a record
// carrying a victim's WG public key (hence the victim's node ID) signed by their own key, with a
// higher sequence number, and hijack the victim's endpoints. With the derivation, a verifier
// checks wg_public == ed25519_pk_to_curve25519(signing_public) and only the owner of the seed can
// produce a valid signature for that node ID.
//
// Pure: the caller supplies the seed (from the OS RNG once, then from the state dir).
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "common/wireguard/wg_key.hpp"
#include "meshd/core/node_id.hpp"

namespace mw::meshd {

using signing_public_key = std::array<uint8_t, 32>;
using signature = std::array<uint8_t, 64>;
using identity_seed = std::array<uint8_t, 32>;

class node_identity {
public:
    static node_identity from_seed(const identity_seed& seed);

    node_identity(const node_identity&) = default;
    node_identity& operator=(const node_identity&) = default;
    ~node_identity();

    const node_id& id() const noexcept { return id_; }
    const wg_key& wg_public_key() const noexcept { return wg_public_; }
    // For the WireGuard device only; callers wipe() their copy when done.
    wg_key wg_private_key() const;
    const signing_public_key& signing_key() const noexcept { return signing_public_; }

    signature sign(std::span<const uint8_t> message) const;

    // Ed25519 verification (libsodium rejects non-canonical and small-order encodings).
    static bool verify(const signing_public_key& key, std::span<const uint8_t> message,
                       const signature& sig);
    // True when wg_public is the X25519 form of the Ed25519 key signing_public, i.e. both were
    // derived from one seed. False for invalid or small-order Ed25519 keys.
    static bool keys_bound(const wg_key& wg_public, const signing_public_key& signing_public);

private:
    node_identity() = default;

    std::array<uint8_t, 64> signing_secret_{};  // libsodium layout: seed || public key
    signing_public_key signing_public_{};
    wg_key wg_public_;
    node_id id_;
};

}  // namespace mw::meshd
