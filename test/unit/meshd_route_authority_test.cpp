// The route authority (meshd/core/route_authority.hpp): every refusal reason, first claim wins,
// the underlay cases (host addresses, addresses in records, revocation and release), IPv6, and
// the route-hijack record of issue 17 refused while the rest of that record still applies.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "meshd/core/route_authority.hpp"
#include "meshd_test_util.hpp"

using namespace mw;
using namespace mw::meshd;

namespace {

ip_prefix P(const std::string& s) {
    return ip_prefix::parse(s).value();
}
ip_address A(const std::string& s) {
    return ip_address::parse(s).value();
}
node_id N(uint8_t n) {
    return meshd_test::identity(n).id();
}

route_policy cluster_policy() {
    route_policy p;
    p.cluster_cidrs = {P("10.244.0.0/16"), P("fd00:244::/48")};
    p.own_cidrs = {P("10.244.0.0/24"), P("fd00:244:0:0::/64")};
    return p;
}

std::optional<cidr_refusal> reason(const route_authority& ra, const node_id& n,
                                   const ip_prefix& p) {
    const auto* d = ra.find(n);
    REQUIRE(d);
    for (const auto& r : d->refused) {
        if (r.cidr == p) return r.reason;
    }
    return std::nullopt;
}

// A changed-set compared whatever the node IDs' order (N(n) are hashes).
std::set<node_id> S(const route_authority::changed& c) {
    return {c.begin(), c.end()};
}

bool accepted(const route_authority& ra, const node_id& n, const ip_prefix& p) {
    const auto* d = ra.find(n);
    return d && std::find(d->accepted.begin(), d->accepted.end(), p) != d->accepted.end();
}

}  // namespace

TEST_CASE("route_policy: cluster CIDRs and the block size") {
    auto p = cluster_policy();
    CHECK_FALSE(p.check_shape(P("10.244.3.0/24")));
    CHECK(p.check_shape(P("10.244.3.0/25")) == cidr_refusal::wrong_block_size);
    CHECK(p.check_shape(P("10.244.0.0/16")) == cidr_refusal::wrong_block_size);
    CHECK(p.check_shape(P("10.0.0.0/24")) == cidr_refusal::outside_cluster);
    CHECK(p.check_shape(P("8.0.0.0/8")) == cidr_refusal::outside_cluster);
    CHECK(p.check_shape(P("0.0.0.0/1")) == cidr_refusal::outside_cluster);
    // A prefix containing the cluster CIDR is not inside it.
    CHECK(p.check_shape(P("10.0.0.0/8")) == cidr_refusal::outside_cluster);
    CHECK_FALSE(p.check_shape(P("fd00:244:0:7::/64")));
    CHECK(p.check_shape(P("fd00:244::/56")) == cidr_refusal::wrong_block_size);
    CHECK(p.check_shape(P("fd00:245::/64")) == cidr_refusal::outside_cluster);
    // Only v4 cluster CIDRs: every v6 claim is outside.
    p.cluster_cidrs = {P("10.244.0.0/16")};
    CHECK(p.check_shape(P("fd00:244:0:7::/64")) == cidr_refusal::outside_cluster);

    // Without cluster CIDRs only prefixes shorter than the block size are refused.
    route_policy open;
    CHECK_FALSE(open.check_shape(P("10.244.3.0/24")));
    CHECK_FALSE(open.check_shape(P("10.244.3.0/25")));
    CHECK(open.check_shape(P("8.0.0.0/8")) == cidr_refusal::wrong_block_size);
    CHECK(open.check_shape(P("0.0.0.0/1")) == cidr_refusal::wrong_block_size);
    CHECK(open.check_shape(P("::/1")) == cidr_refusal::wrong_block_size);
    CHECK_FALSE(open.check_shape(P("fd00::/64")));
    open.node_mask_v4 = 26;
    CHECK(open.check_shape(P("10.244.3.0/24")) == cidr_refusal::wrong_block_size);
}

TEST_CASE("route_authority: the route-hijack record of issue 17 is refused, the rest applies") {
    route_authority ra(cluster_policy());
    const node_id victim = N(1), thief = N(2);
    ra.update(victim, {P("10.244.1.0/24"), P("fd00:244:0:1::/64")}, {A("192.168.1.1")});
    (void)ra.take_new_refusals();
    auto changed = ra.update(
        thief,
        {P("10.244.1.0/25"), P("10.244.1.128/25"), P("8.0.0.0/8"), P("0.0.0.0/1"), P("128.0.0.0/1"),
         P("10.244.1.0/24"), P("10.244.2.0/24"), P("fd00:244:0:1::/64")},
        {A("192.168.1.2")});
    CHECK(changed == std::vector<node_id>{thief});  // the victim's decision did not change
    CHECK(reason(ra, thief, P("10.244.1.0/25")) == cidr_refusal::wrong_block_size);
    CHECK(reason(ra, thief, P("10.244.1.128/25")) == cidr_refusal::wrong_block_size);
    CHECK(reason(ra, thief, P("8.0.0.0/8")) == cidr_refusal::outside_cluster);
    CHECK(reason(ra, thief, P("0.0.0.0/1")) == cidr_refusal::outside_cluster);
    CHECK(reason(ra, thief, P("128.0.0.0/1")) == cidr_refusal::outside_cluster);
    CHECK(reason(ra, thief, P("10.244.1.0/24")) == cidr_refusal::overlaps_peer);
    CHECK(reason(ra, thief, P("fd00:244:0:1::/64")) == cidr_refusal::overlaps_peer);
    // Its own block still applies; the victim keeps everything.
    CHECK(ra.find(thief)->accepted == std::vector<ip_prefix>{P("10.244.2.0/24")});
    CHECK(ra.find(victim)->accepted ==
          std::vector<ip_prefix>{P("10.244.1.0/24"), P("fd00:244:0:1::/64")});
    CHECK(ra.owner(P("10.244.1.0/24")) == victim);
    // Reported once each, counted by reason.
    auto ev = ra.take_new_refusals();
    CHECK(ev.size() == 7);
    CHECK(std::all_of(ev.begin(), ev.end(), [&](const auto& e) { return e.node == thief; }));
    auto tot = ra.refusals_total();
    CHECK(tot[size_t(cidr_refusal::wrong_block_size)] == 2);
    CHECK(tot[size_t(cidr_refusal::outside_cluster)] == 3);
    CHECK(tot[size_t(cidr_refusal::overlaps_peer)] == 2);
    CHECK(ra.refused_now() == tot);
}

TEST_CASE("route_authority: without cluster CIDRs the /25 split and the /1s are still refused") {
    route_policy p;
    p.own_cidrs = {P("10.244.0.0/24")};
    route_authority ra(p);
    const node_id victim = N(1), thief = N(2);
    ra.update(victim, {P("10.244.1.0/24")}, {A("198.51.100.1")});
    ra.update(thief,
              {P("10.244.1.0/25"), P("10.244.1.128/25"), P("0.0.0.0/1"), P("128.0.0.0/1"),
               P("10.244.1.0/24"), P("10.244.0.128/25"), P("203.0.113.0/24")},
              {A("203.0.113.9")});
    CHECK(reason(ra, thief, P("10.244.1.0/25")) == cidr_refusal::overlaps_peer);
    CHECK(reason(ra, thief, P("10.244.1.128/25")) == cidr_refusal::overlaps_peer);
    CHECK(reason(ra, thief, P("0.0.0.0/1")) == cidr_refusal::wrong_block_size);
    CHECK(reason(ra, thief, P("128.0.0.0/1")) == cidr_refusal::wrong_block_size);
    CHECK(reason(ra, thief, P("10.244.1.0/24")) == cidr_refusal::overlaps_peer);
    CHECK(reason(ra, thief, P("10.244.0.128/25")) == cidr_refusal::overlaps_own);
    // Its own advertised address is underlay too.
    CHECK(reason(ra, thief, P("203.0.113.0/24")) == cidr_refusal::covers_underlay);
    CHECK(ra.find(thief)->accepted.empty());
    CHECK(ra.find(victim)->accepted == std::vector<ip_prefix>{P("10.244.1.0/24")});
}

TEST_CASE("route_authority: first claim wins; the pin is released when its record goes") {
    route_authority ra(cluster_policy());
    const node_id first = N(5), second = N(3);  // whatever their IDs: the call order decides
    ra.update(first, {P("10.244.7.0/24")}, {});
    auto c = ra.update(second, {P("10.244.7.0/24"), P("10.244.8.0/24")}, {});
    CHECK(c == std::vector<node_id>{second});
    CHECK(accepted(ra, first, P("10.244.7.0/24")));
    CHECK(reason(ra, second, P("10.244.7.0/24")) == cidr_refusal::overlaps_peer);
    CHECK(accepted(ra, second, P("10.244.8.0/24")));
    // The first one's record gives the prefix up: the second gets it.
    c = ra.update(first, {P("10.244.9.0/24")}, {});
    CHECK(std::find(c.begin(), c.end(), second) != c.end());
    CHECK(accepted(ra, second, P("10.244.7.0/24")));
    CHECK(ra.owner(P("10.244.7.0/24")) == second);
    // ... and the first cannot take it back while the second claims it.
    ra.update(first, {P("10.244.9.0/24"), P("10.244.7.0/24")}, {});
    CHECK(reason(ra, first, P("10.244.7.0/24")) == cidr_refusal::overlaps_peer);
    // The second's record expires: the first gets it.
    c = ra.remove(second);
    CHECK(c == std::vector<node_id>{first});
    CHECK(accepted(ra, first, P("10.244.7.0/24")));
    CHECK(ra.find(second) == nullptr);
    CHECK(ra.remove(second).empty());
}

TEST_CASE("route_authority: a node keeps its prefixes across its own record updates") {
    route_authority ra(cluster_policy());
    ra.update(N(1), {P("10.244.1.0/24")}, {A("192.168.1.1")});
    ra.update(N(2), {P("10.244.1.0/24")}, {});
    // A new record of the owner (say a new endpoint) does not let the other take it meanwhile.
    ra.update(N(1), {P("10.244.1.0/24")}, {A("192.168.1.9")});
    CHECK(ra.owner(P("10.244.1.0/24")) == N(1));
    CHECK(reason(ra, N(2), P("10.244.1.0/24")) == cidr_refusal::overlaps_peer);
    // The same record again changes nothing.
    CHECK(ra.update(N(1), {P("10.244.1.0/24")}, {A("192.168.1.9")}).empty());
}

TEST_CASE("route_authority: underlay addresses — host, records, revocation and release") {
    route_policy p;  // no cluster CIDRs: record addresses anywhere are underlay
    route_authority ra(p);
    // This node's address, a relay's, a bootstrap node's.
    ra.set_host_underlay({A("192.168.1.10"), A("203.0.113.1"), A("2001:db8::1")});
    ra.update(N(1),
              {P("192.168.1.0/24"), P("203.0.113.0/24"), P("2001:db8::/64"), P("10.244.1.0/24"),
               P("fd00:1::/64")},
              {});
    CHECK(reason(ra, N(1), P("192.168.1.0/24")) == cidr_refusal::covers_underlay);
    CHECK(reason(ra, N(1), P("203.0.113.0/24")) == cidr_refusal::covers_underlay);
    CHECK(reason(ra, N(1), P("2001:db8::/64")) == cidr_refusal::covers_underlay);
    CHECK(accepted(ra, N(1), P("10.244.1.0/24")));
    CHECK(accepted(ra, N(1), P("fd00:1::/64")));
    // A node that advertises an address inside an accepted prefix revokes it (that address
    // would otherwise be routed into the tunnel)...
    auto c = ra.update(N(2), {P("10.244.2.0/24")}, {A("10.244.1.77"), A("fd00:1::5")});
    CHECK(c == std::vector<node_id>{N(1), N(2)});
    CHECK(reason(ra, N(1), P("10.244.1.0/24")) == cidr_refusal::covers_underlay);
    CHECK(reason(ra, N(1), P("fd00:1::/64")) == cidr_refusal::covers_underlay);
    // ... and when it stops advertising it, the prefix is accepted again.
    c = ra.update(N(2), {P("10.244.2.0/24")}, {A("198.51.100.2")});
    CHECK(c == std::vector<node_id>{N(1)});
    CHECK(accepted(ra, N(1), P("10.244.1.0/24")));
    CHECK(accepted(ra, N(1), P("fd00:1::/64")));
    // Host underlay changes decide everyone again: our new address inside an accepted prefix.
    c = ra.set_host_underlay({A("192.168.1.10"), A("10.244.2.1")});
    CHECK(c == std::vector<node_id>{N(1), N(2)});  // N(1) gets 203.0.113.0/24 and 2001:db8::/64
    CHECK(reason(ra, N(2), P("10.244.2.0/24")) == cidr_refusal::covers_underlay);
    CHECK(accepted(ra, N(1), P("203.0.113.0/24")));
    CHECK(ra.set_host_underlay({A("10.244.2.1"), A("192.168.1.10")}).empty());  // same set
}

TEST_CASE("route_authority: with cluster CIDRs, addresses inside them are not underlay") {
    route_authority ra(cluster_policy());
    ra.update(N(1), {P("10.244.1.0/24")}, {});
    // A PSK holder advertising an address in the victim's block cannot get it refused.
    auto c = ra.update(N(2), {P("10.244.2.0/24")}, {A("10.244.1.5")});
    CHECK(c == std::vector<node_id>{N(2)});
    CHECK(accepted(ra, N(1), P("10.244.1.0/24")));
}

TEST_CASE("route_authority: refusals are reported once per (node, prefix, reason)") {
    route_authority ra(cluster_policy());
    ra.update(N(1), {P("10.244.1.0/24")}, {});
    ra.update(N(2), {P("10.244.1.0/24"), P("8.0.0.0/8")}, {A("192.168.1.2")});
    CHECK(ra.take_new_refusals().size() == 2);
    // A new record with the same claims (another address): nothing new to report.
    ra.update(N(2), {P("10.244.1.0/24"), P("8.0.0.0/8")}, {A("192.168.1.3")});
    CHECK(ra.take_new_refusals().empty());
    // A pin released and re-refused with the same reason: still not reported again.
    ra.update(N(3), {P("10.244.3.0/24")}, {});
    CHECK(ra.take_new_refusals().empty());
    // Dropped and re-claimed: reported again (bounded by what the record claims).
    ra.update(N(2), {P("8.0.0.0/8")}, {A("192.168.1.3")});
    ra.update(N(2), {P("10.244.1.0/24"), P("8.0.0.0/8")}, {A("192.168.1.3")});
    auto ev = ra.take_new_refusals();
    REQUIRE(ev.size() == 1);
    CHECK(ev[0].refusal.cidr == P("10.244.1.0/24"));
    CHECK(ev[0].refusal.reason == cidr_refusal::overlaps_peer);
    CHECK(ra.refusals_total()[size_t(cidr_refusal::overlaps_peer)] == 2);
    CHECK(ra.refused_now()[size_t(cidr_refusal::overlaps_peer)] == 1);
    CHECK(std::string(to_string(cidr_refusal::covers_underlay)) == "covers_underlay");
}

TEST_CASE("route_authority: overlaps in both directions, across lengths, IPv6") {
    route_policy p;  // no cluster: lengths >= the block size are allowed
    route_authority ra(p);
    ra.update(N(1), {P("10.1.0.0/24"), P("fd00:1:2:3::/64")}, {});
    ra.update(N(2), {P("10.1.0.128/25"), P("fd00:1:2:3:4::/80"), P("fd00:1:2:4::/64")}, {});
    CHECK(reason(ra, N(2), P("10.1.0.128/25")) == cidr_refusal::overlaps_peer);
    CHECK(reason(ra, N(2), P("fd00:1:2:3:4::/80")) == cidr_refusal::overlaps_peer);
    CHECK(accepted(ra, N(2), P("fd00:1:2:4::/64")));
    // A longer prefix first, then the covering one.
    ra.update(N(3), {P("10.2.0.64/26")}, {});
    ra.update(N(4), {P("10.2.0.0/24"), P("10.3.0.0/24")}, {});
    CHECK(reason(ra, N(4), P("10.2.0.0/24")) == cidr_refusal::overlaps_peer);
    CHECK(accepted(ra, N(4), P("10.3.0.0/24")));
    // A node's own overlapping claims do not conflict with each other; duplicates count once.
    ra.update(N(5), {P("10.5.0.0/24"), P("10.5.0.0/25"), P("10.5.0.0/24")}, {});
    CHECK(ra.find(N(5))->accepted == std::vector<ip_prefix>{P("10.5.0.0/24"), P("10.5.0.0/25")});
    CHECK(ra.find(N(5))->refused.empty());
}

TEST_CASE("route_authority: host ranges (loopback, link-local, metadata, multicast) are underlay") {
    route_authority ra;  // no cluster CIDRs: only these stop a /32 on the metadata address
    ra.update(N(1),
              {P("169.254.169.254/32"), P("127.0.0.0/24"), P("224.0.0.0/24"), P("0.0.0.0/24"),
               P("fe80::/64"), P("::1/128"), P("ff02::/64"), P("10.9.0.0/24")},
              {});
    for (const char* c : {"169.254.169.254/32", "127.0.0.0/24", "224.0.0.0/24", "0.0.0.0/24",
                          "fe80::/64", "::1/128", "ff02::/64"}) {
        CAPTURE(c);
        CHECK(reason(ra, N(1), P(c)) == cidr_refusal::covers_underlay);
    }
    CHECK(ra.find(N(1))->accepted == std::vector<ip_prefix>{P("10.9.0.0/24")});
}

// The Kubernetes authority (kubernetes.routeAuthority node): each node's Node spec.podCIDRs.
TEST_CASE("route_authority: Node podCIDRs refuse the hijack record; no Node, no routes") {
    route_policy p;  // no clusterCIDRs: under the config checks alone the /25s would be taken
    p.own_cidrs = {P("10.244.0.0/24")};
    route_authority ra(p);
    const node_id k1 = N(1), k2 = N(2), thief = N(3), stranger = N(4);
    const std::vector<ip_prefix> hijack = {P("10.244.1.0/25"), P("10.244.1.128/25"), P("8.0.0.0/8"),
                                           P("10.244.3.0/24")};
    // Before the first list: the configuration's checks, and the thief's /25s and 8/8 would
    // win at a node that heard its record first (this is what the Node authority fixes).
    ra.update(thief, hijack, {A("192.168.1.3")});
    ra.update(k1, {P("10.244.1.0/24"), P("fd00:244:1::/64")}, {A("192.168.1.1")});
    CHECK(accepted(ra, thief, P("10.244.1.0/25")));
    CHECK(reason(ra, thief, P("8.0.0.0/8")) == cidr_refusal::wrong_block_size);
    CHECK(reason(ra, k1, P("10.244.1.0/24")) == cidr_refusal::overlaps_peer);
    (void)ra.take_new_refusals();

    // The API listed: k1, k2 and the thief each on its own Node; the stranger on none.
    route_authority::node_cidrs nodes = {
        {k1, {P("10.244.1.0/24"), P("fd00:244:1::/64")}},
        {k2, {P("10.244.2.0/24")}},
        {thief, {P("10.244.3.0/24")}},
    };
    auto changed = ra.set_node_cidrs(nodes);
    CHECK(ra.node_authority());
    CHECK(S(changed) == std::set<node_id>{k1, thief});
    CHECK(reason(ra, thief, P("10.244.1.0/25")) == cidr_refusal::not_node_podcidr);
    CHECK(reason(ra, thief, P("10.244.1.128/25")) == cidr_refusal::not_node_podcidr);
    CHECK(reason(ra, thief, P("8.0.0.0/8")) == cidr_refusal::not_node_podcidr);
    CHECK(ra.find(thief)->accepted == std::vector<ip_prefix>{P("10.244.3.0/24")});
    CHECK(ra.find(k1)->accepted ==
          std::vector<ip_prefix>{P("10.244.1.0/24"), P("fd00:244:1::/64")});
    CHECK(ra.owner(P("10.244.1.0/24")) == k1);

    // k2 claims its block and the thief's exact block: the latter is not its Node's.
    ra.update(k2, {P("10.244.2.0/24"), P("10.244.3.0/24")}, {});
    CHECK(accepted(ra, k2, P("10.244.2.0/24")));
    CHECK(reason(ra, k2, P("10.244.3.0/24")) == cidr_refusal::not_node_podcidr);
    // No Node carries the stranger: no routes at all, even for a block nobody else claims.
    ra.update(stranger, {P("10.244.9.0/24")}, {});
    CHECK(reason(ra, stranger, P("10.244.9.0/24")) == cidr_refusal::no_node);
    CHECK(ra.find(stranger)->accepted.empty());

    // A /25 inside its own Node's block is fine (the Node's block bounds it, not the mask).
    ra.update(k2, {P("10.244.2.0/25"), P("10.244.3.0/24")}, {});
    CHECK(accepted(ra, k2, P("10.244.2.0/25")));

    // Reported once each with the new reasons, counted by them.
    auto ev = ra.take_new_refusals();
    CHECK(ev.size() == 5);  // thief: 3 (a new reason for 8/8), k2: 1, stranger: 1
    auto tot = ra.refusals_total();
    CHECK(tot[size_t(cidr_refusal::no_node)] == 1);
    CHECK(tot[size_t(cidr_refusal::not_node_podcidr)] == 4);
    CHECK(std::string(to_string(cidr_refusal::no_node)) == "no_node");
    CHECK(std::string(to_string(cidr_refusal::not_node_podcidr)) == "not_node_podcidr");
}

TEST_CASE("route_authority: a Node's podCIDRs changed, added or deleted re-decides (pure)") {
    route_authority ra;
    const node_id a = N(1), b = N(2);
    ra.update(a, {P("10.244.1.0/24"), P("10.244.7.0/24")}, {});
    ra.update(b, {P("10.244.2.0/24"), P("10.244.7.0/24")}, {});
    ra.set_node_cidrs(
        route_authority::node_cidrs{{a, {P("10.244.1.0/24")}}, {b, {P("10.244.2.0/24")}}});
    CHECK(reason(ra, a, P("10.244.7.0/24")) == cidr_refusal::not_node_podcidr);
    CHECK(reason(ra, b, P("10.244.7.0/24")) == cidr_refusal::not_node_podcidr);
    CHECK(!ra.owner(P("10.244.7.0/24")));

    // b's Node gets 10.244.7.0/24 instead of its old block: the accepted route moves.
    auto c = ra.set_node_cidrs(
        route_authority::node_cidrs{{a, {P("10.244.1.0/24")}}, {b, {P("10.244.7.0/24")}}});
    CHECK(c == std::vector<node_id>{b});
    CHECK(ra.find(b)->accepted == std::vector<ip_prefix>{P("10.244.7.0/24")});
    CHECK(reason(ra, b, P("10.244.2.0/24")) == cidr_refusal::not_node_podcidr);
    CHECK(ra.owner(P("10.244.7.0/24")) == b);
    // The same map again (a Node's status heartbeat): nothing changes.
    CHECK(ra.set_node_cidrs(
                route_authority::node_cidrs{{a, {P("10.244.1.0/24")}}, {b, {P("10.244.7.0/24")}}})
              .empty());

    // A mis-set cluster: both Nodes carry 10.244.7.0/24. First claim wins (b keeps it) ...
    ra.set_node_cidrs(route_authority::node_cidrs{{a, {P("10.244.1.0/24"), P("10.244.7.0/24")}},
                                                  {b, {P("10.244.7.0/24")}}});
    CHECK(reason(ra, a, P("10.244.7.0/24")) == cidr_refusal::overlaps_peer);
    CHECK(ra.owner(P("10.244.7.0/24")) == b);
    // ... until b's Node is deleted: b gets nothing, a gets the block (whichever is decided
    // first: the pass over refused claims after every node frees it).
    c = ra.set_node_cidrs(
        route_authority::node_cidrs{{a, {P("10.244.1.0/24"), P("10.244.7.0/24")}}});
    CHECK(S(c) == std::set<node_id>{a, b});
    CHECK(ra.find(b)->accepted.empty());
    CHECK(reason(ra, b, P("10.244.7.0/24")) == cidr_refusal::no_node);
    CHECK(ra.owner(P("10.244.7.0/24")) == a);

    // The Node authority off (routeAuthority: config): the configuration's checks alone.
    c = ra.set_node_cidrs(std::nullopt);
    CHECK(!ra.node_authority());
    CHECK(accepted(ra, b, P("10.244.2.0/24")));
    CHECK(reason(ra, b, P("10.244.7.0/24")) == cidr_refusal::overlaps_peer);
}

TEST_CASE("route_authority: Node authority: record addresses in a Node's block are not underlay") {
    route_authority ra;  // no clusterCIDRs
    const node_id victim = N(1), thief = N(2);
    ra.set_node_cidrs(
        route_authority::node_cidrs{{victim, {P("10.244.1.0/24")}}, {thief, {P("10.244.2.0/24")}}});
    ra.update(victim, {P("10.244.1.0/24")}, {A("192.168.1.1")});
    // The thief advertises an endpoint inside the victim's block: the victim keeps its route.
    ra.update(thief, {P("10.244.2.0/24")}, {A("10.244.1.5"), A("192.168.1.2")});
    CHECK(accepted(ra, victim, P("10.244.1.0/24")));
    CHECK(accepted(ra, thief, P("10.244.2.0/24")));
    // A Node block covering a host underlay address (ours, a relay's) is still refused; record
    // addresses inside a Node's block are pod space (the API is trusted with the blocks).
    ra.set_host_underlay({A("192.168.1.9")});
    ra.set_node_cidrs(route_authority::node_cidrs{{victim, {P("10.244.1.0/24")}},
                                                  {thief, {P("192.168.1.0/24")}}});
    ra.update(thief, {P("192.168.1.0/24")}, {A("192.168.1.2")});
    CHECK(reason(ra, thief, P("192.168.1.0/24")) == cidr_refusal::covers_underlay);
}

TEST_CASE("route_authority: clusterCIDRs still bound the Node authority") {
    route_authority ra(cluster_policy());  // 10.244.0.0/16, fd00:244::/48
    ra.set_node_cidrs(
        route_authority::node_cidrs{{N(1), {P("10.245.1.0/24"), P("10.244.1.0/24")}}});
    ra.update(N(1), {P("10.245.1.0/24"), P("10.244.1.0/24"), P("10.244.1.0/25")}, {});
    CHECK(reason(ra, N(1), P("10.245.1.0/24")) == cidr_refusal::outside_cluster);
    CHECK(accepted(ra, N(1), P("10.244.1.0/24")));
    CHECK(accepted(ra, N(1), P("10.244.1.0/25")));  // no block-size check: the Node's bounds it
}
