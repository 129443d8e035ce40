// The newest valid peer record per node ID: what relays, mDNS and the DHT all feed, and what the
// path and dataplane logic read.
//
// Lifetime (issue 17, issue 14 item 1: no wall clock anywhere). A record carries a signed
// lifetime (a duration, at most max_lifetime_ms), not an expiry instant. This store sets the
// record's expiry to its own now_ms at the FIRST receipt of that (node, seq) + lifetime, and
// only a newer seq (signed by the node itself) sets a new one: the same record again, from the
// node's HELLO or from any relay, never extends it (relays push records to each other; a refresh
// by duplicates would keep a dead node alive for ever). An honest node re-signs its record
// before half its lifetime is over (membership), so its newer seq always arrives before the old
// one runs out. `now_ms` is the caller's clock (the core's: any clock that does not jump), never
// compared with anything the signer wrote.
//
// Per node ID, put() (after the signature check):
//   - higher seq replaces the stored record (new expiry: now + its lifetime);
//   - equal seq with identical content is a harmless duplicate (the same record via two relays):
//     nothing changes, the expiry stays;
//   - equal seq with different content is refused: an honest node never signs two records with
//     one seq, so this is a bug or a leaked key, and keeping the first is the stable choice;
//   - lower seq is refused as outdated.
// Tombstones: when a record leaves the store (expired, evicted, erased) its (node ID, seq) is
// kept in a bounded map (max_tombstones, oldest out, each for at most tombstone_ms), and a record
// of that node whose seq is not above the tombstone's is refused as outdated
// (errc::already_exists). So neither a relay still holding the copy we dropped (it received it
// later than we did) nor a replay of an old record brings it back. Residual: a replay after its
// tombstone went (max_tombstones other nodes' records left since, or tombstone_ms passed) or after
// this node restarted is accepted once, for one lifetime, unless the node's current record (a
// higher seq) arrives, which replaces it. Second-hand records get a full lifetime at each hop (a
// relay that first hears of a record late keeps it for a lifetime from then, and so does whoever
// hears it from that relay): a record can outlive its signing by about one lifetime per relay hop.
// Relays re-push only what they hold, and tombstones stop copies from coming back, so the chain
// ends.
//
// Bound: at most max_records records, and new identities cannot evict established ones (issue
// 17: an identity costs ~50 us to make, and eviction by claimed lifetime let 16,384 fakes
// claiming 24 h push out every honest 10-minute record). Each record carries when this store
// first saw its node and when it last saw the record again (a put of the same or a newer
// record): the node's own HELLOs at a relay, RECORDS answers and pushes elsewhere. A node is
//   live         seen again within live_ms, and
//   established  live and known for at least establish_ms.
// A record for a new node ID when full first expires stale records, then evicts one record that
// is not established: a record not live any more if there is one (least recently seen first),
// else the youngest records' least recently seen one. Never by claimed lifetime: the signer
// chooses that. A store full of established nodes refuses new identities (errc::exhausted,
// counted in refused_full()); updates of known nodes never need room.
//
// Names are claims made by the signer, not unique identities: find_by_name() returns every record
// claiming a name. Trust the node ID.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
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
    uint64_t max_lifetime_ms = peer_record::max_lifetime_ms;
    // (node ID, seq) of records that left the store, oldest out: ~150 bytes each.
    size_t max_tombstones = 16384;
    // and for at most this long: by then every copy a relay may still hold has run out (a day
    // is the longest lifetime), and a node that came back with lower seqs (its boot.epoch
    // removed while its clock is behind) is not refused for ever.
    uint64_t tombstone_ms = 24ull * 3600 * 1000;
    // Honest nodes HELLO their relays every 60 s (a relay sees them again each time) and re-sign
    // at half their lifetime (12 h: every 6 h, which is when a node that is no relay sees a
    // record of an idle node again). A node not seen for live_ms (two re-sign periods and an
    // hour) has stopped refreshing.
    uint64_t establish_ms = 60'000;
    uint64_t live_ms = 13ull * 3600 * 1000;
};

enum class put_outcome {
    inserted,   // first record for this node ID
    replaced,   // newer seq replaced the stored record, with other content
    refreshed,  // newer seq replaced the stored record, the same content (a re-sign: only its
                // seq and lifetime differ): a new lifetime here, nothing else changed
    duplicate,  // identical to the stored record; nothing changed
};

class record_store {
public:
    explicit record_store(record_store_config cfg = {}) : cfg_(cfg) {}

    // Errors: the verify() error (errc::protocol_error bad signature/key binding),
    // errc::invalid_argument (lifetime above max_lifetime_ms), errc::already_exists (outdated
    // seq: below the stored one, or not above a tombstone's), errc::state_mismatch (same seq,
    // other content), errc::exhausted (store full of established nodes).
    // `max_remaining_ms`: the record has at most this much of its lifetime left (a record from
    // the on-disk cache, whose first receipt was before a restart): its expiry is now + the
    // smaller of the two, so the cache never extends a record's life.
    result<put_outcome> put(const peer_record& rec, uint64_t now_ms,
                            uint64_t max_remaining_ms = UINT64_MAX);

    // Drops records whose expiry (first receipt + lifetime) is <= now_ms; returns how many.
    size_t expire(uint64_t now_ms);
    // Drops the node's record; `leave_tombstone` false for a revocation (revokedNodes refuses the
    // node anyway, and once it is unlisted its current record, same seq, must be taken at once).
    bool erase(const node_id& id, bool leave_tombstone = true);
    // When the node's record expires here (this store's clock); nullopt if none is held.
    std::optional<uint64_t> expires_at(const node_id& id) const;
    // The highest seq of the node's records that left the store, if still remembered.
    std::optional<uint64_t> tombstone(const node_id& id) const;
    size_t tombstones() const noexcept { return tombstones_.size(); }

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
    // The records whose node ID is in [first, last], in node ID order (anti-entropy pages).
    template <class F>
    void for_each_in(const node_id& first, const node_id& last, F&& f) const {
        for (auto it = records_.lower_bound(first); it != records_.end() && !(last < it->first);
             ++it)
            f(it->second);
    }
    // Changes whenever the (node ID, seq) set held changes: a record added, replaced or removed
    // (anti_entropy recomputes its digest only then).
    uint64_t generation() const noexcept { return generation_; }
    // The same with each record's node ID (no hashing of keys per visit).
    template <class F>
    void for_each_with_id(F&& f) const {
        for (const auto& [id, rec] : records_) f(id, rec);
    }

private:
    struct seen {
        uint64_t first_ms = 0;    // this store first held a record of the node
        uint64_t last_ms = 0;     // the node's record last arrived again
        uint64_t expires_ms = 0;  // first receipt of the held record + its lifetime
    };
    void remove(std::map<node_id, peer_record>::iterator it, bool leave_tombstone = true);
    void touch(const node_id& id, uint64_t now_ms);
    bool is_established(const seen& s, uint64_t now_ms) const noexcept {
        return now_ms - std::min(now_ms, s.last_ms) <= cfg_.live_ms &&
               now_ms - std::min(now_ms, s.first_ms) >= cfg_.establish_ms;
    }
    // Makes room for a new node ID; false if every record is established.
    bool make_room(uint64_t now_ms);
    void bury(const node_id& id, uint64_t seq);
    void drop_old_graves(uint64_t now_ms);
    static uint64_t expiry(uint64_t now_ms, const peer_record& rec,
                           uint64_t max_remaining_ms) noexcept {
        // lifetime <= 24 h: no overflow for any real clock
        return now_ms + std::min<uint64_t>(rec.lifetime_ms, max_remaining_ms);
    }

    record_store_config cfg_;
    std::map<node_id, peer_record> records_;
    std::unordered_map<node_id, seen> seen_;                // follows records_
    std::set<std::pair<uint64_t, node_id>> by_last_seen_;   // (seen.last_ms, id)
    std::set<std::pair<uint64_t, node_id>> by_first_seen_;  // (seen.first_ms, id)
    uint64_t refused_full_ = 0, evicted_ = 0;
    std::set<std::pair<uint64_t, node_id>> by_expiry_;  // (seen.expires_ms, id)
    struct grave {
        uint64_t seq = 0;
        uint64_t order = 0;  // key in graves_by_age_
        uint64_t buried_ms = 0;
    };
    std::unordered_map<node_id, grave> tombstones_;
    std::map<uint64_t, node_id> graves_by_age_;  // oldest first
    uint64_t next_grave_ = 0;
    uint64_t now_ms_ = 0;  // the latest now_ms seen (erase() takes none)
    uint64_t generation_ = 0;
    std::unordered_multimap<std::string, node_id> by_name_;
};

}  // namespace mw::meshd
