#include "meshd/core/mdns_responder.hpp"

#include <algorithm>
#include <limits>
#include <tuple>

namespace mw::meshd {

namespace {

bool matches(const mdns_question& q, const mdns_record& r) {
    return (q.type == mdns_type::any || q.type == r.type) &&
           (q.qclass == mdns_class_in || q.qclass == mdns_type::any) && q.name == r.name;
}

// A known answer in the query suppresses ours when it is the same record with at least half our
// TTL left (RFC 6762 §7.1).
bool known(const mdns_message& q, const mdns_record& r) {
    for (const auto& k : q.answers)
        if (k.same_record(r) && k.ttl >= r.ttl / 2) return true;
    return false;
}

// The order RFC 6762 §8.2 compares probe records in: class, type, then rdata bytes.
auto probe_key(const mdns_record& r) {
    return std::make_tuple(r.rclass, r.type, r.canonical_rdata());
}

}  // namespace

mdns_responder::mdns_responder(mdns_service_info info, std::vector<int> families, mdns_rng& rng)
    : info_(std::move(info)), families_(std::move(families)), rng_(rng) {
    instance_ = info_.instance;
    host_label_ = info_.host_label;
    // Instance names are free text up to 63 bytes (RFC 6763 §4.1.1); a longer nodeName is cut.
    if (instance_.size() > mdns_name::max_label) instance_.resize(mdns_name::max_label);
    inst_name_ = mdns_service_type().prepend(instance_);
    host_name_ = mdns_name{{host_label_, "local"}};
}

std::vector<mdns_record> mdns_responder::records() const {
    std::vector<mdns_record> out;
    out.reserve(records_.size());
    for (const auto& o : records_) out.push_back(o.rec);
    return out;
}

bool mdns_responder::is_own(const mdns_record& r) const noexcept {
    for (const auto& o : records_)
        if (o.rec.same_record(r)) return true;
    return false;
}

bool mdns_responder::is_our_unique_name(const mdns_name& n) const noexcept {
    return n == inst_name_ || n == host_name_;
}

// Rebuilds the record set from info_, the (possibly renamed) names and addrs_. Multicast timing
// of records that stay is kept (the rate limit must survive a rebuild).
void mdns_responder::rebuild(std::vector<mdns_datagram>& out, uint64_t now_ms,
                             bool addresses_only) {
    std::vector<owned> next;
    auto add = [&](mdns_name name, uint16_t type, uint32_t ttl, bool unique, mdns_rdata data) {
        owned o;
        o.rec.name = std::move(name);
        o.rec.type = type;
        o.rec.ttl = ttl;
        o.rec.cache_flush = unique;
        o.rec.data = std::move(data);
        next.push_back(std::move(o));
    };
    add(mdns_services_meta(), mdns_type::ptr, mdns_other_ttl_s, false, mdns_service_type());
    add(mdns_service_type(), mdns_type::ptr, mdns_other_ttl_s, false, inst_name_);
    add(inst_name_, mdns_type::srv, mdns_host_ttl_s, true, mdns_srv{0, 0, info_.port, host_name_});
    add(inst_name_, mdns_type::txt, mdns_other_ttl_s, true, mdns_txt{info_.txt});
    bool has_v4 = false, has_v6 = false;
    for (const auto& a : addrs_) {
        if (a.is_v4()) {
            std::array<uint8_t, 4> b{};
            std::copy_n(a.data(), 4, b.begin());
            add(host_name_, mdns_type::a, mdns_host_ttl_s, true, b);
            has_v4 = true;
        } else {
            std::array<uint8_t, 16> b{};
            std::copy_n(a.data(), 16, b.begin());
            add(host_name_, mdns_type::aaaa, mdns_host_ttl_s, true, b);
            has_v6 = true;
        }
    }
    add(inst_name_, mdns_type::nsec, mdns_host_ttl_s, true,
        mdns_nsec{inst_name_, {mdns_type::txt, mdns_type::srv}});
    std::vector<uint16_t> host_types;
    if (has_v4) host_types.push_back(mdns_type::a);
    if (has_v6) host_types.push_back(mdns_type::aaaa);
    add(host_name_, mdns_type::nsec, mdns_host_ttl_s, true, mdns_nsec{host_name_, host_types});

    // Goodbyes for announced address records that are gone (§10.1), so that peers drop a dead
    // address at once instead of after 120 s.
    if (addresses_only && (state_ == state::announcing || state_ == state::announced)) {
        mdns_message bye;
        bye.flags = mdns_message::flag_response | mdns_message::flag_authoritative;
        for (const auto& o : records_) {
            if (o.rec.type != mdns_type::a && o.rec.type != mdns_type::aaaa) continue;
            bool kept = std::any_of(next.begin(), next.end(),
                                    [&](const owned& n) { return n.rec.same_record(o.rec); });
            if (kept || !o.last_multicast_ms) continue;
            bye.answers.push_back(o.rec);
            bye.answers.back().ttl = 0;
        }
        if (!bye.answers.empty()) {
            multicast(bye, out);
            ++stats_.goodbyes;
        }
    }
    for (auto& n : next)
        for (const auto& o : records_)
            if (o.rec.same_record(n.rec)) n.last_multicast_ms = o.last_multicast_ms;
    (void)now_ms;
    records_ = std::move(next);
}

void mdns_responder::set_addresses(std::vector<ip_address> addrs, uint64_t now_ms,
                                   std::vector<mdns_datagram>& out) {
    std::sort(addrs.begin(), addrs.end());
    addrs.erase(std::unique(addrs.begin(), addrs.end()), addrs.end());
    // At most max_addresses per family (the first in sort order: stable across calls).
    std::vector<ip_address> kept;
    size_t n4 = 0, n6 = 0;
    for (const auto& a : addrs) {
        size_t& n = a.is_v4() ? n4 : n6;
        if (n < max_addresses) {
            kept.push_back(a);
            ++n;
        }
    }
    if (kept == addrs_ && state_ != state::idle) return;
    if (state_ == state::stopped) return;
    if (kept.empty()) {
        stop(now_ms, out);
        addrs_.clear();
        state_ = state::idle;
        return;
    }
    bool was_idle = state_ == state::idle;
    addrs_ = std::move(kept);
    rebuild(out, now_ms, true);
    if (was_idle) {
        // §8.1: the first probe after a random 0-250 ms, so that hosts powered on together do
        // not probe in lockstep.
        begin_probing(now_ms, rng_.between(0, probe_interval_ms));
    } else if (state_ == state::announcing || state_ == state::announced) {
        // §8.4: changed data is announced again (the announcement sequence restarts).
        state_ = state::announcing;
        step_ = 0;
        phase_due_ms_ = now_ms;
    }
    // While probing, the next probe carries the new addresses.
}

void mdns_responder::begin_probing(uint64_t now_ms, uint64_t delay_ms) {
    state_ = state::probing;
    step_ = 0;
    phase_due_ms_ = now_ms + delay_ms;
    for (auto& o : records_) o.pending_ms.reset();
}

std::vector<mdns_record> mdns_responder::probe_authority() const {
    std::vector<mdns_record> auth;
    for (const auto& o : records_)
        if (o.rec.cache_flush && o.rec.type != mdns_type::nsec) {
            auth.push_back(o.rec);
            auth.back().cache_flush = false;  // §8.1: the authority section has no flush bit
        }
    return auth;
}

void mdns_responder::send_probe(uint64_t now_ms, std::vector<mdns_datagram>& out) {
    (void)now_ms;
    mdns_message m;
    for (const auto* n : {&inst_name_, &host_name_}) {
        mdns_question q;
        q.name = *n;
        q.type = mdns_type::any;
        // §8.1: probes ask for unicast answers (a defending host answers the prober directly).
        q.unicast_response = step_ == 0;
        m.questions.push_back(q);
    }
    m.authorities = probe_authority();
    multicast(m, out);
}

void mdns_responder::send_announcement(uint64_t now_ms, std::vector<mdns_datagram>& out) {
    mdns_message m;
    m.flags = mdns_message::flag_response | mdns_message::flag_authoritative;
    for (auto& o : records_) {
        m.answers.push_back(o.rec);
        o.last_multicast_ms = now_ms;
        o.pending_ms.reset();
    }
    multicast(m, out);
    stats_.announcements += families_.size();
}

void mdns_responder::multicast(const mdns_message& m, std::vector<mdns_datagram>& out) {
    auto bytes = m.encode();
    if (!bytes) return;  // our own records always encode; nothing to send otherwise
    for (int f : families_) out.push_back({*bytes, mdns_group(f)});
}

void mdns_responder::schedule(owned& o, uint64_t at_ms, uint64_t min_interval_ms) {
    if (o.last_multicast_ms) at_ms = std::max(at_ms, *o.last_multicast_ms + min_interval_ms);
    if (!o.pending_ms || at_ms < *o.pending_ms) o.pending_ms = at_ms;
}

std::vector<const mdns_responder::owned*> mdns_responder::additionals_for(
    const std::vector<const owned*>& answers) const {
    std::vector<const owned*> extra;
    auto want = [&](const owned& o) {
        if (std::find(answers.begin(), answers.end(), &o) != answers.end()) return;
        if (std::find(extra.begin(), extra.end(), &o) != extra.end()) return;
        extra.push_back(&o);
    };
    bool inst = false, host = false;
    for (const auto* a : answers) {
        if (a->rec.type == mdns_type::ptr && a->rec.name == mdns_service_type()) inst = host = true;
        if (a->rec.name == inst_name_) host = true;
    }
    for (const auto& o : records_) {
        if (inst && o.rec.name == inst_name_) want(o);
        if (host && o.rec.name == host_name_) want(o);
    }
    return extra;
}

void mdns_responder::on_query(const mdns_message& q, const wg_endpoint& from, uint64_t now_ms,
                              std::vector<mdns_datagram>& out) {
    if (state_ == state::probing) {
        // §8.2 simultaneous probe: another host probes for one of our names. Compare the
        // authority records; the lexicographically later set wins. Identical sets are not a
        // conflict (our own probe looped back, or a copy of us).
        for (const auto* name : {&inst_name_, &host_name_}) {
            std::vector<mdns_record> theirs, ours;
            for (const auto& r : q.authorities)
                if (r.name == *name) theirs.push_back(r);
            if (theirs.empty()) continue;
            for (const auto& r : probe_authority())
                if (r.name == *name) ours.push_back(r);
            auto by_key = [](const mdns_record& a, const mdns_record& b) {
                return probe_key(a) < probe_key(b);
            };
            std::sort(theirs.begin(), theirs.end(), by_key);
            std::sort(ours.begin(), ours.end(), by_key);
            std::vector<decltype(probe_key(ours[0]))> ko, kt;
            for (const auto& r : ours) ko.push_back(probe_key(r));
            for (const auto& r : theirs) kt.push_back(probe_key(r));
            if (ko < kt) {
                // We lose: wait a second and probe again (§8.2); if they announce, that is a
                // conflict and we rename.
                begin_probing(now_ms, 1000);
                return;
            }
        }
        return;
    }
    if (state_ != state::announcing && state_ != state::announced) return;

    const bool legacy = from.port != mdns_port;
    const bool is_probe = !q.authorities.empty();
    std::vector<const owned*> unicast_answers;
    for (const auto& question : q.questions) {
        for (auto& o : records_) {
            if (!matches(question, o.rec)) continue;
            if (!legacy && known(q, o.rec)) continue;
            bool recent = o.last_multicast_ms && now_ms < *o.last_multicast_ms + o.rec.ttl * 250ull;
            if (legacy || (question.unicast_response && recent)) {
                if (std::find(unicast_answers.begin(), unicast_answers.end(), &o) ==
                    unicast_answers.end())
                    unicast_answers.push_back(&o);
                continue;
            }
            // §6: a unique record answers at once (we are its only owner); a shared one after
            // 20-120 ms so that answers from several hosts do not collide; 400-500 ms when the
            // querier said more known answers follow (TC). A probe for our name is defended
            // within 250 ms.
            uint64_t delay = o.rec.cache_flush ? 0 : rng_.between(20, 120);
            if (q.flags & mdns_message::flag_truncated) delay = rng_.between(400, 500);
            schedule(o, now_ms + delay, is_probe ? probe_defense_interval_ms : record_interval_ms);
        }
    }
    if (!unicast_answers.empty()) {
        mdns_message r;
        r.flags = mdns_message::flag_response | mdns_message::flag_authoritative;
        auto add = [&](std::vector<mdns_record>& section, const owned* o) {
            section.push_back(o->rec);
            if (legacy) {
                section.back().cache_flush = false;
                section.back().ttl = std::min(section.back().ttl, mdns_legacy_ttl_s);
            }
        };
        if (legacy) {
            // §6.7: the reply looks like a unicast DNS answer: the query's ID and question.
            r.id = q.id;
            r.questions = q.questions;
            for (auto& qq : r.questions) qq.unicast_response = false;
        }
        for (const auto* o : unicast_answers) add(r.answers, o);
        for (const auto* o : additionals_for(unicast_answers)) add(r.additionals, o);
        if (auto bytes = r.encode()) {
            out.push_back({std::move(*bytes), from});
            ++stats_.answers;
            if (legacy) ++stats_.legacy_answers;
        }
    }
    flush_pending(now_ms, out);
}

void mdns_responder::on_response(const mdns_message& r, uint64_t now_ms) {
    if (state_ == state::idle || state_ == state::stopped) return;
    for (const auto* section : {&r.answers, &r.additionals}) {
        for (const auto& rec : *section) {
            if (rec.ttl == 0 || !is_our_unique_name(rec.name)) continue;
            if (rec.type == mdns_type::nsec) continue;  // negative answers are not claims
            bool ours_of_type = false, same = false;
            for (const auto& o : records_) {
                if (o.rec.type != rec.type || !(o.rec.name == rec.name)) continue;
                ours_of_type = true;
                if (o.rec.data == rec.data) same = true;
            }
            // Same data is not a conflict (§9); a type we do not have under this name is
            // somebody else's record for it, and that is a conflict for a unique name.
            if (same) continue;
            (void)ours_of_type;
            conflict(now_ms);
            return;
        }
    }
}

void mdns_responder::conflict(uint64_t now_ms) {
    // §9: rename and probe again. The instance name gets " (n)" (RFC 6763 §4.1.1's usual form);
    // the host label a "-n".
    ++rename_count_;
    ++stats_.conflicts;
    std::string suffix = " (" + std::to_string(rename_count_) + ")";
    instance_ = info_.instance.substr(0, mdns_name::max_label - suffix.size()) + suffix;
    std::string hsuffix = "-" + std::to_string(rename_count_);
    host_label_ = info_.host_label.substr(0, mdns_name::max_label - hsuffix.size()) + hsuffix;
    inst_name_ = mdns_service_type().prepend(instance_);
    host_name_ = mdns_name{{host_label_, "local"}};
    std::vector<mdns_datagram> none;
    rebuild(none, now_ms, false);
    for (auto& o : records_) o.last_multicast_ms.reset();
    // §9: after 15 conflicts in 10 s a host waits 5 s before probing again; we wait a second
    // every time (a rename gives a fresh name, so a storm needs many nodes named alike).
    begin_probing(now_ms, rename_count_ > 15 ? 5000 : rng_.between(0, probe_interval_ms));
}

void mdns_responder::flush_pending(uint64_t now_ms, std::vector<mdns_datagram>& out) {
    std::vector<const owned*> due;
    for (auto& o : records_)
        if (o.pending_ms && *o.pending_ms <= now_ms) due.push_back(&o);
    if (due.empty()) return;
    mdns_message m;
    m.flags = mdns_message::flag_response | mdns_message::flag_authoritative;
    auto extra = additionals_for(due);
    for (const auto* o : due) m.answers.push_back(o->rec);
    for (const auto* o : extra) m.additionals.push_back(o->rec);
    for (auto& o : records_) {
        if (std::find(due.begin(), due.end(), &o) == due.end() &&
            std::find(extra.begin(), extra.end(), &o) == extra.end())
            continue;
        o.last_multicast_ms = now_ms;
        o.pending_ms.reset();
    }
    multicast(m, out);
    ++stats_.answers;
}

void mdns_responder::on_timer(uint64_t now_ms, std::vector<mdns_datagram>& out) {
    if (state_ == state::probing && now_ms >= phase_due_ms_) {
        if (step_ < probe_count) {
            send_probe(now_ms, out);
            ++step_;
            phase_due_ms_ = now_ms + probe_interval_ms;
        } else {
            // §8.1: no conflicting answer 250 ms after the third probe: the names are ours.
            state_ = state::announcing;
            step_ = 0;
            phase_due_ms_ = now_ms;
        }
    }
    if (state_ == state::announcing && now_ms >= phase_due_ms_) {
        send_announcement(now_ms, out);
        ++step_;
        if (step_ >= announce_count) {
            state_ = state::announced;
        } else {
            // §8.3: at least one second apart, the interval doubling.
            phase_due_ms_ = now_ms + (1000ull << (step_ - 1));
        }
    }
    if (state_ == state::announcing || state_ == state::announced) flush_pending(now_ms, out);
}

void mdns_responder::stop(uint64_t now_ms, std::vector<mdns_datagram>& out) {
    (void)now_ms;
    if (state_ == state::announcing || state_ == state::announced) {
        mdns_message m;
        m.flags = mdns_message::flag_response | mdns_message::flag_authoritative;
        for (const auto& o : records_) {
            if (o.rec.type == mdns_type::nsec) continue;
            m.answers.push_back(o.rec);
            m.answers.back().ttl = 0;
        }
        multicast(m, out);
        ++stats_.goodbyes;
    }
    state_ = state::stopped;
}

uint64_t mdns_responder::next_deadline() const noexcept {
    uint64_t t = mdns_never;
    if (state_ == state::probing || state_ == state::announcing) t = phase_due_ms_;
    if (state_ == state::announcing || state_ == state::announced)
        for (const auto& o : records_)
            if (o.pending_ms) t = std::min(t, *o.pending_ms);
    return t;
}

}  // namespace mw::meshd
