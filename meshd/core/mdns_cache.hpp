// The querier's cache of other responders' records (RFC 6762 §10): each record until its TTL runs
// out, a goodbye (TTL 0) kept one more second, and the cache-flush bit honoured (records of the
// same name and type received more than a second before a cache-flush record expire a second
// later). Never holds this node's own records (the engine filters them out).
#pragma once

#include <cstdint>
#include <vector>

#include "meshd/core/mdns_message.hpp"

namespace mw::meshd {

class mdns_cache {
public:
    struct entry {
        mdns_record rec;
        uint64_t received_ms = 0;
        uint64_t expires_ms = 0;
        // Remaining TTL at `now`, in seconds (rounded down).
        uint32_t remaining_s(uint64_t now_ms) const noexcept {
            return expires_ms > now_ms ? static_cast<uint32_t>((expires_ms - now_ms) / 1000) : 0;
        }
    };

    // At most this many records: a flood of distinct names must not grow memory without bound.
    static constexpr size_t max_entries = 4096;

    // Stores or refreshes one record. Returns true when it is new or its data changed (a change
    // the querier may have to act on); a refresh of a known record returns false.
    bool add(const mdns_record& rec, uint64_t now_ms);
    // Drops expired records; returns how many.
    size_t expire(uint64_t now_ms);
    // Live records of this name and type (type ANY matches all).
    std::vector<const entry*> find(const mdns_name& name, uint16_t type, uint64_t now_ms) const;
    uint64_t next_expiry() const noexcept;
    size_t size() const noexcept { return entries_.size(); }

private:
    std::vector<entry> entries_;
};

}  // namespace mw::meshd
