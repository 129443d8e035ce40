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
// Bound: at most max_records records, and new identities cannot evict established ones (issue
// 17: an identity costs ~50 us to make, and eviction by claimed expiry let 16,384 fakes claiming
// 24 h push out every honest 10-minute record). Each record carries when this store first saw
// its node and when it last saw the record again (a put of the same or a newer record): the
// node's own HELLOs at a relay, RECORDS answers and pushes elsewhere. A node is
//   live         seen again within live_ms, and
//   established  live and known for at least establish_ms.
// A record for a new node ID when full first expires stale records, then evicts one record that
// is not established: a record not live any more if there is one (least recently seen first),
// else the youngest records' least recently seen one. Never by claimed expiry: the signer chooses
// that. A store full of established nodes refuses new identities (errc::exhausted, counted in
// refused_full()); updates of known nodes never need room.
//
// Names are claims made by the signer, not unique identities: find_by_name() returns every record
// claiming a name. Trust the node ID.
#pragma once

#include <algorithm>
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
    // Honest nodes HELLO every 10 s and re-sign every 5 min; RECORDS answers repeat every record
    // at every HELLO. A node not seen for live_ms has stopped refreshing.
    uint64_t establish_ms = 60'000;
    uint64_t live_ms = 10 * 60 * 1000;
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
    // Whether the node has a record here that counts as established at now_ms (see above).
    bool established(const node_id& id, uint64_t now_ms) const;
    // New identities refused because the store was full of established nodes, and records
    // evicted to make room for one.
    uint64_t refused_full() const noexcept { return refused_full_; }
    uint64_t evicted() const noexcept { return evicted_; }

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
    struct seen {
        uint64_t first_ms = 0;  // this store first held a record of the node
        uint64_t last_ms = 0;   // the node's record last arrived again
    };
    void remove(std::map<node_id, peer_record>::iterator it);
    void touch(const node_id& id, uint64_t now_ms);
    bool is_established(const seen& s, uint64_t now_ms) const noexcept {
        return now_ms - std::min(now_ms, s.last_ms) <= cfg_.live_ms &&
               now_ms - std::min(now_ms, s.first_ms) >= cfg_.establish_ms;
    }
    // Makes room for a new node ID; false if every record is established.
    bool make_room(uint64_t now_ms);

    record_store_config cfg_;
    std::map<node_id, peer_record> records_;
    std::unordered_map<node_id, seen> seen_;                // follows records_
    std::set<std::pair<uint64_t, node_id>> by_last_seen_;   // (seen.last_ms, id)
    std::set<std::pair<uint64_t, node_id>> by_first_seen_;  // (seen.first_ms, id)
    uint64_t refused_full_ = 0, evicted_ = 0;
    std::set<std::pair<uint64_t, node_id>> by_expiry_;
    std::unordered_multimap<std::string, node_id> by_name_;
};

}  // namespace mw::meshd
