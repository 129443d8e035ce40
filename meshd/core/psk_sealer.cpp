#include "meshd/core/psk_sealer.hpp"

#include <sodium.h>

#include <cstring>

#include "meshd/core/sodium_init.hpp"

namespace mw::meshd {

static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == psk_sealer::nonce_size);
static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == psk_sealer::tag_size);
static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == psk_sealer::key_size);

result<psk_sealer> psk_sealer::create(std::span<const uint8_t> psk) {
    if (psk.size() < min_psk_size) {
        return error(errc::invalid_argument, "cluster PSK is too short: need at least " +
                                                 std::to_string(min_psk_size) + " bytes, got " +
                                                 std::to_string(psk.size()));
    }
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
    psk_sealer s;
    crypto_generichash(s.key_.data(), s.key_.size(), reinterpret_cast<const uint8_t*>(key_label),
                       std::strlen(key_label), k, klen);
    sodium_memzero(long_key.data(), long_key.size());
    return s;
}

psk_sealer::~psk_sealer() {
    sodium_memzero(key_.data(), key_.size());
}

std::vector<uint8_t> psk_sealer::seal(uint8_t type, std::span<const uint8_t> plaintext,
                                      const aead_nonce& nonce) const {
    std::vector<uint8_t> out(header_size + nonce_size + plaintext.size() + tag_size);
    out[0] = magic0;
    out[1] = magic1;
    out[2] = version;
    out[3] = type;
    std::memcpy(out.data() + header_size, nonce.data(), nonce_size);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(out.data() + header_size + nonce_size, &clen,
                                               plaintext.data(), plaintext.size(), out.data(),
                                               header_size, nullptr, nonce.data(), key_.data());
    return out;
}

result<psk_sealer::opened> psk_sealer::open(std::span<const uint8_t> datagram) const {
    if (datagram.size() < overhead) {
        return error(errc::parse_error,
                     "control datagram too short (" + std::to_string(datagram.size()) + " bytes)");
    }
    if (datagram[0] != magic0 || datagram[1] != magic1) {
        return error(errc::parse_error, "not a meshwire datagram (bad magic)");
    }
    if (datagram[2] != version) {
        return error(errc::parse_error,
                     "unsupported protocol version " + std::to_string(datagram[2]));
    }
    opened o;
    o.type = datagram[3];
    std::memcpy(o.nonce.data(), datagram.data() + header_size, nonce_size);
    const uint8_t* c = datagram.data() + header_size + nonce_size;
    size_t clen = datagram.size() - header_size - nonce_size;
    o.plaintext.resize(clen - tag_size);
    unsigned long long mlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(o.plaintext.data(), &mlen, nullptr, c, clen,
                                                   datagram.data(), header_size, o.nonce.data(),
                                                   key_.data()) != 0) {
        return error(errc::protocol_error,
                     "control datagram failed authentication (wrong PSK or tampered)");
    }
    return o;
}

}  // namespace mw::meshd
