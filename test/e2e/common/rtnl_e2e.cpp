// rtnl and netns against the real kernel, inside private, unnamed network namespaces.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <thread>

#include "common/netns.hpp"
#include "common/rtnl.hpp"
#include "common/sysctl.hpp"

using namespace mw;

namespace {

// A fresh network namespace, alive as long as the handle holds its fd.
netns private_netns() {
    std::optional<result<netns>> out;
    std::thread t([&] {
        if (unshare(CLONE_NEWNET) != 0) {
            out.emplace(error::from_errno(errno, "unshare"));
            return;
        }
        out.emplace(netns::current());
    });
    t.join();
    REQUIRE(out->ok());
    return std::move(out->value());
}

bool root() {
    return geteuid() == 0;
}

}  // namespace

TEST_CASE("netns::open tells missing paths from non-namespaces") {
    auto missing = netns::open("/nonexistent/netns");
    REQUIRE_FALSE(missing);
    CHECK(missing.err().is_errno(ENOENT));
    auto dir = netns::open("/tmp");
    REQUIRE_FALSE(dir);
    CHECK(dir.err().is(errc::invalid_argument));
    auto other_ns = netns::open("/proc/self/ns/uts");
    REQUIRE_FALSE(other_ns);
    CHECK(other_ns.err().is(errc::invalid_argument));
}

TEST_CASE("netns::run switches only its own thread") {
    if (!root()) return;
    auto ns = private_netns();
    auto here = netns::current();
    REQUIRE(here);
    CHECK_FALSE(ns.same_as(*here));
    bool inside = false;
    REQUIRE(ns.run([&]() -> status {
        auto cur = netns::current();
        inside = cur && cur->same_as(ns);
        return {};
    }));
    CHECK(inside);
    auto after = netns::current();
    CHECK(after->same_as(*here));
}

TEST_CASE("links, addresses, routes and neighbours in a private namespace") {
    if (!root()) return;
    auto ns = private_netns();
    auto peer_ns = private_netns();
    auto nl = rtnl::open_in(ns);
    REQUIRE(nl);

    veth_spec vs{"mwt-a", "mwt-b", peer_ns.fd(), 1400, "meshwire/test/x/eth0"};
    REQUIRE(nl->create_veth(vs));
    auto again = nl->create_veth(vs);
    REQUIRE_FALSE(again);
    CHECK(again.err().is_errno(EEXIST));
    CHECK(again.err().message.find("RTM_NEWLINK veth mwt-a/mwt-b") != std::string::npos);

    auto a = nl->get_link("mwt-a");
    REQUIRE(a);
    CHECK(a->kind == "veth");
    CHECK(a->mtu == 1400);
    CHECK(a->alias == "meshwire/test/x/eth0");
    REQUIRE(a->mac);
    auto by_index = nl->get_link(a->index);
    CHECK(by_index->name == "mwt-a");
    auto none = nl->get_link("mwt-none");
    REQUIRE_FALSE(none);
    CHECK(none.err().is_errno(ENODEV));

    auto peer_nl = rtnl::open_in(peer_ns);
    auto b = peer_nl->get_link("mwt-b");
    REQUIRE(b);
    CHECK(b->mtu == 1400);

    REQUIRE(nl->change_link(a->index, {true, 1300u, std::string("changed")}));
    a = nl->get_link(a->index);
    CHECK(a->up());
    CHECK(a->mtu == 1300);
    CHECK(a->alias == "changed");

    auto v4 = *ip_prefix::parse("10.77.0.1/24");
    auto v6 = *ip_prefix::parse("fd00:77::1/64");
    REQUIRE(nl->add_address(a->index, v4));
    REQUIRE(nl->add_address(a->index, v6, true));
    auto dup = nl->add_address(a->index, v4);
    CHECK(dup.err().is_errno(EEXIST));
    auto addrs = nl->list_addresses(AF_UNSPEC, a->index);
    REQUIRE(addrs);
    int found = 0;
    for (const auto& ad : *addrs) found += (ad.prefix == v4) + (ad.prefix == v6);
    CHECK(found == 2);

    route_info r;
    r.dst = *ip_prefix::parse("10.88.0.0/16");
    r.gateway = *ip_address::parse("10.77.0.254");
    r.oif = a->index;
    REQUIRE(nl->add_route(r));
    CHECK(nl->add_route(r).err().is_errno(EEXIST));
    REQUIRE(nl->add_route(r, /*replace=*/true));
    auto routes = nl->list_routes(AF_INET);
    REQUIRE(routes);
    bool have = false;
    for (const auto& x : *routes) have |= x.dst == r.dst && x.gateway && *x.gateway == *r.gateway;
    CHECK(have);
    REQUIRE(nl->del_route(r));
    CHECK(nl->del_route(r).err().is_errno(ESRCH));

    // A gateway that is not on any connected subnet: the kernel refuses and says why.
    route_info bad = r;
    bad.gateway = *ip_address::parse("192.0.2.1");
    auto refused = nl->add_route(bad);
    REQUIRE_FALSE(refused);
    CHECK(refused.err().message.find("RTM_NEWROUTE 10.88.0.0/16 via 192.0.2.1") !=
          std::string::npos);
    CHECK(refused.err().message.find("kernel:") != std::string::npos);
    bad.onlink = true;  // ... unless told it is on the link
    CHECK(nl->add_route(bad));

    auto mac = *parse_mac("02:00:00:00:00:01");
    REQUIRE(nl->add_neighbor(a->index, *ip_address::parse("10.77.0.9"), mac));
    auto neigh = nl->list_neighbors(AF_INET, a->index);
    REQUIRE(neigh);
    bool nfound = false;
    for (const auto& n : *neigh)
        nfound |= n.dst.str() == "10.77.0.9" && n.lladdr && *n.lladdr == mac;
    CHECK(nfound);

    // sysctls act on the namespace of the thread that writes them
    REQUIRE(ns.run([] { return write_sysctl("net/ipv4/ip_forward", "1"); }));
    auto in_ns = ns.run_value<std::string>([] { return read_sysctl("net/ipv4/ip_forward"); });
    CHECK(*in_ns == "1");
    auto in_peer =
        peer_ns.run_value<std::string>([] { return read_sysctl("net/ipv4/ip_forward"); });
    CHECK(*in_peer == "0");

    REQUIRE(nl->delete_link(a->index));
    CHECK(peer_nl->get_link("mwt-b").err().is_errno(ENODEV));  // the peer went with it
    CHECK(nl->delete_link(a->index).err().is_errno(ENODEV));
}

TEST_CASE("route MTU: written as RTA_METRICS, read back (v4, v6), replaced in place") {
    if (!root()) return;
    auto ns = private_netns();
    auto nl = rtnl::open_in(ns);
    REQUIRE(nl);
    REQUIRE(nl->create_veth({"mwt-m", "mwt-n", -1, 0, {}}));
    auto a = nl->get_link("mwt-m");
    REQUIRE(a);
    REQUIRE(nl->set_link_up(a->index));
    auto find = [&](const ip_prefix& dst) -> std::optional<route_info> {
        auto routes = nl->list_routes(dst.family());
        REQUIRE(routes);
        for (const auto& x : *routes) {
            if (x.dst == dst && x.oif == a->index) return x;
        }
        return std::nullopt;
    };
    for (const char* dst : {"10.89.0.0/24", "fd00:89::/64"}) {
        CAPTURE(dst);
        route_info r;
        r.dst = *ip_prefix::parse(dst);
        r.oif = a->index;
        r.scope = r.dst.is_v4() ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
        r.mtu = 1380;
        REQUIRE(nl->add_route(r));
        auto got = find(r.dst);
        REQUIRE(got);
        CHECK(got->mtu == 1380);
        auto dup = nl->add_route(r);
        REQUIRE_FALSE(dup);
        CHECK(dup.err().is_errno(EEXIST));
        CHECK(dup.err().message.find(" mtu 1380") != std::string::npos);
        r.mtu = 1300;
        REQUIRE(nl->add_route(r, /*replace=*/true));
        CHECK(find(r.dst)->mtu == 1300);
        r.mtu = 0;  // replacing without an MTU drops the metric
        REQUIRE(nl->add_route(r, /*replace=*/true));
        got = find(r.dst);
        REQUIRE(got);
        CHECK(got->mtu == 0);
        REQUIRE(nl->del_route(r));
        CHECK_FALSE(find(r.dst));
    }
    // In a table above 255 (RTA_TABLE) as well.
    route_info t;
    t.dst = *ip_prefix::parse("10.90.0.0/24");
    t.oif = a->index;
    t.scope = RT_SCOPE_LINK;
    t.table = 1000;
    t.mtu = 1300;
    REQUIRE(nl->add_route(t));
    auto got = find(t.dst);
    REQUIRE(got);
    CHECK(got->table == 1000);
    CHECK(got->mtu == 1300);
    // Errors still carry the errno and name the route, MTU included.
    auto gone = nl->del_route(t);
    REQUIRE(gone);
    gone = nl->del_route(t);
    REQUIRE_FALSE(gone);
    CHECK(gone.err().is_errno(ESRCH));
    CHECK(gone.err().message.find("RTM_DELROUTE 10.90.0.0/24 oif") != std::string::npos);
}

TEST_CASE("invalid names are refused before any request") {
    if (!root()) return;
    auto ns = private_netns();
    auto nl = rtnl::open_in(ns);
    CHECK(nl->get_link("").err().is(errc::invalid_argument));
    CHECK(nl->get_link("a-name-longer-than-15").err().is(errc::invalid_argument));
    CHECK(nl->create_veth({"ok", "", -1, 0, {}}).err().is(errc::invalid_argument));
    CHECK(nl->create_link("x/../y-too-long-name", "dummy").err().is(errc::invalid_argument));
}
