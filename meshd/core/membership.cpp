#include "meshd/core/membership.hpp"

#include <algorithm>
#include <string>

namespace mw::meshd {

membership::membership(core_context& ctx, const relay_role& role, record_store_config store_cfg,
                       record_changed_fn on_record_changed)
    : ctx_(ctx),
      role_(role),
      on_record_changed_(std::move(on_record_changed)),
      store_(store_cfg),
      new_ids_(source_bucket_config{.rate = ctx.cfg.new_ids_per_min,
                                    .burst = ctx.cfg.new_ids_burst,
                                    .shared_rate = ctx.cfg.new_ids_shared_per_min,
                                    .shared_burst = ctx.cfg.new_ids_shared_burst,
                                    .period_ms = 60'000,
                                    .max_sources = ctx.cfg.new_ids_sources,
                                    // a source that has registered nobody for a while
                                    .idle_ms = 120'000,
                                    .hash_seed = ctx.random_u64()}) {}

uint64_t membership::self_refresh_due() const noexcept {
    return self_signed_ms_ + self_lifetime_ms() / 2;
}

bool membership::refresh_self(std::vector<std::pair<node_id, uint16_t>> att, bool force,
                              uint64_t now) {
    const auto& cfg = ctx_.cfg;
    std::sort(att.begin(), att.end());
    std::vector<node_id> attached;
    std::vector<uint16_t> rtts;
    for (const auto& [id, rtt] : att) {
        attached.push_back(id);
        rtts.push_back(rtt);
    }
    if (attached != self_.relays || rtts != self_.relay_rtt_ms) self_dirty_ = true;
    // A clock that went back (it should not: the daemon's does not step) must not postpone the
    // refresh past the lifetime the others count.
    bool old = now >= self_refresh_due() || now < self_signed_ms_;
    if (!force && !self_dirty_ && !old) return false;
    peer_record r;
    r.name = cfg.node_name;
    r.pod_cidrs = cfg.pod_cidrs;
    r.endpoints = cfg.endpoints;
    if (role_.serving()) {
        // A relay's advertised addresses first: that is where everyone can reach it (e.g. the
        // public address of its NAT, port-forwarded to it).
        std::vector<wg_endpoint> eps = role_.addresses();
        for (const auto& e : cfg.endpoints) {
            if (std::find(eps.begin(), eps.end(), e) == eps.end()) eps.push_back(e);
        }
        r.endpoints = std::move(eps);
    }
    if (r.endpoints.size() > peer_record::max_endpoints)
        r.endpoints.resize(peer_record::max_endpoints);
    r.wg_port = cfg.wg_port;
    r.flags = role_.serving() ? peer_record::flag_relay : 0;
    r.relays = std::move(attached);
    r.relay_rtt_ms = std::move(rtts);
    // Marked dirty is not changed: a relay that went down and up again between two ticks, or
    // one we are not attached to, leaves the content as it was, and a re-sign of the same
    // content is a record to every node of the cluster for nothing (issue 18).
    const bool first = self_.seq == 0;
    const record_changes changes = first ? record_changes{} : compare_records(self_, r);
    if (!first && !force && !old && !changes.any()) {
        self_dirty_ = false;
        return false;
    }
    // The seq must grow across restarts too (a restarted node's record must replace the old one
    // everywhere, and tombstones refuse what is not newer), without a clock: see seq_counter_bits.
    const uint64_t epoch = ctx_.channel().epoch();
    if (epoch > max_seq_epoch || seq_counter_ > max_seq_counter) {
        ctx_.log(3, "cannot sign our peer record: its sequence numbers are used up",
                 {{"epoch", std::to_string(epoch)},
                  {"error", epoch > max_seq_epoch
                                ? "boot epoch above 2^34 (the clock that seeded it is centuries "
                                  "ahead); fix the clock and remove boot.epoch in the state dir"
                                : "2^30 records signed in this run; restart meshd"}});
        return false;
    }
    r.seq = epoch << seq_counter_bits | seq_counter_;
    r.lifetime_ms = static_cast<uint32_t>(
        std::clamp<uint64_t>(cfg.record_lifetime_ms, 1, peer_record::max_lifetime_ms));
    if (auto s = r.sign(ctx_.identity()); !s) {
        ctx_.log(3, "cannot sign our peer record", {{"error", s.err().message}});
        return false;
    }
    ++seq_counter_;
    note_resign(r, changes, first, old, now);
    self_ = std::move(r);
    self_dirty_ = false;
    // The next re-sign is due at half the lifetime less up to a tenth of it, at random: nodes
    // that started together (a site back from a power cut, the simulator) do not all re-sign in
    // the same instant for ever, where every HELLO at a re-sign would meet the others' newer
    // records at the relays, differ, and draw every record (docs/architecture.md "Record
    // refresh").
    const uint64_t spread = self_lifetime_ms() / 10;
    const uint64_t early = spread ? ctx_.random_u64() % spread : 0;
    self_signed_ms_ = now - std::min(now, early);
    push_record(self_, ctx_.id(), now, false);
    return true;
}

void membership::note_resign(const peer_record& next, const record_changes& changes, bool first,
                             bool due, uint64_t now) {
    const resign_reason why = resign_reason_of(changes, first, due);
    ++resigns_[static_cast<size_t>(why)];
    // A change is news (info: a user reading the log sees why the cluster got a new record of
    // ours); the start, a refresh and a forced re-sign are routine (debug). At most one info
    // line per reason a minute: an RTT that flaps must not flood the log.
    const bool routine = why == resign_reason::start || why == resign_reason::refresh ||
                         why == resign_reason::forced;
    uint64_t suppressed = 0;
    const bool info =
        !routine && resign_log_.should_log(ctx_.id(), to_string(why), now, &suppressed);
    core_context::log_fields f{{"reason", to_string(why)},
                               {"seq", std::to_string(next.seq & max_seq_counter)}};
    if (!first) append_change_fields(f, self_, next, ctx_.name_of);
    if (suppressed) f.emplace_back("suppressed", std::to_string(suppressed));
    ctx_.log(info ? 1 : 0, "signed our peer record", std::move(f));
}

result<put_outcome> membership::accept(const peer_record& rec, learned_via via, uint64_t now,
                                       uint64_t max_remaining_ms) {
    if (ctx_.revoked(rec.id())) {
        return error(errc::protocol_error,
                     "node " + rec.id().short_hex() + " (" + rec.name + ") is in revokedNodes");
    }
    // Only found relays depend on records; with relayNodes nothing is copied per record.
    auto before = ctx_.auto_relays() ? relay_facts_of(store_.find(rec.id())) : std::nullopt;
    // The record it may replace, for the debug line that says what changed (a newer seq is
    // rare: copies of what we hold, the common case, are not copied again here).
    std::optional<peer_record> prior;
    if (const peer_record* cur = store_.find(rec.id()); cur && cur->seq < rec.seq) prior = *cur;
    const uint64_t evicted = store_.evicted(), refused = store_.refused_full();
    auto put = store_.put(rec, now, max_remaining_ms);
    ctx_.admission.records_evicted += store_.evicted() - evicted;
    ctx_.admission.store_full += store_.refused_full() - refused;
    if (!put) return put;
    if (prior && (*put == put_outcome::replaced || *put == put_outcome::refreshed)) {
        core_context::log_fields f{{"peer", rec.name}, {"learned_via", to_string(via)}};
        append_change_fields(f, *prior, rec, ctx_.name_of);
        ctx_.log(0, *put == put_outcome::replaced ? "peer record changed" : "peer record refreshed",
                 std::move(f));
    }
    learned_[rec.id()] = learned_[rec.id()] | via;
    // A refresh (the same content at a newer seq) changes nothing anyone acts on: no relay
    // facts, and anti-entropy does not push it on (every node gets it from its relays; a LAN
    // island's rounds carry it, see docs/architecture.md "Record refresh").
    if (*put == put_outcome::inserted || *put == put_outcome::replaced) {
        on_record_changed_(rec, before);
    }
    return put;
}

result<put_outcome> membership::offer_record(const peer_record& rec, learned_via via,
                                             const node_id& from, uint64_t now,
                                             uint64_t max_remaining_ms) {
    if (rec.id() == ctx_.id()) return error(errc::invalid_argument, "our own record");
    auto put = accept(rec, via, now, max_remaining_ms);
    // A relay passes on what it learned from another relay (nodes that reach only us).
    if (put && *put != put_outcome::duplicate) {
        push_record(rec, from, now, *put == put_outcome::refreshed);
    }
    return put;
}

void membership::on_hello(const control_message& m, const hello_msg& b, const wg_endpoint& from,
                          uint64_t now) {
    if (!role_.relay_like()) return;  // only relays are rendezvous points
    // A new identity costs its source address a token: identities are cheap to make, and each
    // one admitted becomes state (record, registration, a WireGuard peer) on every node.
    if (!store_.find(m.sender) && !new_ids_.allow(new_ids_.key_of(from.address), now)) {
        ++ctx_.admission.new_identity_rate_limited;
        refused(m.sender, b.record.name,
                "new identities from " + from.address.str() + " over their rate", "rate", now);
        return;
    }
    auto put = accept(b.record, learned_via::registration, now);
    if (!put) {
        // Outdated seq is normal (a HELLO overtaken by a newer one); anything else is worth a line.
        if (!put.err().is(errc::already_exists)) {
            refused(m.sender, b.record.name, put.err().message,
                    std::to_string(static_cast<int>(put.err().code.value())), now);
        }
        return;
    }
    auto reg = registered_.find(m.sender);
    const bool renewed = reg != registered_.end() && reg->second.from == from &&
                         now <= reg->second.last_hello_ms + registration_ms();
    registered_[m.sender] = registration{from, now};
    dropped_.erase(m.sender);
    if (*put == put_outcome::inserted) {
        ctx_.log(1, "node registered", {{"peer", b.record.name}, {"endpoint", from.str()}});
    }
    if (*put != put_outcome::duplicate) {
        push_record(b.record, m.sender, now, *put == put_outcome::refreshed);
    }
    if (!(b.flags & hello_msg::flag_want_records)) return;
    if (b.flags & hello_msg::flag_digest) {
        // Compared after its record went in: in sync, it holds what we hold.
        const auto& d = digest();
        if (d.count() == b.count && d.digest() == b.digest) {
            // Nothing it lacks. A node registering anew (or from a new address), or one that
            // asks (flag_ack: it has no answer yet) still gets an answer, our own record: it
            // tells the node its HELLO was heard (it retries sooner until one is,
            // relay_directory).
            if ((!renewed || (b.flags & hello_msg::flag_ack)) && self_.seq) {
                std::vector<const peer_record*> one{&self_};
                ctx_.send_records(m.sender, from, b.request_id, one, now);
            }
            return;
        }
    }
    send_records(m.sender, from, b.request_id, now);
}

const record_digest& membership::digest() {
    const uint64_t self_seq = self_.seq;
    if (store_.generation() != digest_generation_ || self_seq != digest_self_seq_) {
        digest_.clear();
        store_.for_each_with_id(
            [&](const node_id& id, const peer_record& r) { digest_.add(id, r.seq); });
        if (self_seq) digest_.add(ctx_.id(), self_seq);  // 0: not signed yet
        digest_generation_ = store_.generation();
        digest_self_seq_ = self_seq;
    }
    return digest_;
}

void membership::refused(const node_id& who, const std::string& name, const std::string& why,
                         const std::string& reason, uint64_t now) {
    uint64_t suppressed = 0;
    if (!ctx_.refusal_log.should_log(who, reason, now, &suppressed)) {
        ++ctx_.admission.log_lines_suppressed;
        return;
    }
    core_context::log_fields f{{"peer", name}, {"error", why}};
    if (suppressed) f.emplace_back("suppressed", std::to_string(suppressed));
    ctx_.log(2, "registration refused", std::move(f));
}

void membership::on_records(const control_message& m, const records_msg& b, learned_via via,
                            uint64_t now) {
    // The relay is not trusted for their content: every record is verified against its own
    // node's key.
    for (const auto& r : b.records) {
        if (r.id() == ctx_.id()) continue;
        auto put = offer_record(r, via, m.sender, now);
        if (!put && !put.err().is(errc::already_exists)) {
            ctx_.log(0, "record refused", {{"peer", r.name}, {"error", put.err().message}});
        }
    }
}

size_t membership::drop_revoked() {
    // Every stored node that ctx_.revoked() refuses now (revokedNodes, or not listed in the
    // Kubernetes API under requireNode).
    std::vector<node_id> gone;
    store_.for_each_with_id([&](const node_id& id, const peer_record&) {
        if (ctx_.revoked(id)) gone.push_back(id);
    });
    for (const auto& id : gone) {
        auto reg = registered_.find(id);
        const peer_record* rec = store_.find(id);
        if (reg != registered_.end() && rec) {
            if (dropped_.size() >= max_dropped_registrations && !dropped_.contains(id)) {
                dropped_.erase(dropped_.begin());
            }
            dropped_[id] = dropped_registration{id, rec->wg_public_key, reg->second.from};
        }
        // No tombstone: unlisted again, the node is back with the record it has (same seq).
        store_.erase(id, false);
        registered_.erase(id);
        learned_.erase(id);
    }
    return gone.size();
}

std::vector<membership::dropped_registration> membership::take_readmitted() {
    std::vector<dropped_registration> back;
    for (auto it = dropped_.begin(); it != dropped_.end();) {
        if (ctx_.revoked(it->first)) {
            ++it;
            continue;
        }
        back.push_back(it->second);
        it = dropped_.erase(it);
    }
    return back;
}

bool membership::expire(uint64_t now) {
    bool dropped = store_.expire(now) > 0;
    if (dropped || learned_.size() > store_.size()) {
        std::erase_if(learned_, [&](const auto& kv) { return !store_.find(kv.first); });
    }
    return dropped;
}

learned_via_set membership::learned_of(const node_id& id) const {
    auto it = learned_.find(id);
    return it == learned_.end() ? 0 : it->second;
}

bool membership::refreshes_via_us(const node_id& to) const {
    // The node's record lists the relays it is attached to (registered with and up), sorted by
    // node ID: one of them, chosen by the node's own ID (random, so each relay pushes to its
    // share of the nodes), pushes refreshes to it. A node whose record lists none gets them
    // from every relay it registered with. One that misses a refresh at its chosen relay (that
    // relay went away and its record does not say so yet) still holds the older seq for half a
    // lifetime; its next HELLO's digest differs, and a relay answers with its records.
    const peer_record* r = store_.find(to);
    if (!r || r->relays.empty()) return true;
    return r->relays[to.data()[0] % r->relays.size()] == ctx_.id();
}

void membership::push_record(const peer_record& rec, const node_id& except, uint64_t now,
                             bool refresh) {
    if (!role_.relay_like()) return;
    for (auto it = registered_.begin(); it != registered_.end();) {
        // A node that stopped saying HELLO is no longer listening here.
        if (now > it->second.last_hello_ms + registration_ms()) {
            it = registered_.erase(it);
            continue;
        }
        // A refresh reaches each node from one of its relays, not from all of them: it extends
        // a lifetime, and a node that missed it holds the record for half a lifetime yet (its
        // next HELLO's digest differs, and a relay answers with what it lacks).
        if (it->first != except && it->first != rec.id() &&
            (!refresh || refreshes_via_us(it->first))) {
            ctx_.send(records_msg{0, {rec}}, it->first, it->second.from, 0, now);
        }
        ++it;
    }
}

void membership::send_records(const node_id& to, const wg_endpoint& ep, uint64_t request_id,
                              uint64_t now) {
    // Our own record first, then the store.
    std::vector<const peer_record*> all{&self_};
    store_.for_each([&](const peer_record& r) { all.push_back(&r); });
    ctx_.send_records(to, ep, request_id, all, now);
}

}  // namespace mw::meshd
