#include "meshd/core/route_authority.hpp"

#include <algorithm>

namespace mw::meshd {

const char* to_string(cidr_refusal r) noexcept {
    switch (r) {
        case cidr_refusal::outside_cluster:
            return "outside_cluster";
        case cidr_refusal::wrong_block_size:
            return "wrong_block_size";
        case cidr_refusal::overlaps_own:
            return "overlaps_own";
        case cidr_refusal::covers_underlay:
            return "covers_underlay";
        case cidr_refusal::overlaps_peer:
            return "overlaps_peer";
        case cidr_refusal::no_node:
            return "no_node";
        case cidr_refusal::not_node_podcidr:
            return "not_node_podcidr";
    }
    return "?";
}

namespace {

bool overlaps(const ip_prefix& a, const ip_prefix& b) {
    return a.family() == b.family() && (a.contains(b.address()) || b.contains(a.address()));
}

// Ranges that are every host's own, never a pod's: "this network", loopback, link-local (with the
// cloud metadata address 169.254.169.254), multicast and reserved, and their IPv6 forms. Routing
// any part of them into the tunnel hands a thief the host's own traffic.
const std::vector<ip_prefix>& host_ranges() {
    static const std::vector<ip_prefix> r = [] {
        std::vector<ip_prefix> v;
        for (const char* s :
             {"0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128",
              "::1/128", "::ffff:0:0/96", "fe80::/10", "ff00::/8"}) {
            v.push_back(ip_prefix::parse(s).value());
        }
        return v;
    }();
    return r;
}

}  // namespace

bool route_policy::in_cluster(const ip_address& a) const {
    return std::any_of(cluster_cidrs.begin(), cluster_cidrs.end(), [&](const ip_prefix& c) {
        return c.family() == a.family() && c.contains(a);
    });
}

std::optional<cidr_refusal> route_policy::check_shape(const ip_prefix& p) const {
    const int mask = node_mask(p);
    if (cluster_cidrs.empty()) {
        if (p.length() < mask) return cidr_refusal::wrong_block_size;
        return std::nullopt;
    }
    bool inside = std::any_of(cluster_cidrs.begin(), cluster_cidrs.end(), [&](const ip_prefix& c) {
        return c.family() == p.family() && c.length() <= p.length() && c.contains(p.address());
    });
    if (!inside) return cidr_refusal::outside_cluster;
    if (p.length() != mask) return cidr_refusal::wrong_block_size;
    return std::nullopt;
}

bool route_authority::pod_space(const ip_address& a) const {
    if (policy_.in_cluster(a)) return true;
    // One lookup per distinct block length (a cluster has one or two: /24 and /64), not per Node.
    for (int len : node_block_lens_) {
        if (len > a.bits()) continue;
        if (node_blocks_.count(key{ip_prefix(a, len).network().address(), len})) return true;
    }
    return false;
}

std::optional<cidr_refusal> route_authority::check_node(const node_cidrs& by_node,
                                                        const node_id& id,
                                                        const ip_prefix& c) const {
    auto it = by_node.find(id);
    if (it == by_node.end()) return cidr_refusal::no_node;
    const bool inside = std::any_of(it->second.begin(), it->second.end(), [&](const ip_prefix& b) {
        return b.family() == c.family() && b.length() <= c.length() && b.contains(c.address());
    });
    if (!inside) return cidr_refusal::not_node_podcidr;
    // clusterCIDRs, if set, still bound it (a Node's podCIDRs outside them is a mis-set cluster);
    // the block size is the Node's.
    if (auto s = policy_.check_shape(c); s == cidr_refusal::outside_cluster) return s;
    return std::nullopt;
}

bool route_authority::covers_underlay(const ip_prefix& p) const {
    const ip_address first = p.first(), last = p.last();
    auto in_range = [&](const ip_address& a) { return a.family() == p.family() && !(last < a); };
    auto h = host_underlay_.lower_bound(first);
    if (h != host_underlay_.end() && in_range(*h)) return true;
    auto r = record_underlay_.lower_bound(first);
    return r != record_underlay_.end() && in_range(r->first);
}

std::optional<node_id> route_authority::overlapping_pin(const ip_prefix& p,
                                                        const node_id& self) const {
    // Pins containing p: one lookup per shorter-or-equal length.
    for (int len = 0; len <= p.length(); ++len) {
        auto it = pins_.find(key{ip_prefix(p.address(), len).network().address(), len});
        if (it != pins_.end() && !(it->second == self)) return it->second;
    }
    // Pins inside p: their network addresses lie in [first, last].
    const ip_address last = p.last();
    for (auto it = pins_.lower_bound(key{p.first(), 0});
         it != pins_.end() && !(last < it->first.first); ++it) {
        if (it->first.first.family() != p.family()) break;
        if (it->first.second >= p.length() && !(it->second == self)) return it->second;
    }
    return std::nullopt;
}

void route_authority::owners_of_pins_covering(const ip_address& a, std::set<node_id>& out) const {
    for (int len = 0; len <= a.bits(); ++len) {
        auto it = pins_.find(key{ip_prefix(a, len).network().address(), len});
        if (it != pins_.end()) out.insert(it->second);
    }
}

bool route_authority::evaluate(const node_id& id, node_state& st) {
    for (const auto& p : st.d.accepted) {
        auto it = pins_.find(key{p.address(), p.length()});
        if (it != pins_.end() && it->second == id) pins_.erase(it);
    }
    decision d;
    for (const auto& raw : st.claims) {
        const ip_prefix c = raw.network();
        if (std::find(d.accepted.begin(), d.accepted.end(), c) != d.accepted.end() ||
            std::any_of(d.refused.begin(), d.refused.end(),
                        [&](const refused_cidr& r) { return r.cidr == c; })) {
            continue;  // listed twice in one record
        }
        std::optional<cidr_refusal> why =
            node_cidrs_ ? check_node(*node_cidrs_, id, c) : policy_.check_shape(c);
        if (!why && std::any_of(policy_.own_cidrs.begin(), policy_.own_cidrs.end(),
                                [&](const ip_prefix& o) { return overlaps(o, c); })) {
            why = cidr_refusal::overlaps_own;
        }
        if (!why && (covers_underlay(c) ||
                     std::any_of(host_ranges().begin(), host_ranges().end(),
                                 [&](const ip_prefix& h) { return overlaps(h, c); }))) {
            why = cidr_refusal::covers_underlay;
        }
        if (!why && overlapping_pin(c, id)) why = cidr_refusal::overlaps_peer;
        if (why) {
            d.refused.push_back({c, *why});
        } else {
            pins_[key{c.address(), c.length()}] = id;
            d.accepted.push_back(c);
        }
    }
    // Report each refusal once while the node claims that prefix.
    std::erase_if(st.reported, [&](const refused_cidr& r) {
        return std::none_of(st.claims.begin(), st.claims.end(),
                            [&](const ip_prefix& c) { return c.network() == r.cidr; });
    });
    for (const auto& r : d.refused) {
        if (std::find(st.reported.begin(), st.reported.end(), r) != st.reported.end()) continue;
        st.reported.push_back(r);
        new_refusals_.push_back({id, r});
        ++totals_[static_cast<size_t>(r.reason)];
    }
    bool diff = !(d == st.d);
    st.d = std::move(d);
    return diff;
}

void route_authority::reevaluate_refused(std::set<node_id>& out) {
    for (auto& [id, st] : nodes_) {
        if (st.d.refused.empty()) continue;
        if (evaluate(id, st)) out.insert(id);
    }
}

void route_authority::reevaluate_all(std::set<node_id>& out) {
    // evaluate() never takes another node's pin, so the order keeps first-claim-wins.
    for (auto& [id, st] : nodes_) {
        if (evaluate(id, st)) out.insert(id);
    }
    // A prefix released above may free another's claim.
    reevaluate_refused(out);
}

void route_authority::add_addr(const ip_address& a, std::vector<ip_address>& added) {
    // An address inside a clusterCIDR or a Node's podCIDRs is pod address space, not underlay.
    if (pod_space(a)) return;
    if (record_underlay_[a]++ == 0) added.push_back(a);
}

void route_authority::drop_addr(const ip_address& a, bool& loosened) {
    auto it = record_underlay_.find(a);
    if (it == record_underlay_.end()) return;
    if (--it->second == 0) {
        record_underlay_.erase(it);
        loosened = true;
    }
}

route_authority::changed route_authority::set_host_underlay(std::vector<ip_address> addrs) {
    std::set<ip_address> next(addrs.begin(), addrs.end());
    if (next == host_underlay_) return {};
    host_underlay_ = std::move(next);
    // Rare (an address or relayNodes change): every node is decided again.
    std::set<node_id> out;
    reevaluate_all(out);
    return to_vector(out);
}

route_authority::changed route_authority::set_node_cidrs(std::optional<node_cidrs> by_node) {
    if (by_node) {
        for (auto& [id, blocks] : *by_node) {
            for (auto& b : blocks) b = b.network();
            std::sort(blocks.begin(), blocks.end(), [](const ip_prefix& x, const ip_prefix& y) {
                return x.address() < y.address() ||
                       (x.address() == y.address() && x.length() < y.length());
            });
            blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
        }
    }
    if (by_node == node_cidrs_) return {};
    node_cidrs_ = std::move(by_node);
    node_blocks_.clear();
    node_block_lens_.clear();
    if (node_cidrs_) {
        for (const auto& [id, blocks] : *node_cidrs_) {
            for (const auto& b : blocks) {
                node_blocks_.insert(key{b.address(), b.length()});
                node_block_lens_.insert(b.length());
            }
        }
    }
    // What is pod space changed: the record addresses counted as underlay are counted again.
    record_underlay_.clear();
    std::vector<ip_address> ignored;
    for (const auto& [id, st] : nodes_) {
        for (const auto& a : st.addrs) add_addr(a, ignored);
    }
    // Rare (a Node added, deleted or given podCIDRs): every node is decided again.
    std::set<node_id> out;
    reevaluate_all(out);
    return to_vector(out);
}

route_authority::changed route_authority::update(const node_id& id,
                                                 const std::vector<ip_prefix>& claims,
                                                 const std::vector<ip_address>& addrs) {
    auto [it, inserted] = nodes_.try_emplace(id);
    node_state& st = it->second;
    if (!inserted && st.claims == claims && st.addrs == addrs) return {};
    std::set<node_id> out;
    bool loosened = false;
    std::vector<ip_address> added;
    for (const auto& a : addrs) add_addr(a, added);
    for (const auto& a : st.addrs) drop_addr(a, loosened);
    st.addrs = addrs;
    st.claims = claims;
    // New underlay addresses revoke the pins that cover them (this node's own are decided below).
    std::set<node_id> hit;
    for (const auto& a : added) owners_of_pins_covering(a, hit);
    const auto before = st.d.accepted;
    if (evaluate(id, st) || inserted) out.insert(id);
    for (const auto& p : before) {
        if (std::find(st.d.accepted.begin(), st.d.accepted.end(), p) == st.d.accepted.end())
            loosened = true;  // a pin this node held is free again
    }
    for (const auto& h : hit) {
        if (h == id) continue;
        auto n = nodes_.find(h);
        if (n != nodes_.end() && evaluate(h, n->second)) {
            out.insert(h);
            loosened = true;
        }
    }
    if (loosened) reevaluate_refused(out);
    return to_vector(out);
}

route_authority::changed route_authority::remove(const node_id& id) {
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return {};
    bool loosened = !it->second.d.accepted.empty();
    for (const auto& p : it->second.d.accepted) {
        auto pin = pins_.find(key{p.address(), p.length()});
        if (pin != pins_.end() && pin->second == id) pins_.erase(pin);
    }
    for (const auto& a : it->second.addrs) drop_addr(a, loosened);
    nodes_.erase(it);
    std::set<node_id> out;
    if (loosened) reevaluate_refused(out);
    return to_vector(out);
}

const route_authority::decision* route_authority::find(const node_id& id) const {
    auto it = nodes_.find(id);
    return it == nodes_.end() ? nullptr : &it->second.d;
}

std::array<uint64_t, cidr_refusal_count> route_authority::refused_now() const {
    std::array<uint64_t, cidr_refusal_count> n{};
    for (const auto& [id, st] : nodes_) {
        for (const auto& r : st.d.refused) ++n[static_cast<size_t>(r.reason)];
    }
    return n;
}

std::optional<node_id> route_authority::owner(const ip_prefix& p) const {
    auto it = pins_.find(key{p.network().address(), p.length()});
    if (it == pins_.end()) return std::nullopt;
    return it->second;
}

}  // namespace mw::meshd
