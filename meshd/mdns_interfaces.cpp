#include "meshd/mdns_interfaces.hpp"

#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>
#include <string_view>

namespace mw::meshd {

namespace {

bool starts_with(std::string_view s, std::string_view p) {
    return s.substr(0, p.size()) == p;
}

// Container runtimes', hypervisors' and Kubernetes' own devices: their addresses are reachable
// only from this host (or its pods and VMs), never from a LAN neighbour.
bool virtual_device(const link_info& l) {
    for (std::string_view p : {"docker", "br-", "cni", "virbr", "kube-ipvs", "podman", "cali",
                               "flannel", "lxcbr", "lxdbr", "cilium_", "vnet", "weave"})
        if (starts_with(l.name, p)) return true;
    for (std::string_view k : {"wireguard", "tun", "dummy", "vxlan", "geneve", "ipip", "sit", "gre",
                               "gretap", "ip6tnl", "ip6gre", "vti", "nlmon", "ifb"})
        if (l.kind == k) return true;
    // The host side of a pod's veth (the CNI plugin's alias, cni-plugin/pod_wiring.cpp).
    return starts_with(l.alias, "meshwire/");
}

}  // namespace

std::vector<mdns_link> select_mdns_links(const std::vector<link_info>& links,
                                         const std::vector<addr_info>& addrs,
                                         const mdns_link_policy& policy) {
    std::vector<mdns_link> out;
    for (const auto& l : links) {
        if (!l.up() || (l.flags & IFF_LOOPBACK) || !(l.flags & IFF_MULTICAST)) continue;
        if (l.name == policy.wg_interface || l.kind == "wireguard") continue;
        if (policy.interfaces.empty()) {
            if (virtual_device(l)) continue;
        } else if (std::find(policy.interfaces.begin(), policy.interfaces.end(), l.name) ==
                   policy.interfaces.end()) {
            continue;
        }
        mdns_link m;
        m.index = l.index;
        m.name = l.name;
        for (const auto& a : addrs) {
            if (a.index != l.index) continue;
            if (a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)) continue;
            const ip_address& ip = a.prefix.address();
            if (ip.is_v4()) m.v4 = true;
            if (ip.is_v6()) m.v6 = true;
            if (a.flags & IFA_F_DEPRECATED) continue;
            if (ip.is_v6() && (a.flags & IFA_F_TEMPORARY)) continue;
            bool link_scope = a.scope == RT_SCOPE_LINK ||
                              (ip.is_v4() && ip.data()[0] == 169 && ip.data()[1] == 254) ||
                              (ip.is_v6() && ip.data()[0] == 0xfe && (ip.data()[1] & 0xc0) == 0x80);
            if (a.scope == RT_SCOPE_HOST || a.scope == RT_SCOPE_NOWHERE) continue;
            if (link_scope && !policy.link_local) continue;
            m.advertised.push_back(ip);
        }
        if (m.advertised.empty()) continue;
        std::sort(m.advertised.begin(), m.advertised.end());
        out.push_back(std::move(m));
    }
    std::sort(out.begin(), out.end(),
              [](const mdns_link& a, const mdns_link& b) { return a.index < b.index; });
    return out;
}

std::vector<mdns_link> host_mdns_links(const mdns_link_policy& policy) {
    auto nl = rtnl::open();
    if (!nl) return {};
    auto links = nl->list_links();
    if (!links) return {};
    std::vector<addr_info> addrs;
    for (int fam : {AF_INET, AF_INET6}) {
        auto a = nl->list_addresses(fam);
        if (!a) return {};
        addrs.insert(addrs.end(), a->begin(), a->end());
    }
    return select_mdns_links(*links, addrs, policy);
}

}  // namespace mw::meshd
