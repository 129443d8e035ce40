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
    return create(psk, {});
}

std::string psk_sealer::fingerprint_of(std::span<const uint8_t> psk) {
    auto k = cluster_key(psk, fingerprint_label);
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < 4; ++i) {
        out += hex[k[i] >> 4];
        out += hex[k[i] & 15];
    }
    sodium_memzero(k.data(), k.size());
    return out;
}

psk_sealer::slot psk_sealer::make_slot(std::span<const uint8_t> psk) {
    slot s;
    s.key = cluster_key(psk, key_label);
    s.pair_key = cluster_key(psk, pair_key_label);
    s.anon_key = cluster_key(psk, anon_label);
    s.fingerprint = fingerprint_of(psk);
    return s;
}

result<psk_sealer> psk_sealer::create(std::span<const uint8_t> seal_psk,
                                      const std::vector<std::span<const uint8_t>>& accepted) {
    auto too_short = [](std::span<const uint8_t> k, const char* which) {
        return error(errc::invalid_argument, std::string(which) + " is too short: need at least " +
                                                 std::to_string(min_psk_size) + " bytes, got " +
                                                 std::to_string(k.size()));
    };
    if (seal_psk.size() < min_psk_size) return too_short(seal_psk, "cluster PSK");
    psk_sealer s;
    s.slots_.push_back(make_slot(seal_psk));
    for (auto k : accepted) {
        if (k.size() < min_psk_size) return too_short(k, "accepted cluster PSK");
        auto sl = make_slot(k);
        bool dup = false;
        for (const auto& o : s.slots_)
            dup = dup || sodium_memcmp(o.key.data(), sl.key.data(), key_size) == 0;
        if (!dup) s.slots_.push_back(sl);
        sodium_memzero(sl.key.data(), key_size);
        sodium_memzero(sl.pair_key.data(), key_size);
        sodium_memzero(sl.anon_key.data(), key_size);
    }
    if (s.slots_.size() > 1 + max_accepted) {
        return error(errc::invalid_argument,
                     "too many accepted cluster keys: at most " + std::to_string(max_accepted) +
                         " besides the sealing key (each costs one more decryption per forged "
                         "datagram)");
    }
    return s;
}

void psk_sealer::retire_from(const psk_sealer& previous) {
    auto held = [&](const std::array<uint8_t, key_size>& k) {
        for (const auto& s : slots_)
            if (sodium_memcmp(s.key.data(), k.data(), key_size) == 0) return true;
        return false;
    };
    for (const auto& p : previous.slots_) {
        if (!held(p.key)) {
            retired_ = p.key;
            retired_fingerprint_ = p.fingerprint;
            return;
        }
    }
    if (!previous.retired_fingerprint_.empty() && !held(previous.retired_)) {
        retired_ = previous.retired_;
        retired_fingerprint_ = previous.retired_fingerprint_;
    }
}

psk_sealer::~psk_sealer() {
    for (auto& s : slots_) {
        sodium_memzero(s.key.data(), s.key.size());
        sodium_memzero(s.pair_key.data(), s.pair_key.size());
        sodium_memzero(s.anon_key.data(), s.anon_key.size());
    }
    sodium_memzero(retired_.data(), retired_.size());
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
    crypto_aead_xchacha20poly1305_ietf_encrypt(
        out.data() + header_size + nonce_size, &clen, plaintext.data(), plaintext.size(),
        out.data(), header_size, nullptr, nonce.data(), slots_[0].key.data());
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
    for (size_t i = 0; i < slots_.size(); ++i) {
        if (open_with(slots_[i].key, datagram, o)) {
            o.slot = i;
            return o;
        }
    }
    return error(errc::protocol_error,
                 "control datagram failed authentication (wrong PSK or tampered)");
}

bool psk_sealer::open_with(const std::array<uint8_t, key_size>& key,
                           std::span<const uint8_t> datagram, opened& o) const {
    const uint8_t* c = datagram.data() + header_size + nonce_size;
    size_t clen = datagram.size() - header_size - nonce_size;
    o.plaintext.resize(clen - tag_size);
    unsigned long long mlen = 0;
    return crypto_aead_xchacha20poly1305_ietf_decrypt(
               o.plaintext.data(), &mlen, nullptr, c, clen, datagram.data(), header_size,
               datagram.data() + header_size, key.data()) == 0;
}

bool psk_sealer::sealed_with_retired(std::span<const uint8_t> datagram) const {
    if (retired_fingerprint_.empty() || datagram.size() < overhead || datagram[0] != magic0 ||
        datagram[1] != magic1 || datagram[2] != version) {
        return false;
    }
    opened o;
    return open_with(retired_, datagram, o);
}

}  // namespace mw::meshd
