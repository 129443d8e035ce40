// Token buckets per source (an address, or any 64-bit key the caller derives), in a table of fixed
// size, for admission decisions that an attacker must not be able to turn into unbounded memory or
// into starving the honest (issue 17): control datagrams before the AEAD, new identities a relay
// admits per source address.
//
// Each source in the table has its own bucket: `rate` tokens per `period_ms`, at most `burst`.
// A source not in the table first pays a token from one shared bucket (the newcomers' bucket:
// `shared_rate` per period, `shared_burst`); only then does it get a slot: a free one, or one
// whose source has been silent for idle_ms and whose bucket has refilled (it holds nothing worth
// keeping). So a flood from spoofed, ever-new source addresses costs at most the shared rate and
// never evicts a source that keeps sending (honest peers probe at least every few seconds), while
// a few heavy sources are held to their own rate each. With no slot to give, a newcomer that paid
// the shared bucket is still admitted (it simply has no slot yet).
//
// Pure and fixed-size: time is passed in (ms, any monotonic origin); all memory is reserved at
// construction and allow() allocates nothing. Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/ip_address.hpp"
#include "meshd/core/fixed_u64_map.hpp"

namespace mw::meshd {

struct source_bucket_config {
    uint64_t rate = 100;  // tokens per period_ms, per source
    uint64_t burst = 200;
    uint64_t shared_rate = 100;  // tokens per period_ms, for all sources not in the table
    uint64_t shared_burst = 200;
    uint64_t period_ms = 1000;
    size_t max_sources = 1024;
    uint64_t idle_ms = 10'000;  // a source silent this long may lose its slot to a newcomer
    uint64_t hash_seed = 0;     // the index's hash seed (from the caller's RNG)
};

class source_buckets {
public:
    explicit source_buckets(const source_bucket_config& cfg);

    enum class verdict : uint8_t {
        allowed,         // the source's bucket (or, new, the shared one) paid
        limited,         // the source is over its own rate
        shared_limited,  // a source not in the table, and the shared bucket is empty
    };
    verdict take(uint64_t key, uint64_t now_ms) noexcept;
    bool allow(uint64_t key, uint64_t now_ms) noexcept {
        return take(key, now_ms) == verdict::allowed;
    }

    // A source's key: a keyed hash (SipHash, keyed by hash_seed) of its address bytes, so nobody
    // can pick an address whose key collides with another source's and drain its bucket. IPv6
    // sources count per /64: whoever has one address of a /64 usually has all 2^64 of them.
    uint64_t key_of(const ip_address& a) const noexcept;
    uint64_t key_of(std::span<const uint8_t> bytes) const noexcept;

    size_t size() const noexcept { return index_.size(); }
    const source_bucket_config& config() const noexcept { return cfg_; }
    // Memory held, for the documented bound (slots + index).
    static size_t memory_bound(const source_bucket_config& cfg) noexcept;

private:
    // Tokens in units of 1/period_ms token: a bucket gains `rate` units per ms and a token costs
    // period_ms units, so no division or rounding drift.
    struct bucket {
        uint64_t units = 0;
        uint64_t refilled_ms = 0;
    };
    struct slot {
        uint64_t key = 0;
        uint64_t last_ms = 0;  // the source's last datagram
        bucket b;
        bool used = false;
    };
    static void refill(bucket& b, uint64_t rate, uint64_t cap, uint64_t now_ms) noexcept;
    bool reusable(const slot& s, uint64_t now_ms) const noexcept;
    uint32_t find_slot(uint64_t now_ms) noexcept;

    source_bucket_config cfg_;
    uint64_t cap_, shared_cap_;  // bucket depths in units
    std::vector<slot> slots_;
    std::vector<uint32_t> free_;
    fixed_u64_map index_;
    bucket shared_;
    size_t hand_ = 0;
    uint8_t hash_key_[16] = {};  // clock hand: where the search for a reusable slot goes on
};

}  // namespace mw::meshd
