// Which interfaces meshd's mDNS runs on and what it advertises (select_mdns_links), and the
// `mdns` config section that steers it. The EdgeMesh failures (issue 10 §2) are the cases:
// loopback, docker0, virbr0, kube-ipvs0, 169.254/16 and fe80:: must not be advertised.
#include <doctest/doctest.h>

#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>

#include "meshd/mdns_interfaces.hpp"
#include "meshd/meshd_config.hpp"

using namespace mw;
using namespace mw::meshd;

namespace {

link_info link(int index, const char* name, const char* kind = "", const char* alias = "",
               unsigned extra_flags = 0) {
    link_info l;
    l.index = index;
    l.name = name;
    l.kind = kind;
    l.alias = alias;
    l.flags = IFF_UP | IFF_MULTICAST | extra_flags;
    return l;
}

addr_info addr(int index, const char* cidr, int scope = RT_SCOPE_UNIVERSE, unsigned flags = 0) {
    addr_info a;
    a.index = index;
    a.prefix = ip_prefix::parse(cidr).value();
    a.scope = scope;
    a.flags = flags;
    return a;
}

}  // namespace

TEST_CASE("mdns interfaces: the default leaves out what EdgeMesh wrongly advertised") {
    std::vector<link_info> links{
        link(1, "lo", "", "", IFF_LOOPBACK),
        link(2, "eth0"),
        link(3, "docker0", "bridge"),
        link(4, "virbr0", "bridge"),
        link(5, "kube-ipvs0", "dummy"),
        link(6, "meshwire0", "wireguard"),
        link(7, "mw0123456789ab", "veth", "meshwire/net/ctr/eth0"),
        link(8, "cni0", "bridge"),
        link(9, "eth1"),
        link(10, "wlan0"),
        link(11, "flannel.1", "vxlan"),
        link(12, "br0", "bridge"),
    };
    links[9].flags &= ~IFF_UP;  // wlan0 is down
    std::vector<addr_info> addrs{
        addr(1, "127.0.0.1/8", RT_SCOPE_HOST),
        addr(2, "192.168.1.10/24"),
        addr(2, "169.254.3.4/16", RT_SCOPE_LINK),
        addr(2, "fe80::1/64", RT_SCOPE_LINK),
        addr(2, "2001:db8::10/64"),
        addr(2, "2001:db8::99/64", RT_SCOPE_UNIVERSE, IFA_F_TEMPORARY),
        addr(2, "2001:db8::98/64", RT_SCOPE_UNIVERSE, IFA_F_TENTATIVE),
        addr(3, "172.17.0.1/16"),
        addr(4, "192.168.122.1/24"),
        addr(5, "10.96.0.1/32"),
        addr(6, "100.64.0.1/32"),
        addr(7, "169.254.1.1/32", RT_SCOPE_LINK),
        addr(8, "10.244.0.1/24"),
        addr(9, "fe80::2/64", RT_SCOPE_LINK),  // only link-local: nothing to advertise
        addr(10, "192.168.7.1/24"),
        addr(11, "10.244.0.0/32"),
        addr(12, "10.1.0.5/24"),  // a LAN bridge (VM host): a real LAN
    };
    mdns_link_policy policy{"meshwire0", {}, false};
    auto sel = select_mdns_links(links, addrs, policy);
    REQUIRE(sel.size() == 2);
    CHECK(sel[0].name == "eth0");
    CHECK(sel[0].v4);
    CHECK(sel[0].v6);
    std::vector<ip_address> want{ip_address::parse("192.168.1.10").value(),
                                 ip_address::parse("2001:db8::10").value()};
    CHECK(sel[0].advertised == want);
    CHECK(sel[1].name == "br0");

    SUBCASE("linkLocal: true adds 169.254/16 and fe80::, and eth1 with only fe80::") {
        policy.link_local = true;
        auto s2 = select_mdns_links(links, addrs, policy);
        REQUIRE(s2.size() == 3);
        CHECK(s2[0].advertised.size() == 4);
        CHECK(s2[1].name == "eth1");
        CHECK_FALSE(s2[1].v4);
        CHECK(s2[1].v6);
    }
    SUBCASE("interfaces: listed ones only; the WireGuard interface never") {
        policy.interfaces = {"docker0", "meshwire0", "lo", "wlan0"};
        auto s3 = select_mdns_links(links, addrs, policy);
        REQUIRE(s3.size() == 1);
        CHECK(s3[0].name == "docker0");
    }
}

TEST_CASE("mdns config: interfaces and linkLocal parse and print back") {
    config_environment env;
    env.hostname = "h";
    auto c = parse_meshd_config(
        "psk: {path: /etc/psk}\npodCIDRs: [10.244.1.0/24]\n"
        "mdns: {enable: true, interfaces: [eth0, enp3s0], linkLocal: true}\n",
        env);
    REQUIRE(c);
    CHECK(c->mdns_enable);
    CHECK(c->mdns_interfaces == std::vector<std::string>{"eth0", "enp3s0"});
    CHECK(c->mdns_link_local);
    auto again = parse_meshd_config(print_yaml(*c), env);
    REQUIRE(again);
    CHECK(again->mdns_interfaces == c->mdns_interfaces);
    CHECK(again->mdns_link_local);
    auto d = parse_meshd_config("psk: {path: /etc/psk}\npodCIDRs: [10.244.1.0/24]\n", env);
    REQUIRE(d);
    CHECK(d->mdns_interfaces.empty());
    CHECK_FALSE(d->mdns_link_local);
}
