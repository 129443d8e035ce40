#include "meshd/core/record_store.hpp"

#include <algorithm>

namespace mw::meshd {

result<put_outcome> record_store::put(const peer_record& rec, uint64_t now_ms,
                                      uint64_t max_remaining_ms) {
    now_ms_ = std::max(now_ms_, now_ms);
    // A byte-identical copy of a record we hold (relays answer every HELLO with all records)
    // carries the signature we verified when we stored it: skip the Ed25519 check, which at a
    // few hundred nodes was two thirds of all CPU. Any other record is verified in full.
    // A newer record of a node we hold with the same key pair: the keys' binding (a curve
    // conversion, a quarter of the verify cost) was checked then; the signature still is now.
    bool keys_known = false;
    if (auto it = records_.find(rec.id()); it != records_.end()) {
        const peer_record& cur = it->second;
        if (cur.seq == rec.seq && cur.sig == rec.sig && rec.same_content(cur)) {
            // Seen again, which keeps the node live, but never a longer life (see the header).
            touch(it->first, now_ms);
            return put_outcome::duplicate;
        }
        keys_known = cur.wg_public_key == rec.wg_public_key && cur.signing_key == rec.signing_key;
    }
    MW_TRY_STATUS(rec.verify({}, keys_known));
    if (rec.lifetime_ms > cfg_.max_lifetime_ms) {
        return error(errc::invalid_argument, "peer record " + rec.name + ": lifetime " +
                                                 std::to_string(rec.lifetime_ms) + " ms is above " +
                                                 std::to_string(cfg_.max_lifetime_ms) + " ms");
    }
    node_id id = rec.id();
    auto it = records_.find(id);
    if (it == records_.end()) {
        if (auto t = tombstones_.find(id); t != tombstones_.end() && rec.seq <= t->second.seq &&
                                           t->second.buried_ms + cfg_.tombstone_ms > now_ms) {
            return error(errc::already_exists, "peer record " + rec.name + ": seq " +
                                                   std::to_string(rec.seq) + " is not newer than " +
                                                   std::to_string(t->second.seq) +
                                                   ", which expired or was dropped here");
        }
    }
    if (it != records_.end()) {
        const peer_record& cur = it->second;
        if (rec.seq < cur.seq) {
            return error(errc::already_exists, "peer record " + rec.name + ": seq " +
                                                   std::to_string(rec.seq) + " is older than " +
                                                   std::to_string(cur.seq));
        }
        if (rec.seq == cur.seq) {
            if (rec.same_content(cur)) {
                touch(id, now_ms);
                return put_outcome::duplicate;
            }
            return error(errc::state_mismatch, "peer record " + rec.name + ": seq " +
                                                   std::to_string(rec.seq) +
                                                   " already seen with different content");
        }
        // A re-sign that changed nothing but the seq (and lifetime) is a refresh: callers do not
        // spread it as a change (anti-entropy pushes, membership.hpp).
        peer_record same = rec;
        same.seq = cur.seq;
        same.lifetime_ms = cur.lifetime_ms;
        const bool refresh = same.same_content(cur);
        // The node's history (first seen) stays: only the record is replaced, and its lifetime
        // counts from now.
        seen& sn = seen_.at(id);
        by_expiry_.erase({sn.expires_ms, id});
        auto [b, e] = by_name_.equal_range(cur.name);
        for (auto n = b; n != e; ++n) {
            if (n->second == id) {
                by_name_.erase(n);
                break;
            }
        }
        it->second = rec;
        ++generation_;
        sn.expires_ms = expiry(now_ms, rec, max_remaining_ms);
        by_expiry_.emplace(sn.expires_ms, id);
        by_name_.emplace(rec.name, id);
        touch(id, now_ms);
        return refresh ? put_outcome::refreshed : put_outcome::replaced;
    }
    if (records_.size() >= cfg_.max_records && !make_room(now_ms)) {
        ++refused_full_;
        return error(errc::exhausted, "record store full (" + std::to_string(cfg_.max_records) +
                                          " records of established nodes); new node " + rec.name +
                                          " refused");
    }
    records_.emplace(id, rec);
    ++generation_;
    const uint64_t expires = expiry(now_ms, rec, max_remaining_ms);
    by_expiry_.emplace(expires, id);
    by_name_.emplace(rec.name, id);
    seen_[id] = seen{now_ms, now_ms, expires};
    // The record supersedes its tombstone (and leaves a newer one when it goes).
    if (auto t = tombstones_.find(id); t != tombstones_.end()) {
        graves_by_age_.erase(t->second.order);
        tombstones_.erase(t);
    }
    by_last_seen_.emplace(now_ms, id);
    by_first_seen_.emplace(now_ms, id);
    return put_outcome::inserted;
}

void record_store::touch(const node_id& id, uint64_t now_ms) {
    auto s = seen_.find(id);
    if (s == seen_.end() || s->second.last_ms >= now_ms) return;
    by_last_seen_.erase({s->second.last_ms, id});
    s->second.last_ms = now_ms;
    by_last_seen_.emplace(now_ms, id);
}

bool record_store::make_room(uint64_t now_ms) {
    expire(now_ms);
    if (records_.size() < cfg_.max_records) return true;
    // A node that stopped refreshing goes first, the longest silent one.
    node_id victim;
    bool found = false;
    if (auto oldest = by_last_seen_.begin();
        oldest != by_last_seen_.end() && now_ms - std::min(now_ms, oldest->first) > cfg_.live_ms) {
        victim = oldest->second;
        found = true;
    } else {
        // Everyone is live: among the nodes not known for establish_ms yet (the newest first,
        // so the scan stops at the first established one), the least recently seen.
        uint64_t best = UINT64_MAX;
        for (auto f = by_first_seen_.rbegin(); f != by_first_seen_.rend(); ++f) {
            if (now_ms - std::min(now_ms, f->first) >= cfg_.establish_ms) break;
            uint64_t last = seen_.at(f->second).last_ms;
            if (last < best) {
                best = last;
                victim = f->second;
                found = true;
            }
        }
    }
    if (!found) return false;
    remove(records_.find(victim));
    ++evicted_;
    return true;
}

bool record_store::established(const node_id& id, uint64_t now_ms) const {
    auto s = seen_.find(id);
    return s != seen_.end() && is_established(s->second, now_ms);
}

void record_store::remove(std::map<node_id, peer_record>::iterator it, bool leave_tombstone) {
    const peer_record& rec = it->second;
    ++generation_;
    if (leave_tombstone) bury(it->first, rec.seq);
    auto [b, e] = by_name_.equal_range(rec.name);
    for (auto n = b; n != e; ++n) {
        if (n->second == it->first) {
            by_name_.erase(n);
            break;
        }
    }
    if (auto s = seen_.find(it->first); s != seen_.end()) {
        by_expiry_.erase({s->second.expires_ms, it->first});
        by_last_seen_.erase({s->second.last_ms, it->first});
        by_first_seen_.erase({s->second.first_ms, it->first});
        seen_.erase(s);
    }
    records_.erase(it);
}

void record_store::bury(const node_id& id, uint64_t seq) {
    if (cfg_.max_tombstones == 0) return;
    auto [t, fresh] = tombstones_.try_emplace(id);
    if (!fresh) {
        graves_by_age_.erase(t->second.order);
        seq = std::max(seq, t->second.seq);
    }
    t->second = grave{seq, next_grave_, now_ms_};
    graves_by_age_.emplace(next_grave_++, id);
    while (tombstones_.size() > cfg_.max_tombstones) {
        tombstones_.erase(graves_by_age_.begin()->second);
        graves_by_age_.erase(graves_by_age_.begin());
    }
}

std::optional<uint64_t> record_store::expires_at(const node_id& id) const {
    auto s = seen_.find(id);
    if (s == seen_.end()) return std::nullopt;
    return s->second.expires_ms;
}

std::optional<uint64_t> record_store::tombstone(const node_id& id) const {
    auto t = tombstones_.find(id);
    if (t == tombstones_.end()) return std::nullopt;
    return t->second.seq;
}

void record_store::drop_old_graves(uint64_t now_ms) {
    // Oldest first: buried in order of a clock that only moves forward here (now_ms_).
    while (!graves_by_age_.empty()) {
        auto t = tombstones_.find(graves_by_age_.begin()->second);
        if (t->second.buried_ms + cfg_.tombstone_ms > now_ms) break;
        tombstones_.erase(t);
        graves_by_age_.erase(graves_by_age_.begin());
    }
}

size_t record_store::expire(uint64_t now_ms) {
    now_ms_ = std::max(now_ms_, now_ms);
    size_t dropped = 0;
    while (!by_expiry_.empty() && by_expiry_.begin()->first <= now_ms) {
        remove(records_.find(by_expiry_.begin()->second));
        ++dropped;
    }
    drop_old_graves(now_ms);
    return dropped;
}

bool record_store::erase(const node_id& id, bool leave_tombstone) {
    auto it = records_.find(id);
    if (it == records_.end()) return false;
    remove(it, leave_tombstone);
    return true;
}

const peer_record* record_store::find(const node_id& id) const {
    auto it = records_.find(id);
    return it == records_.end() ? nullptr : &it->second;
}

std::vector<const peer_record*> record_store::find_by_name(const std::string& name) const {
    std::vector<const peer_record*> out;
    auto [b, e] = by_name_.equal_range(name);
    for (auto n = b; n != e; ++n) out.push_back(&records_.at(n->second));
    std::sort(out.begin(), out.end(),
              [](const peer_record* a, const peer_record* b) { return a->id() < b->id(); });
    return out;
}

}  // namespace mw::meshd
