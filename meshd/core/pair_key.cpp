#include "meshd/core/pair_key.hpp"

#include <sodium.h>

#include <cstring>

#include "meshd/core/sodium_init.hpp"

namespace mw::meshd {

symmetric_key cluster_key(std::span<const uint8_t> psk, const char* label) {
    ensure_sodium();
    // crypto_generichash takes keys of at most 64 bytes; longer PSKs are hashed down first
    // (still secret, still uniformly distributed).
    std::array<uint8_t, crypto_generichash_KEYBYTES_MAX> long_key{};
    const uint8_t* k = psk.data();
    size_t klen = psk.size();
    if (klen > crypto_generichash_KEYBYTES_MAX) {
        crypto_generichash(long_key.data(), long_key.size(), psk.data(), psk.size(), nullptr, 0);
        k = long_key.data();
        klen = long_key.size();
    }
    symmetric_key out{};
    crypto_generichash(out.data(), out.size(), reinterpret_cast<const uint8_t*>(label),
                       std::strlen(label), k, klen);
    sodium_memzero(long_key.data(), long_key.size());
    return out;
}

result<symmetric_key> pair_key(const symmetric_key& pair_cluster_key, const wg_key& own_private,
                               const wg_key& own_public, const wg_key& peer_public) {
    ensure_sodium();
    std::array<uint8_t, crypto_scalarmult_BYTES> shared{};
    if (crypto_scalarmult(shared.data(), own_private.data(), peer_public.data()) != 0) {
        return error(errc::protocol_error, "peer public key is a low-order point");
    }
    const bool own_first = std::memcmp(own_public.data(), peer_public.data(), wg_key::size) < 0;
    const wg_key& lo = own_first ? own_public : peer_public;
    const wg_key& hi = own_first ? peer_public : own_public;
    crypto_generichash_state st;
    crypto_generichash_init(&st, pair_cluster_key.data(), pair_cluster_key.size(), 32);
    crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(pair_key_label),
                              std::strlen(pair_key_label));
    crypto_generichash_update(&st, shared.data(), shared.size());
    crypto_generichash_update(&st, lo.data(), wg_key::size);
    crypto_generichash_update(&st, hi.data(), wg_key::size);
    symmetric_key out{};
    crypto_generichash_final(&st, out.data(), out.size());
    sodium_memzero(shared.data(), shared.size());
    sodium_memzero(&st, sizeof st);
    return out;
}

}  // namespace mw::meshd
