#include "meshd/core/source_buckets.hpp"

#include "meshd/core/sodium_init.hpp"

#include <sodium.h>

#include <algorithm>
#include <bit>
#include <cstring>

namespace mw::meshd {

namespace {
// Slots looked at per newcomer for one to reuse: bounded work per datagram.
constexpr size_t max_scan = 8;
}  // namespace

source_buckets::source_buckets(const source_bucket_config& cfg)
    : cfg_(cfg),
      cap_(std::max<uint64_t>(cfg.burst, 1) * std::max<uint64_t>(cfg.period_ms, 1)),
      shared_cap_(std::max<uint64_t>(cfg.shared_burst, 1) * std::max<uint64_t>(cfg.period_ms, 1)),
      slots_(std::max<size_t>(cfg.max_sources, 1)),
      index_(std::max<size_t>(cfg.max_sources, 1), cfg.hash_seed) {
    cfg_.period_ms = std::max<uint64_t>(cfg_.period_ms, 1);
    free_.reserve(slots_.size());
    for (size_t i = slots_.size(); i > 0; --i) free_.push_back(uint32_t(i - 1));
    shared_.units = shared_cap_;
    static_assert(sizeof hash_key_ == crypto_shorthash_KEYBYTES);
    uint64_t k[2] = {cfg.hash_seed, ~cfg.hash_seed * 0x9e3779b97f4a7c15ull};
    std::memcpy(hash_key_, k, sizeof hash_key_);
    ensure_sodium();
}

uint64_t source_buckets::key_of(std::span<const uint8_t> bytes) const noexcept {
    uint8_t out[crypto_shorthash_BYTES];
    crypto_shorthash(out, bytes.data(), bytes.size(), hash_key_);
    uint64_t k;
    std::memcpy(&k, out, sizeof k);
    return k;
}

uint64_t source_buckets::key_of(const ip_address& a) const noexcept {
    const uint8_t* b = a.data();
    if (a.is_v4()) return key_of(std::span<const uint8_t>(b, 4));
    // An IPv4 peer on a dual-stack socket (::ffff:a.b.c.d) is that IPv4 address, not a /64.
    static constexpr uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(b, mapped, sizeof mapped) == 0)
        return key_of(std::span<const uint8_t>(b + 12, 4));
    return key_of(std::span<const uint8_t>(b, 8));
}

size_t source_buckets::memory_bound(const source_bucket_config& cfg) noexcept {
    size_t n = std::max<size_t>(cfg.max_sources, 1);
    // slots + free list + the index (kept at most half full, 16-byte entries).
    return n * (sizeof(slot) + sizeof(uint32_t)) + std::bit_ceil(std::max<size_t>(2 * n, 8)) * 16;
}

void source_buckets::refill(bucket& b, uint64_t rate, uint64_t cap, uint64_t now_ms) noexcept {
    if (now_ms <= b.refilled_ms) return;  // the clock went back or did not move
    uint64_t dt = now_ms - b.refilled_ms;
    b.refilled_ms = now_ms;
    // dt * rate cannot overflow for any sane rate within the cap's reach; clamp dt first.
    uint64_t need = cap - std::min(cap, b.units);
    if (rate == 0) return;
    if (dt >= need / rate + 1) {
        b.units = cap;
    } else {
        b.units = std::min(cap, b.units + dt * rate);
    }
}

bool source_buckets::reusable(const slot& s, uint64_t now_ms) const noexcept {
    if (now_ms < s.last_ms + cfg_.idle_ms) return false;
    bucket b = s.b;
    refill(b, cfg_.rate, cap_, now_ms);
    return b.units >= cap_;
}

uint32_t source_buckets::find_slot(uint64_t now_ms) noexcept {
    if (!free_.empty()) {
        uint32_t s = free_.back();
        free_.pop_back();
        return s;
    }
    for (size_t i = 0; i < std::min(max_scan, slots_.size()); ++i) {
        size_t s = hand_;
        hand_ = (hand_ + 1) % slots_.size();
        if (slots_[s].used && reusable(slots_[s], now_ms)) {
            index_.erase(slots_[s].key);
            slots_[s].used = false;
            return uint32_t(s);
        }
    }
    return fixed_u64_map::none;
}

source_buckets::verdict source_buckets::take(uint64_t key, uint64_t now_ms) noexcept {
    const uint64_t cost = cfg_.period_ms;
    uint32_t s = index_.find(key);
    if (s != fixed_u64_map::none) {
        slots_[s].last_ms = std::max(slots_[s].last_ms, now_ms);
        bucket& b = slots_[s].b;
        refill(b, cfg_.rate, cap_, now_ms);
        if (b.units < cost) return verdict::limited;
        b.units -= cost;
        return verdict::allowed;
    }
    refill(shared_, cfg_.shared_rate, shared_cap_, now_ms);
    if (shared_.units < cost) return verdict::shared_limited;
    shared_.units -= cost;
    s = find_slot(now_ms);
    if (s == fixed_u64_map::none) return verdict::allowed;  // paid by the shared bucket
    slot& n = slots_[s];
    n.key = key;
    n.used = true;
    n.last_ms = now_ms;
    // The newcomer paid its first token from the shared bucket; its own bucket starts full.
    n.b.units = cap_;
    n.b.refilled_ms = now_ms;
    (void)index_.insert(key, s);  // sized like slots_: cannot fail
    return verdict::allowed;
}

}  // namespace mw::meshd
