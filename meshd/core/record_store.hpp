// The newest valid peer record per node ID: what relays, mDNS and the DHT all feed, and what the
// path and dataplane logic read.
//
// put() accepts a record only if it verifies (signature bound to the WG key, not expired) and its
// expiry is at most max_lifetime_ms ahead (so no record lives forever). Per node ID:
//   - higher seq replaces the stored record;
//   - equal seq with identical content is a harmless duplicate (the same record via two relays);
//   - equal seq with different content is refused: an honest node never signs two records with
//     one seq, so this is a bug or a leaked key, and keeping the first is the stable choice;
//   - lower seq is refused as outdated.
// Bound: at most max_records records. A record for a new node ID when full first expires stale
// records, then evicts the record that expires soonest, unless the new record itself expires
// sooner than that one (then the new record is refused, errc::exhausted). Records with later
// expiries are the ones their nodes refreshed most recently, so they are kept.
//
// Names are claims made by the signer, not unique identities: find_by_name() returns every record
// claiming a name. Trust the node ID.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/peer_record.hpp"

namespace mw::meshd {

struct record_store_config {
    size_t max_records = 16384;
    uint64_t max_lifetime_ms = 24ull * 3600 * 1000;
};

enum class put_outcome {
    inserted,   // first record for this node ID
    replaced,   // newer seq replaced the stored record
    duplicate,  // identical to the stored record; nothing changed
};

class record_store {
public:
    explicit record_store(record_store_config cfg = {}) : cfg_(cfg) {}

    // Errors: the verify() error (errc::protocol_error bad signature/key binding,
    // errc::timeout expired), errc::invalid_argument (expiry too far ahead),
    // errc::already_exists (outdated seq), errc::state_mismatch (same seq, other content),
    // errc::exhausted (store full of records that outlive this one).
    result<put_outcome> put(const peer_record& rec, uint64_t now_ms);

    // Drops records with expires_ms <= now_ms; returns how many were dropped.
    size_t expire(uint64_t now_ms);
    bool erase(const node_id& id);

    const peer_record* find(const node_id& id) const;
    std::vector<const peer_record*> find_by_name(const std::string& name) const;

    size_t size() const noexcept { return records_.size(); }
    bool empty() const noexcept { return records_.empty(); }
    const record_store_config& config() const noexcept { return cfg_; }

    // Visits every record in node ID order (stable order for RECORDS answers and meshctl).
    // The store must not be modified from inside f.
    template <class F>
    void for_each(F&& f) const {
        for (const auto& [id, rec] : records_) f(rec);
    }
    // The same with each record's node ID (no hashing of keys per visit).
    template <class F>
    void for_each_with_id(F&& f) const {
        for (const auto& [id, rec] : records_) f(id, rec);
    }

private:
    void remove(std::map<node_id, peer_record>::iterator it);

    record_store_config cfg_;
    std::map<node_id, peer_record> records_;
    std::set<std::pair<uint64_t, node_id>> by_expiry_;
    std::unordered_multimap<std::string, node_id> by_name_;
};

}  // namespace mw::meshd
