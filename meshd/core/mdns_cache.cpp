#include "meshd/core/mdns_cache.hpp"

#include <algorithm>
#include <limits>

namespace mw::meshd {

bool mdns_cache::add(const mdns_record& rec, uint64_t now_ms) {
    // RFC 6762 §10.1: a goodbye means "expires in one second", not "gone now", so that a record
    // re-announced right after (a quick restart) does not flap.
    uint64_t expires = now_ms + (rec.ttl == 0 ? 1000 : static_cast<uint64_t>(rec.ttl) * 1000);
    if (rec.cache_flush) {
        // §10.2: every other record of this name, type and class received over a second ago is
        // stale; it goes in one second (not at once: it may be one of a set being announced).
        for (auto& e : entries_)
            if (e.rec.type == rec.type && e.rec.rclass == rec.rclass && e.rec.name == rec.name &&
                !(e.rec.data == rec.data) && e.received_ms + 1000 < now_ms)
                e.expires_ms = std::min(e.expires_ms, now_ms + 1000);
    }
    for (auto& e : entries_) {
        if (!e.rec.same_record(rec)) continue;
        e.rec.ttl = rec.ttl;
        e.received_ms = now_ms;
        e.expires_ms = expires;
        e.refreshes = 0;
        return false;
    }
    if (rec.ttl == 0) return false;  // a goodbye for something we never had
    if (entries_.size() >= max_entries) {
        // Full: the record closest to expiry makes room.
        auto it = std::min_element(
            entries_.begin(), entries_.end(),
            [](const auto& a, const auto& b) { return a.expires_ms < b.expires_ms; });
        entries_.erase(it);
    }
    entries_.push_back({rec, now_ms, expires, 0});
    return true;
}

size_t mdns_cache::expire(uint64_t now_ms) {
    auto n = entries_.size();
    std::erase_if(entries_, [&](const entry& e) { return e.expires_ms <= now_ms; });
    return n - entries_.size();
}

std::vector<const mdns_cache::entry*> mdns_cache::find(const mdns_name& name, uint16_t type,
                                                       uint64_t now_ms) const {
    std::vector<const entry*> out;
    for (const auto& e : entries_)
        if ((type == mdns_type::any || e.rec.type == type) && e.expires_ms > now_ms &&
            e.rec.name == name)
            out.push_back(&e);
    return out;
}

uint64_t mdns_cache::next_expiry() const noexcept {
    uint64_t t = std::numeric_limits<uint64_t>::max();
    for (const auto& e : entries_) t = std::min(t, e.expires_ms);
    return t;
}

}  // namespace mw::meshd
