#include "meshd/core/record_digest.hpp"

#include <sodium.h>

namespace mw::meshd {

static_assert(ae_buckets == 32, "bucket_of() takes the top 5 bits");

std::pair<node_id, node_id> record_digest::bucket_range(size_t bucket) {
    std::array<uint8_t, node_id::size> lo{}, hi{};
    hi.fill(0xff);
    lo[0] = static_cast<uint8_t>(bucket << 3);
    hi[0] = static_cast<uint8_t>(bucket << 3 | 0x07);
    return {node_id(lo), node_id(hi)};
}

void record_digest::clear() noexcept {
    for (auto& a : acc_) a.fill(0);
    count_ = 0;
}

void record_digest::add(const node_id& id, uint64_t seq) {
    uint8_t buf[node_id::size + 8];
    std::copy(id.data(), id.data() + node_id::size, buf);
    for (int i = 0; i < 8; ++i) buf[node_id::size + i] = static_cast<uint8_t>(seq >> (56 - 8 * i));
    uint8_t h[16];
    crypto_generichash(h, sizeof h, buf, sizeof buf, nullptr, 0);
    auto& a = acc_[bucket_of(id)];
    for (size_t i = 0; i < a.size(); ++i) a[i] ^= h[i];
    ++count_;
}

ae_digest_bytes record_digest::digest() const {
    crypto_generichash_state st;
    ae_digest_bytes out{};
    crypto_generichash_init(&st, nullptr, 0, out.size());
    const uint8_t n[4] = {static_cast<uint8_t>(count_ >> 24), static_cast<uint8_t>(count_ >> 16),
                          static_cast<uint8_t>(count_ >> 8), static_cast<uint8_t>(count_)};
    crypto_generichash_update(&st, n, sizeof n);
    for (const auto& a : acc_) crypto_generichash_update(&st, a.data(), a.size());
    crypto_generichash_final(&st, out.data(), out.size());
    return out;
}

std::vector<uint64_t> record_digest::buckets() const {
    std::vector<uint64_t> v;
    v.reserve(acc_.size());
    for (const auto& a : acc_) {
        uint64_t x = 0;
        for (int i = 0; i < 8; ++i) x = x << 8 | a[i];
        v.push_back(x);
    }
    return v;
}

}  // namespace mw::meshd
