// Route authority (issue 17): which of the pod CIDRs a node claims in its record this node routes
// to it (WireGuard allowed-ips and main-table routes). A record is signed by its node, but any PSK
// holder can sign a record claiming anything: another node's /24 split into two /25s (longest
// match wins), 8.0.0.0/8, two /1s (the underlay itself), or an exact duplicate (which made the
// whole WireGuard apply fail on every node). So a claim is accepted only when all of these hold,
// checked in this order (the first that fails is the refusal's reason):
//   no_node           the Kubernetes authority is on (set_node_cidrs) and no Node carries the
//                     claiming node's ID: it gets no routes at all;
//   not_node_podcidr  the Kubernetes authority is on and no spec.podCIDRs entry of the Node(s)
//                     carrying its ID contains the claim (a /25 of it is inside, 8.0.0.0/8 not);
//   outside_cluster   clusterCIDRs is set and no clusterCIDR of its family contains it;
//   wrong_block_size  clusterCIDRs set: its length is not exactly nodeCIDRMaskSize of its family;
//                     not set: it is shorter than that (a /8 or a /1 is never a node's block);
//                     not checked under the Kubernetes authority (the Node's block bounds it);
//   overlaps_own      it overlaps one of this node's own podCIDRs;
//   covers_underlay   it contains an underlay address we know: this node's host addresses, the
//                     configured relay and bootstrap addresses (the "host underlay"), and every
//                     endpoint address any record advertises (record addresses inside a
//                     clusterCIDR, or inside any Node's spec.podCIDRs under the Kubernetes
//                     authority, are pod space, not underlay: a node cannot then get another's
//                     block refused by advertising an address inside it); or it
//                     overlaps a range that is every host's own (loopback, link-local with the
//                     cloud metadata address, multicast, 0/8, 240/4 and the IPv6 forms);
//   overlaps_peer     it overlaps a prefix already accepted for another node.
// First claim wins: an accepted prefix is pinned to its node for as long as that node's record
// claims it (and it covers no underlay address); nothing another node claims later takes it.
// Claims that arrive together (one pass) are taken in node ID order. Pins live in memory: after a
// restart the first records seen decide again (docs/architecture.md "Route authority" weighs
// persisting them). When a pin goes (its record changed or expired) or an underlay address goes,
// the refused claims of every node are looked at again, in node ID order.
//
// Pure: no clock, no I/O. Each call returns the nodes whose decision changed, so the caller
// re-plans only those. Cost per claim: O(prefix length) map lookups, so 16,384 nodes x 8 claims
// are fine.
//
// The Kubernetes authority (kubernetes.routeAuthority: node, the default with the API enabled):
// once the API has been listed, set_node_cidrs gives every annotated node ID its Node's
// spec.podCIDRs, and a claim must lie inside them (no_node / not_node_podcidr above); the other
// checks still follow, so two Nodes with overlapping podCIDRs (a mis-set cluster) are first-wins
// (overlaps_peer). Each new map decides every node again (pins of nodes no longer authorised are
// released, then the refused claims are looked at again), as an underlay change does. Until the
// first list (and with routeAuthority: config) the configuration's checks above decide alone;
// while the API is unreachable the last map holds (the caller simply sends none).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "common/ip_address.hpp"
#include "common/result.hpp"
#include "meshd/core/node_id.hpp"

namespace mw::meshd {

// The fixed label set of meshwire_pod_cidrs_refused_total{reason}.
enum class cidr_refusal : uint8_t {
    outside_cluster,
    wrong_block_size,
    overlaps_own,
    covers_underlay,
    overlaps_peer,
    no_node,           // Kubernetes authority: no Node carries the node's ID
    not_node_podcidr,  // Kubernetes authority: outside its Node's spec.podCIDRs
};
inline constexpr size_t cidr_refusal_count = 7;
const char* to_string(cidr_refusal r) noexcept;

struct refused_cidr {
    ip_prefix cidr;
    cidr_refusal reason = cidr_refusal::outside_cluster;
    friend bool operator==(const refused_cidr&, const refused_cidr&) = default;
};

struct route_policy {
    // Empty: no cluster-CIDR check, and only prefixes shorter than the block size are refused.
    std::vector<ip_prefix> cluster_cidrs;
    int node_mask_v4 = 24;
    int node_mask_v6 = 64;
    std::vector<ip_prefix> own_cidrs;  // this node's podCIDRs

    int node_mask(const ip_prefix& p) const noexcept {
        return p.is_v4() ? node_mask_v4 : node_mask_v6;
    }
    // outside_cluster / wrong_block_size, or nothing: the checks that need no other claim.
    std::optional<cidr_refusal> check_shape(const ip_prefix& p) const;
    // Whether `a` lies inside a clusterCIDR.
    bool in_cluster(const ip_address& a) const;
};

class route_authority {
public:
    struct decision {
        std::vector<ip_prefix> accepted;  // in the record's order
        std::vector<refused_cidr> refused;
        friend bool operator==(const decision&, const decision&) = default;
    };
    using changed = std::vector<node_id>;  // nodes whose decision changed, in node ID order
    // The Kubernetes authority: each annotated node ID and its Node's spec.podCIDRs (empty when
    // none is allocated yet: every claim of that node is then refused).
    using node_cidrs = std::map<node_id, std::vector<ip_prefix>>;

    explicit route_authority(route_policy policy = {}) : policy_(std::move(policy)) {}

    // This node's host addresses and the configured relay and bootstrap addresses.
    changed set_host_underlay(std::vector<ip_address> addrs);
    // A node's record, new or changed: its claimed pod CIDRs and advertised endpoint addresses.
    changed update(const node_id& id, const std::vector<ip_prefix>& claims,
                   const std::vector<ip_address>& addrs);
    // Its record is gone: its pins go, and others' refused claims are looked at again.
    changed remove(const node_id& id);
    // The Kubernetes authority on (a map: the API's Nodes as last listed/watched) or off
    // (nullopt: the configuration's checks alone). Every node is decided again on a change.
    changed set_node_cidrs(std::optional<node_cidrs> by_node);
    bool node_authority() const noexcept { return node_cidrs_.has_value(); }

    const decision* find(const node_id& id) const;
    const route_policy& policy() const noexcept { return policy_; }

    // Refusals not reported yet: each (node, prefix, reason) once while the node claims the
    // prefix (a record that drops and later re-claims it is reported again).
    struct refusal_event {
        node_id node;
        refused_cidr refusal;
    };
    std::vector<refusal_event> take_new_refusals() { return std::exchange(new_refusals_, {}); }
    // Refusals reported so far, by reason (the counter).
    const std::array<uint64_t, cidr_refusal_count>& refusals_total() const noexcept {
        return totals_;
    }
    // Prefixes refused now, by reason (a gauge).
    std::array<uint64_t, cidr_refusal_count> refused_now() const;
    // The owner of an accepted prefix (tests, meshctl).
    std::optional<node_id> owner(const ip_prefix& p) const;

private:
    using key = std::pair<ip_address, int>;  // (network address, length)
    struct node_state {
        std::vector<ip_prefix> claims;
        std::vector<ip_address> addrs;  // counted in record_underlay_
        decision d;
        std::vector<refused_cidr> reported;  // reported refusals of the current claims
    };

    // Decides one node's claims again; its own pins are released first and re-taken, so a node
    // keeps what it had unless an underlay address now falls inside it. Never takes a pin of
    // another node. Returns whether the decision changed.
    bool evaluate(const node_id& id, node_state& st);
    // One pass in node ID order suffices: accepting a claim never frees another.
    void reevaluate_refused(std::set<node_id>& out);
    bool covers_underlay(const ip_prefix& p) const;
    // Pod address space (never underlay): inside a clusterCIDR or, under the Kubernetes
    // authority, inside any Node's podCIDRs.
    bool pod_space(const ip_address& a) const;
    // The Kubernetes authority's verdict on one claim of `id` (nullopt: inside its Node's);
    // by_node is *node_cidrs_, passed so that only a caller that checked it can call this.
    std::optional<cidr_refusal> check_node(const node_cidrs& by_node, const node_id& id,
                                           const ip_prefix& c) const;
    // Every node decided again (node ID order), then the refused ones once more.
    void reevaluate_all(std::set<node_id>& out);
    std::optional<node_id> overlapping_pin(const ip_prefix& p, const node_id& self) const;
    void owners_of_pins_covering(const ip_address& a, std::set<node_id>& out) const;
    void add_addr(const ip_address& a, std::vector<ip_address>& added);
    void drop_addr(const ip_address& a, bool& loosened);
    static changed to_vector(const std::set<node_id>& s) { return {s.begin(), s.end()}; }

    route_policy policy_;
    std::map<node_id, node_state> nodes_;
    std::map<key, node_id> pins_;
    std::optional<node_cidrs> node_cidrs_;
    std::set<key> node_blocks_;      // every Node block in node_cidrs_ (pod_space)
    std::set<int> node_block_lens_;  // their distinct lengths
    std::set<ip_address> host_underlay_;
    std::map<ip_address, size_t> record_underlay_;  // address -> how many records list it
    std::vector<refusal_event> new_refusals_;
    std::array<uint64_t, cidr_refusal_count> totals_{};
};

}  // namespace mw::meshd
