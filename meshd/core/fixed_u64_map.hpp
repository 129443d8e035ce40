// A fixed-capacity hash index from a u64 key to a u32 slot number, for per-packet lookups that must
// never allocate (the relay session table, the node-side relay proxy). All memory is reserved at
// construction; the table is kept at most half full so linear probes stay short. Deletion shifts
// later entries back instead of leaving tombstones, so lookups never degrade with churn.
// The hash is seeded by the caller: session ids come from the network, and a fixed hash would let
// a PSK holder choose ids that all collide.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace mw::meshd {

class fixed_u64_map {
public:
    static constexpr uint32_t none = std::numeric_limits<uint32_t>::max();

    explicit fixed_u64_map(size_t max_entries, uint64_t seed = 0)
        : entries_(std::bit_ceil(std::max<size_t>(2 * max_entries, 8))),
          mask_(entries_.size() - 1),
          max_entries_(max_entries),
          seed_(seed) {}

    // The value stored for key, or `none`.
    uint32_t find(uint64_t key) const noexcept {
        for (size_t i = bucket(key);; i = (i + 1) & mask_) {
            const entry& e = entries_[i];
            if (e.value == none) return none;
            if (e.key == key) return e.value;
        }
    }

    // Inserts or overwrites; false when the map already holds max_entries keys.
    bool insert(uint64_t key, uint32_t value) noexcept {
        for (size_t i = bucket(key);; i = (i + 1) & mask_) {
            entry& e = entries_[i];
            if (e.value == none) {
                if (size_ >= max_entries_) return false;
                e = {key, value};
                ++size_;
                return true;
            }
            if (e.key == key) {
                e.value = value;
                return true;
            }
        }
    }

    // Removes key if present (backward-shift deletion, Knuth's algorithm R).
    bool erase(uint64_t key) noexcept {
        size_t i = bucket(key);
        for (;; i = (i + 1) & mask_) {
            if (entries_[i].value == none) return false;
            if (entries_[i].key == key) break;
        }
        size_t hole = i;
        for (size_t j = (hole + 1) & mask_;; j = (j + 1) & mask_) {
            if (entries_[j].value == none) break;
            size_t home = bucket(entries_[j].key);
            // Move j into the hole unless its home lies cyclically in (hole, j].
            bool home_in_range =
                hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
            if (!home_in_range) {
                entries_[hole] = entries_[j];
                hole = j;
            }
        }
        entries_[hole] = entry{};
        --size_;
        return true;
    }

    size_t size() const noexcept { return size_; }
    size_t capacity() const noexcept { return max_entries_; }

private:
    struct entry {
        uint64_t key = 0;
        uint32_t value = none;
    };

    size_t bucket(uint64_t key) const noexcept {
        // splitmix64's finaliser: every key bit affects every bucket bit.
        uint64_t z = key + seed_ + 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return static_cast<size_t>(z ^ (z >> 31)) & mask_;
    }

    std::vector<entry> entries_;
    size_t mask_;
    size_t max_entries_;
    uint64_t seed_;
    size_t size_ = 0;
};

}  // namespace mw::meshd
