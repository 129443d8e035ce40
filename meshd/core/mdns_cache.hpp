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
        uint8_t refreshes = 0;  // cache-maintenance queries sent for it (RFC 6762 §5.2)
        // When the next maintenance query is due: at 80, 85, 90 and 95 % of the TTL; UINT64_MAX
        // after the fourth, or for a record already on its way out (goodbye, cache-flush).
        uint64_t refresh_due_ms() const noexcept {
            uint64_t ttl_ms = static_cast<uint64_t>(rec.ttl) * 1000;
            if (refreshes >= 4 || ttl_ms == 0 || expires_ms != received_ms + ttl_ms)
                return UINT64_MAX;
            return received_ms + ttl_ms * (80 + 5 * refreshes) / 100;
        }
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
    // Every record (live or not yet expired), for the querier's cache maintenance.
    std::vector<entry>& entries() noexcept { return entries_; }
    const std::vector<entry>& entries() const noexcept { return entries_; }

private:
    std::vector<entry> entries_;
};

}  // namespace mw::meshd
