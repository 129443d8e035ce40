#include "meshd/core/mdns_querier.hpp"

#include <algorithm>
#include <limits>

namespace mw::meshd {

namespace {

// Known answers in one query: enough for a large LAN in one packet (~60 bytes each, compressed).
constexpr size_t max_known_answers = 100;

std::string key_of(const mdns_name& n) {
    std::string s = n.str();
    for (auto& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    return s;
}

// What keeps a found peer resolved: its SRV and TXT, its target's addresses (not the PTR, which
// the browse keeps, nor NSEC).
bool refreshed_type(uint16_t t) {
    return t == mdns_type::srv || t == mdns_type::txt || t == mdns_type::a || t == mdns_type::aaaa;
}

bool is_v6_link_local(const ip_address& a) {
    return a.is_v6() && a.data()[0] == 0xfe && (a.data()[1] & 0xc0) == 0x80;
}

}  // namespace

mdns_querier::mdns_querier(node_id self, std::vector<int> families, mdns_rng& rng)
    : self_(self), families_(std::move(families)), rng_(rng) {}

void mdns_querier::start(uint64_t now_ms) {
    running_ = true;
    // §5.2: the first query after a random 20-120 ms (hosts starting together spread out).
    browse_due_ms_ = now_ms + rng_.between(20, 120);
    interval_ms_ = first_interval_ms;
}

void mdns_querier::want(const mdns_name& n, uint16_t type, uint64_t now_ms) {
    auto key = std::make_pair(key_of(n), type);
    if (auto it = asked_ms_.find(key);
        it != asked_ms_.end() && now_ms < it->second + resolve_interval_ms)
        return;
    for (const auto& q : pending_)
        if (q.type == type && q.name == n) return;
    if (pending_.empty()) pending_due_ms_ = now_ms + rng_.between(20, 120);
    mdns_question q;
    q.name = n;
    q.type = type;
    pending_.push_back(std::move(q));
}

std::vector<mdns_peer> mdns_querier::peers(uint64_t now_ms) const {
    std::vector<mdns_peer> out;
    for (const auto* ptr : cache_.find(mdns_service_type(), mdns_type::ptr, now_ms)) {
        const auto* inst = std::get_if<mdns_name>(&ptr->rec.data);
        if (!inst || inst->labels.size() != mdns_service_type().labels.size() + 1) continue;
        auto srvs = cache_.find(*inst, mdns_type::srv, now_ms);
        auto txts = cache_.find(*inst, mdns_type::txt, now_ms);
        if (srvs.empty() || txts.empty()) continue;
        const auto& srv = std::get<mdns_srv>(srvs.front()->rec.data);
        std::optional<node_id> id;
        for (const auto& s : std::get<mdns_txt>(txts.front()->rec.data).strings)
            if (s.size() > 3 && mdns_label_equal(s.substr(0, 3), "id="))
                id = node_id::from_hex(std::string_view(s).substr(3));
        if (!id || *id == self_ || srv.port == 0) continue;
        mdns_peer p;
        p.instance = inst->labels.front();
        p.id = *id;
        for (uint16_t type : {mdns_type::a, mdns_type::aaaa})
            for (const auto* e : cache_.find(srv.target, type, now_ms)) {
                std::optional<ip_address> a;
                if (const auto* b4 = std::get_if<std::array<uint8_t, 4>>(&e->rec.data))
                    a = ip_address::from_bytes(AF_INET, b4->data(), 4);
                if (const auto* b6 = std::get_if<std::array<uint8_t, 16>>(&e->rec.data))
                    a = ip_address::from_bytes(AF_INET6, b6->data(), 16);
                // A v6 link-local address needs a scope (the interface) that an endpoint here
                // cannot carry: left out.
                if (a && !is_v6_link_local(*a)) p.endpoints.push_back({*a, srv.port});
            }
        if (p.endpoints.empty()) continue;
        std::sort(p.endpoints.begin(), p.endpoints.end(),
                  [](const wg_endpoint& x, const wg_endpoint& y) { return x.address < y.address; });
        out.push_back(std::move(p));
    }
    return out;
}

void mdns_querier::resolve(uint64_t now_ms) {
    for (const auto* ptr : cache_.find(mdns_service_type(), mdns_type::ptr, now_ms)) {
        const auto* inst = std::get_if<mdns_name>(&ptr->rec.data);
        if (!inst) continue;
        auto srvs = cache_.find(*inst, mdns_type::srv, now_ms);
        if (srvs.empty()) want(*inst, mdns_type::srv, now_ms);
        if (cache_.find(*inst, mdns_type::txt, now_ms).empty()) want(*inst, mdns_type::txt, now_ms);
        if (srvs.empty()) continue;
        const auto& target = std::get<mdns_srv>(srvs.front()->rec.data).target;
        if (cache_.find(target, mdns_type::a, now_ms).empty() &&
            cache_.find(target, mdns_type::aaaa, now_ms).empty()) {
            want(target, mdns_type::a, now_ms);
            want(target, mdns_type::aaaa, now_ms);
        }
    }
}

std::vector<mdns_name> mdns_querier::peer_names(uint64_t now_ms) const {
    std::vector<mdns_name> names;
    for (const auto& p : peers(now_ms)) {
        auto inst = mdns_service_type().prepend(p.instance);
        for (const auto* s : cache_.find(inst, mdns_type::srv, now_ms))
            names.push_back(std::get<mdns_srv>(s->rec.data).target);
        names.push_back(std::move(inst));
    }
    return names;
}

void mdns_querier::maintain(uint64_t now_ms) {
    auto names = peer_names(now_ms);
    for (auto& e : cache_.entries()) {
        if (!refreshed_type(e.rec.type) || e.refresh_due_ms() > now_ms) continue;
        if (std::find(names.begin(), names.end(), e.rec.name) == names.end()) continue;
        want(e.rec.name, e.rec.type, now_ms);
        ++e.refreshes;
    }
}

uint64_t mdns_querier::next_refresh_ms(uint64_t now_ms) const {
    uint64_t t = mdns_never;
    auto names = peer_names(now_ms);
    for (const auto& e : cache_.entries())
        if (refreshed_type(e.rec.type) &&
            std::find(names.begin(), names.end(), e.rec.name) != names.end())
            t = std::min(t, e.refresh_due_ms());
    return t;
}

void mdns_querier::on_response(const mdns_message& r, uint64_t now_ms) {
    if (!running_) return;
    for (const auto* section : {&r.answers, &r.additionals})
        for (const auto& rec : *section)
            if (rec.rclass == mdns_class_in) cache_.add(rec, now_ms);
    cache_.expire(now_ms);
    resolve(now_ms);
    next_refresh_ms_ = next_refresh_ms(now_ms);
    for (auto& p : peers(now_ms)) {
        auto key = key_of(mdns_service_type().prepend(p.instance));
        auto it = reported_.find(key);
        if (it != reported_.end() && it->second == p) continue;
        reported_[key] = p;
        found_.push_back(std::move(p));
    }
}

void mdns_querier::on_timer(uint64_t now_ms, std::vector<mdns_datagram>& out) {
    if (!running_) return;
    cache_.expire(now_ms);
    maintain(now_ms);
    next_refresh_ms_ = next_refresh_ms(now_ms);
    bool browse = now_ms >= browse_due_ms_;
    bool resolve_due = !pending_.empty() && now_ms >= pending_due_ms_;
    if (!browse && !resolve_due) return;
    mdns_message q;
    if (browse) {
        mdns_question b;
        b.name = mdns_service_type();
        b.type = mdns_type::ptr;
        q.questions.push_back(b);
        for (const auto& r : own_) {
            q.answers.push_back(r);
            q.answers.back().cache_flush = false;
        }
        for (const auto* e : cache_.find(mdns_service_type(), mdns_type::ptr, now_ms)) {
            if (q.answers.size() >= max_known_answers) break;
            uint32_t left = e->remaining_s(now_ms);
            if (left <= e->rec.ttl / 2) continue;  // §7.1: only answers with over half their TTL
            q.answers.push_back(e->rec);
            q.answers.back().ttl = left;
            q.answers.back().cache_flush = false;
        }
        browse_due_ms_ = now_ms + interval_ms_;
        interval_ms_ = std::min(interval_ms_ * 2, max_interval_ms);
    }
    for (auto& p : pending_) {
        asked_ms_[{key_of(p.name), p.type}] = now_ms;
        q.questions.push_back(std::move(p));
    }
    pending_.clear();
    std::erase_if(asked_ms_, [&](const auto& kv) { return now_ms >= kv.second + 60000; });
    auto bytes = q.encode();
    if (!bytes) return;
    // One family is enough: answers go out on every family the responders have, and asking on
    // both would make each responder answer twice (the second time a second later, after its
    // per-record rate limit). IPv4 when the link has it.
    if (families_.empty()) return;
    out.push_back({*bytes, mdns_group(families_.front())});
    ++queries_sent_;
}

uint64_t mdns_querier::next_deadline() const noexcept {
    if (!running_) return mdns_never;
    uint64_t t = std::min(browse_due_ms_, cache_.next_expiry());
    t = std::min(t, next_refresh_ms_);
    if (!pending_.empty()) t = std::min(t, pending_due_ms_);
    return t;
}

std::vector<mdns_peer> mdns_querier::take_found() {
    return std::exchange(found_, {});
}

}  // namespace mw::meshd
