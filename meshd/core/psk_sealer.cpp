#include "meshd/core/psk_sealer.hpp"

#include <sodium.h>

#include <cstring>

#include "meshd/core/pair_key.hpp"
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
    psk_sealer s;
    s.key_ = cluster_key(psk, key_label);
    s.pair_key_ = cluster_key(psk, pair_key_label);
    s.anon_key_ = cluster_key(psk, anon_label);
    return s;
}

psk_sealer::~psk_sealer() {
    sodium_memzero(key_.data(), key_.size());
    sodium_memzero(pair_key_.data(), pair_key_.size());
    sodium_memzero(anon_key_.data(), anon_key_.size());
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
    if (datagram[2] == previous_version) {
        return error(errc::unsupported, "control protocol version 1 (a node not upgraded yet)");
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
