#include "meshd/core/node_identity.hpp"

#include <sodium.h>

#include "meshd/core/sodium_init.hpp"

namespace mw::meshd {

node_identity node_identity::from_seed(const identity_seed& seed) {
    ensure_sodium();
    node_identity n;
    crypto_sign_seed_keypair(n.signing_public_.data(), n.signing_secret_.data(), seed.data());
    std::array<uint8_t, 32> wg_pub{};
    // Cannot fail for a key derived from a seed (never small order); a zero key would show it.
    if (crypto_sign_ed25519_pk_to_curve25519(wg_pub.data(), n.signing_public_.data()) != 0) {
        wg_pub.fill(0);
    }
    n.wg_public_ = wg_key(wg_pub);
    n.id_ = node_id::of(n.wg_public_);
    return n;
}

node_identity::~node_identity() {
    sodium_memzero(signing_secret_.data(), signing_secret_.size());
}

wg_key node_identity::wg_private_key() const {
    std::array<uint8_t, 32> priv{};
    crypto_sign_ed25519_sk_to_curve25519(priv.data(), signing_secret_.data());
    wg_key k(priv);
    sodium_memzero(priv.data(), priv.size());
    return k;
}

signature node_identity::sign(std::span<const uint8_t> message) const {
    signature sig{};
    crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(),
                         signing_secret_.data());
    return sig;
}

bool node_identity::verify(const signing_public_key& key, std::span<const uint8_t> message,
                           const signature& sig) {
    ensure_sodium();
    return crypto_sign_verify_detached(sig.data(), message.data(), message.size(), key.data()) == 0;
}

bool node_identity::keys_bound(const wg_key& wg_public, const signing_public_key& signing_public) {
    ensure_sodium();
    std::array<uint8_t, 32> expect{};
    if (crypto_sign_ed25519_pk_to_curve25519(expect.data(), signing_public.data()) != 0) {
        return false;
    }
    return sodium_memcmp(expect.data(), wg_public.data(), 32) == 0;
}

}  // namespace mw::meshd
