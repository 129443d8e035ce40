// The anti-entropy digest of a set of (node ID, seq) pairs (anti_entropy.hpp): what two direct
// neighbours compare before they compare anything longer.
//
// The set is split in ae_buckets buckets by the node ID's top 5 bits. A bucket's value is the
// XOR of BLAKE2b-128(node ID | seq) over its pairs: order-free, so the store's records and our
// own record are added in any order, and a change is one bucket. The digest is BLAKE2b-128 over
// the count and every bucket's value. Two sets that differ have different digests except by a
// hash collision; a node that wants two sets to look equal must find pairs whose hashes XOR to
// the same value, over IDs it does not choose (they hash public keys) and seqs signed into
// records. The worst a collision does is delay a record until it changes or is pushed.
//
// Buckets go on the wire as their first 8 bytes (ae_digest_msg::buckets): a bucket that
// differs there differs; one that collides in 64 bits is caught by the full digest next round.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "meshd/core/node_id.hpp"
#include "meshd/core/wire_codec.hpp"

namespace mw::meshd {

class record_digest {
public:
    static size_t bucket_of(const node_id& id) noexcept { return id.data()[0] >> 3; }
    // The node IDs of a bucket, first and last (inclusive).
    static std::pair<node_id, node_id> bucket_range(size_t bucket);

    void clear() noexcept;
    void add(const node_id& id, uint64_t seq);

    uint32_t count() const noexcept { return count_; }
    ae_digest_bytes digest() const;
    // Each bucket's first 8 bytes, big-endian (what AE_DIGEST carries).
    std::vector<uint64_t> buckets() const;

private:
    std::array<std::array<uint8_t, 16>, ae_buckets> acc_{};
    uint32_t count_ = 0;
};

}  // namespace mw::meshd
