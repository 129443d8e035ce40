#include "meshd/core/anti_entropy.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

namespace mw::meshd {

namespace {

uint64_t mix(uint64_t x) {
    // splitmix64's finalizer: a keyed rank nobody can grind IDs against (the key is ours).
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// The node ID after `id` (summary pages cover adjacent ranges, so no ID falls between two).
node_id next_id(const node_id& id) {
    std::array<uint8_t, node_id::size> b = id.bytes();
    for (size_t i = b.size(); i-- > 0;) {
        if (++b[i] != 0) break;
    }
    return node_id(b);
}

bool same_digest(const record_digest& d, uint32_t count, const ae_digest_bytes& digest) {
    return d.count() == count && d.digest() == digest;
}

}  // namespace

anti_entropy::anti_entropy(core_context& ctx, membership& members, anti_entropy_config cfg,
                           prove_fn prove)
    : ctx_(ctx), members_(members), cfg_(cfg), prove_(std::move(prove)), salt_(ctx.random_u64()) {}

uint64_t anti_entropy::rank_of(const node_id& id) const {
    uint64_t x;
    std::memcpy(&x, id.data() + 8, sizeof x);
    return mix(x ^ salt_);
}

const peer_record* anti_entropy::record_of(const node_id& id) const {
    if (id == ctx_.id()) return members_.self().seq ? &members_.self() : nullptr;
    return members_.store().find(id);
}

std::vector<ae_summary_entry> anti_entropy::entries_in(const node_id& first,
                                                       const node_id& last) const {
    std::vector<ae_summary_entry> v;
    members_.store().for_each_in(first, last, [&](const peer_record& r) {
        v.push_back(ae_summary_entry{r.id(), r.seq});
    });
    const node_id& self = ctx_.id();
    if (members_.self().seq && !(self < first) && !(last < self)) {
        ae_summary_entry e{self, members_.self().seq};
        v.insert(std::lower_bound(v.begin(), v.end(), e,
                                  [](const auto& a, const auto& b) { return a.id < b.id; }),
                 e);
    }
    return v;
}

anti_entropy::partner* anti_entropy::find(const node_id& id) {
    auto it = partners_.find(id);
    return it == partners_.end() ? nullptr : &it->second;
}

anti_entropy::partner* anti_entropy::track(const node_id& id, uint64_t now) {
    if (auto* p = find(id)) return p;
    if (id == ctx_.id()) return nullptr;
    if (partners_.size() >= cfg_.max_partners) {
        // Full: the stranger we heard from longest ago makes room; neighbours stay.
        auto victim = partners_.end();
        for (auto it = partners_.begin(); it != partners_.end(); ++it) {
            if (it->second.neighbour) continue;
            if (victim == partners_.end() ||
                it->second.last_exchange_ms < victim->second.last_exchange_ms)
                victim = it;
        }
        if (victim == partners_.end()) return nullptr;
        partners_.erase(victim);
    }
    partner p;
    p.rank = rank_of(id);
    p.last_exchange_ms = now;
    return &partners_.emplace(id, p).first->second;
}

void anti_entropy::open_window(partner& p, uint64_t now) {
    if (now >= p.window_ms + cfg_.interval_ms || now < p.window_ms) {
        p.window_ms = now;
        p.records_out = p.records_in = p.pages_out = p.pages_in = 0;
    }
}

uint64_t anti_entropy::round_interval(const partner& p) const {
    const uint64_t cap = std::max(cfg_.interval_ms, cfg_.max_interval_ms);
    uint64_t v = cfg_.interval_ms;
    for (unsigned i = 0; i < p.matched && v < cap; ++i) v *= 2;
    return std::min(v, cap);
}

void anti_entropy::note_round(partner& p, bool equal) {
    p.matched = equal ? p.matched + (round_interval(p) < cfg_.max_interval_ms) : 0;
}

void anti_entropy::set_neighbours(const std::vector<neighbour>& nbrs, uint64_t now) {
    std::map<node_id, wg_endpoint> want;
    for (const auto& n : nbrs) {
        if (n.id != ctx_.id()) want.emplace(n.id, normalize_endpoint(n.ep));  // first one wins
    }
    if (want.size() > cfg_.max_neighbours) {
        // A sample by our own keyed rank: everybody's sample differs, so the island stays
        // connected without anyone becoming everyone's neighbour.
        std::vector<std::pair<uint64_t, node_id>> ranked;
        ranked.reserve(want.size());
        for (const auto& [id, ep] : want) ranked.emplace_back(rank_of(id), id);
        std::sort(ranked.begin(), ranked.end());
        for (size_t i = cfg_.max_neighbours; i < ranked.size(); ++i) want.erase(ranked[i].second);
    }
    for (auto& [id, p] : partners_) {
        auto w = want.find(id);
        const bool was = p.neighbour;
        p.neighbour = w != want.end();
        if (p.neighbour && !was) p.matched = 0;  // a neighbour again: rounds from the interval
        if (p.neighbour) {
            p.ep = w->second;
            want.erase(w);
        }
    }
    for (const auto& [id, ep] : want) {
        partner* p = track(id, now);
        if (!p) continue;
        p->neighbour = true;
        p->ep = ep;
        // The first round soon, at a random moment (two new neighbours do not start together).
        p->next_round_ms = now + ctx_.random_u64() % std::max<uint64_t>(1, cfg_.first_round_ms);
    }
    neighbour_count_ = 0;
    for (auto& [id, p] : partners_) {
        if (!p.neighbour) continue;
        ++neighbour_count_;
        if (p.next_round_ms == 0)
            p.next_round_ms = now + ctx_.random_u64() % std::max<uint64_t>(1, cfg_.first_round_ms);
        ctx_.due(p.next_round_ms);
    }
}

void anti_entropy::tick(uint64_t now) {
    for (auto it = partners_.begin(); it != partners_.end();) {
        partner& p = it->second;
        if (!p.neighbour && now > p.last_exchange_ms + 3 * cfg_.interval_ms) {
            it = partners_.erase(it);
            continue;
        }
        if (p.neighbour) {
            if (now >= p.next_round_ms) start_round(it->first, p, now);
            ctx_.due(p.next_round_ms);
        }
        ++it;
    }
    flush_pushes(now);
}

void anti_entropy::start_round(const node_id& id, partner& p, uint64_t now) {
    const auto& d = current();
    ae_digest_msg m;
    m.request_id = ctx_.random_u64() | 1;  // never 0 (0: no round open)
    m.cookie = ctx_.cookies().for_responder(id, p.ep);
    m.count = d.count();
    m.digest = d.digest();
    ctx_.cookies().note_request(m.request_id,
                                {cookie_jar::request_kind::anti_entropy, id, p.ep, now});
    p.out_req = m.request_id;
    p.out_ms = now;
    p.out_ep = p.ep;
    p.next_round_ms = now + round_interval(p);
    p.last_exchange_ms = now;
    ++counters_.digests_sent;
    ctx_.send(std::move(m), id, p.ep, 0, now);
}

void anti_entropy::on_cookie(const node_id& sender, uint64_t now) {
    partner* p = find(sender);
    if (!p || !p->neighbour) return;
    p->next_round_ms = now;
    ctx_.due(now);
}

bool anti_entropy::speaks(const node_id& id) const {
    auto it = partners_.find(id);
    return it != partners_.end() && it->second.speaks;
}

bool anti_entropy::defer_hello(const node_id& id, uint64_t now) {
    partner* p = track(id, now);
    if (!p) return false;
    if (p->speaks) return true;
    if (!p->hello_grace_until) p->hello_grace_until = now + cfg_.hello_grace_ms;
    return now < p->hello_grace_until;
}

void anti_entropy::on_digest(const control_message& m, const ae_digest_msg& b,
                             const wg_endpoint& from, uint64_t now) {
    if (b.flags & ae_digest_msg::flag_reply) {
        partner* p = find(m.sender);
        if (!p || p->out_req == 0 || p->out_req != b.request_id || !(from == p->out_ep) ||
            now > p->out_ms + cfg_.exchange_ttl_ms) {
            ++counters_.unsolicited;
            return;
        }
        p->speaks = true;
        p->last_exchange_ms = now;
        if (same_digest(current(), b.count, b.digest)) {
            ++counters_.digests_matched;
            p->out_req = 0;  // the round is over
            note_round(*p, true);
            if (p->neighbour) p->next_round_ms = p->out_ms + round_interval(*p);
            return;
        }
        note_round(*p, false);
        if (p->neighbour) p->next_round_ms = std::min(p->next_round_ms, now + cfg_.interval_ms);
        // Different, and it sent its buckets (our cookie proved us): our entries of the buckets
        // that differ, so it can send what we lack and ask for what it lacks.
        if (b.buckets.size() == ae_buckets) send_summary(m.sender, *p, b.buckets, now);
        return;
    }
    ++counters_.digests_received;
    partner* p = track(m.sender, now);
    const auto& d = current();
    if (p) {
        p->speaks = true;
        p->last_exchange_ms = now;
        // Its round is ours too: one exchange per pair and round. Half an interval more, so
        // its next round comes first again (equal timers would both fire, two exchanges); it
        // backs off as we do (both see the same match).
        note_round(*p, same_digest(d, b.count, b.digest));
        if (p->neighbour) {
            p->next_round_ms = std::max(p->next_round_ms, now + round_interval(*p) * 3 / 2);
        }
    }
    ae_digest_msg r;
    r.request_id = b.request_id;
    r.flags = ae_digest_msg::flag_reply;
    r.count = d.count();
    r.digest = d.digest();
    if (same_digest(d, b.count, b.digest)) {
        ++counters_.digests_matched;
    } else if (p) {
        // The buckets make the reply larger than the request: only to a proven address.
        if (!prove_(m, b.request_id, b.cookie, from, now)) return;  // a COOKIE_REPLY went
        r.flags |= ae_digest_msg::flag_buckets;
        r.buckets = d.buckets();
        p->in_req = b.request_id;
        p->in_ms = now;
        p->in_ep = from;
    }
    ctx_.send(std::move(r), m.sender, from, 0, now);
}

void anti_entropy::send_summary(const node_id& id, partner& p, const std::vector<uint64_t>& theirs,
                                uint64_t now) {
    open_window(p, now);
    const auto mine = current().buckets();
    for (size_t b = 0; b < ae_buckets;) {
        if (mine[b] == theirs[b]) {
            ++b;
            continue;
        }
        size_t e = b;
        while (e + 1 < ae_buckets && mine[e + 1] != theirs[e + 1]) ++e;
        const node_id last = record_digest::bucket_range(e).second;
        node_id first = record_digest::bucket_range(b).first;
        const auto entries = entries_in(first, last);
        size_t i = 0;
        do {
            if (p.pages_out >= cfg_.max_pages) {
                ++counters_.over_budget;
                return;
            }
            const size_t n = std::min(ae_max_summary_entries, entries.size() - i);
            ae_summary_msg s;
            s.request_id = p.out_req;
            s.first = first;
            s.entries.assign(entries.begin() + i, entries.begin() + i + n);
            i += n;
            // A page says everything we hold in its range: the last page of a run ends where
            // the run does, the others at their last entry (the next starts right after it).
            s.last = i < entries.size() ? entries[i - 1].id : last;
            if (i < entries.size()) first = next_id(entries[i - 1].id);
            ++p.pages_out;
            ++counters_.summaries_sent;
            ctx_.send(std::move(s), id, p.out_ep, 0, now);
        } while (i < entries.size());
        b = e + 1;
    }
}

void anti_entropy::on_summary(const control_message& m, const ae_summary_msg& b,
                              const wg_endpoint& from, uint64_t now) {
    partner* p = find(m.sender);
    if (!p || p->in_req == 0 || p->in_req != b.request_id || !(from == p->in_ep) ||
        now > p->in_ms + cfg_.exchange_ttl_ms) {
        ++counters_.unsolicited;
        return;
    }
    open_window(*p, now);
    if (p->pages_in >= cfg_.max_pages) {
        ++counters_.over_budget;
        return;
    }
    ++p->pages_in;
    ++counters_.summaries_received;
    p->last_exchange_ms = now;
    const auto mine = entries_in(b.first, b.last);
    const auto& theirs = b.entries;
    std::vector<const peer_record*> give;
    std::vector<node_id> want;
    auto wanted = [&](const ae_summary_entry& e) {
        // Not our own, not refused anyway (revoked, or not above a tombstone of ours).
        if (e.id == ctx_.id() || ctx_.revoked(e.id)) return;
        if (auto t = members_.store().tombstone(e.id); t && e.seq <= *t) return;
        want.push_back(e.id);
    };
    size_t i = 0, j = 0;
    while (i < mine.size() || j < theirs.size()) {
        if (j == theirs.size() || (i < mine.size() && mine[i].id < theirs[j].id)) {
            if (const auto* r = record_of(mine[i].id)) give.push_back(r);
            ++i;
        } else if (i == mine.size() || theirs[j].id < mine[i].id) {
            wanted(theirs[j]);
            ++j;
        } else {
            if (mine[i].seq > theirs[j].seq) {
                if (const auto* r = record_of(mine[i].id)) give.push_back(r);
            } else if (theirs[j].seq > mine[i].seq) {
                wanted(theirs[j]);
            }
            ++i;
            ++j;
        }
    }
    send_records(m.sender, *p, from, give, b.request_id, now);
    if (!want.empty()) {
        ++counters_.wants_sent;
        ctx_.send(ae_want_msg{b.request_id, std::move(want)}, m.sender, from, 0, now);
    }
}

void anti_entropy::on_want(const control_message& m, const ae_want_msg& b, const wg_endpoint& from,
                           uint64_t now) {
    partner* p = find(m.sender);
    if (!p || p->out_req == 0 || p->out_req != b.request_id || !(from == p->out_ep) ||
        now > p->out_ms + cfg_.exchange_ttl_ms) {
        ++counters_.unsolicited;
        return;
    }
    ++counters_.wants_received;
    p->last_exchange_ms = now;
    std::vector<const peer_record*> recs;
    for (const auto& id : b.ids) {
        if (const auto* r = record_of(id)) recs.push_back(r);
    }
    // To the address we chose for our DIGEST, never one the WANT names.
    send_records(m.sender, *p, p->out_ep, recs, b.request_id, now);
}

bool anti_entropy::on_records(const control_message& m, const records_msg& b, uint64_t now) {
    partner* p = find(m.sender);
    if (!p || !(p->neighbour || now <= p->last_exchange_ms + 2 * cfg_.interval_ms)) {
        ++counters_.unsolicited;
        return false;
    }
    open_window(*p, now);
    p->speaks = true;
    for (const auto& r : b.records) {
        if (r.id() == ctx_.id()) continue;
        if (p->records_in >= cfg_.max_records_in) {
            ++counters_.over_budget;
            continue;
        }
        ++p->records_in;
        auto put = members_.offer_record(r, learned_via::neighbour, m.sender, now);
        if (put && *put != put_outcome::duplicate) {
            ++counters_.records_accepted;
            // A refresh (same content, newer seq) is not pushed on: see membership::accept.
            if (*put != put_outcome::refreshed) note_changed(r.id(), m.sender);
        } else if (!put && !put.err().is(errc::already_exists)) {
            ctx_.log(0, "record refused", {{"peer", r.name}, {"error", put.err().message}});
        }
    }
    return true;
}

void anti_entropy::note_changed(const node_id& id, const node_id& from) {
    auto it = pending_.find(id);
    if (it != pending_.end()) {
        if (!from.is_zero()) it->second = from;
        return;
    }
    if (pending_.size() >= cfg_.max_pending_pushes) {
        ++counters_.over_budget;  // the next rounds carry it instead
        return;
    }
    // Sent at the next tick: every caller is an event the core follows with one (on_datagram,
    // offer_record and our own re-sign inside the tick all ask for it).
    pending_.emplace(id, from);
}

void anti_entropy::flush_pushes(uint64_t now) {
    if (pending_.empty()) return;
    std::vector<std::map<node_id, partner>::iterator> nbrs;
    for (auto it = partners_.begin(); it != partners_.end(); ++it) {
        if (it->second.neighbour) nbrs.push_back(it);
    }
    std::map<node_id, std::vector<const peer_record*>> out;
    std::vector<size_t> idx(nbrs.size());
    for (const auto& [id, from] : pending_) {
        const peer_record* rec = record_of(id);
        if (!rec || nbrs.empty()) continue;
        std::iota(idx.begin(), idx.end(), size_t{0});
        size_t picked = 0;
        // A partial shuffle: push_fanout distinct neighbours at random, not the node that told
        // us, not the record's own node.
        for (size_t k = 0; k < idx.size() && picked < cfg_.push_fanout; ++k) {
            std::swap(idx[k], idx[k + ctx_.random_u64() % (idx.size() - k)]);
            const node_id& to = nbrs[idx[k]]->first;
            if (to == from || to == id) continue;
            out[to].push_back(rec);
            ++picked;
        }
    }
    pending_.clear();
    for (const auto& [to, recs] : out) {
        partner& p = partners_.at(to);
        send_records(to, p, p.ep, recs, 0, now);
    }
}

void anti_entropy::send_records(const node_id& to, partner& p, const wg_endpoint& ep,
                                const std::vector<const peer_record*>& recs, uint64_t request_id,
                                uint64_t now) {
    open_window(p, now);
    // The partner's per-round budget: what is over it waits for the next round.
    const size_t left = cfg_.max_records_out - std::min(p.records_out, cfg_.max_records_out);
    std::span<const peer_record* const> give(recs);
    if (give.size() > left) {
        ++counters_.over_budget;
        give = give.first(left);
    }
    const size_t sent = ctx_.send_records(to, ep, request_id, give, now);
    p.records_out += sent;
    counters_.records_sent += sent;
}

}  // namespace mw::meshd
