#include "meshd/core/probe_frame.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "meshd/core/sodium_init.hpp"

namespace mw::meshd {

static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12);
static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == 16);
static_assert(16 + probe_plaintext_size + 16 == probe_frame_size);

namespace {

constexpr size_t header_size = 16;

void put_le32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put_le64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get_le32(const uint8_t* p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = v << 8 | p[i];
    return v;
}
uint64_t get_le64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
    return v;
}

void keyed_hash(uint8_t* out, size_t out_len, const symmetric_key& key, const char* label,
                const node_id* a, const node_id* b) {
    crypto_generichash_state st;
    crypto_generichash_init(&st, key.data(), key.size(), out_len);
    crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(label), std::strlen(label));
    if (a) crypto_generichash_update(&st, a->data(), node_id::size);
    if (b) crypto_generichash_update(&st, b->data(), node_id::size);
    crypto_generichash_final(&st, out, out_len);
    sodium_memzero(&st, sizeof st);
}

uint32_t probe_index(const symmetric_key& pair_key, const node_id& receiver) {
    uint8_t h[16];  // BLAKE2b's smallest output is 16 bytes
    keyed_hash(h, sizeof h, pair_key, "meshwire probe v1 index", &receiver, nullptr);
    return get_le32(h);
}

}  // namespace

probe_keys probe_keys::derive(const symmetric_key& pair_key, const node_id& self,
                              const node_id& peer) {
    ensure_sodium();
    probe_keys k;
    keyed_hash(k.send.data(), k.send.size(), pair_key, "meshwire probe v1 key", &self, &peer);
    keyed_hash(k.recv.data(), k.recv.size(), pair_key, "meshwire probe v1 key", &peer, &self);
    k.send_index = probe_index(pair_key, peer);
    k.recv_index = probe_index(pair_key, self);
    return k;
}

std::optional<uint32_t> peek_probe_index(std::span<const uint8_t> f) noexcept {
    if (f.size() < probe_frame_size || f.size() > probe_overhead + probe_max_plaintext_size ||
        f[0] != probe_frame_type || f[1] != 0 || f[2] != 0 || f[3] != 0)
        return std::nullopt;
    return get_le32(f.data() + 4);
}

std::vector<uint8_t> seal_probe(const probe_keys& keys, uint64_t counter,
                                const probe_frame_body& body) {
    ensure_sodium();
    const size_t plain =
        std::clamp<size_t>(body.size, probe_plaintext_size, probe_max_plaintext_size);
    std::vector<uint8_t> f(probe_overhead + plain);
    f[0] = probe_frame_type;
    put_le32(f.data() + 4, keys.send_index);
    put_le64(f.data() + 8, counter);
    std::vector<uint8_t> pt(plain);
    pt[0] = static_cast<uint8_t>(body.kind);
    put_le64(pt.data() + 1, body.request_id);
    put_le64(pt.data() + 9, body.wg_rx_bytes);
    put_le32(pt.data() + 17, body.wg_reading_age_ms);
    uint8_t nonce[12] = {};
    put_le64(nonce + 4, counter);
    unsigned long long clen = 0;
    crypto_aead_chacha20poly1305_ietf_encrypt(f.data() + header_size, &clen, pt.data(), pt.size(),
                                              f.data(), header_size, nullptr, nonce,
                                              keys.send.data());
    return f;
}

result<probe_frame_body> open_probe(const probe_keys& keys, std::span<const uint8_t> f) {
    auto idx = peek_probe_index(f);
    if (!idx || *idx != keys.recv_index) return error(errc::parse_error, "not a probe frame");
    ensure_sodium();
    uint8_t nonce[12] = {};
    std::memcpy(nonce + 4, f.data() + 8, 8);
    std::vector<uint8_t> pt(f.size() - probe_overhead);  // peek_probe_index bounded it
    unsigned long long plen = 0;
    if (crypto_aead_chacha20poly1305_ietf_decrypt(pt.data(), &plen, nullptr, f.data() + header_size,
                                                  f.size() - header_size, f.data(), header_size,
                                                  nonce, keys.recv.data()) != 0 ||
        plen != pt.size()) {
        return error(errc::protocol_error, "probe frame failed authentication");
    }
    probe_frame_body b;
    if (pt[0] != static_cast<uint8_t>(probe_frame_kind::ping) &&
        pt[0] != static_cast<uint8_t>(probe_frame_kind::pong))
        return error(errc::protocol_error, "probe frame of unknown kind");
    for (size_t i = 21; i < pt.size(); ++i) {
        if (pt[i] != 0) return error(errc::protocol_error, "probe frame padding not zero");
    }
    b.kind = static_cast<probe_frame_kind>(pt[0]);
    b.request_id = get_le64(pt.data() + 1);
    b.wg_rx_bytes = get_le64(pt.data() + 9);
    b.wg_reading_age_ms = get_le32(pt.data() + 17);
    b.size = static_cast<uint32_t>(pt.size());
    return b;
}

}  // namespace mw::meshd
