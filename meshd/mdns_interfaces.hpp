// Which interfaces meshd's mDNS runs on and which of their addresses it advertises (issue 10 §2:
// EdgeMesh advertised 127.0.0.1, docker0's 172.17.0.1, libvirt's 192.168.122.1, 169.254/16 and
// kube-ipvs addresses, and dials to them failed). Pure: rtnetlink's links and addresses in, the
// selection out; mdns_service reads the host and calls this.
#pragma once

#include <string>
#include <vector>

#include "common/ip_address.hpp"
#include "common/rtnl.hpp"

namespace mw::meshd {

struct mdns_link {
    int index = 0;
    std::string name;
    std::vector<ip_address> advertised;  // A/AAAA records
    bool v4 = false, v6 = false;         // families the link can send multicast from
    friend bool operator==(const mdns_link&, const mdns_link&) = default;
};

struct mdns_link_policy {
    std::string wg_interface;             // meshd's own WireGuard interface: never
    std::vector<std::string> interfaces;  // mdns.interfaces: only these (empty: the default)
    bool link_local = false;              // mdns.linkLocal: advertise 169.254/16 and fe80::/10
};

// By default every up, multicast-capable, non-loopback interface with an address to advertise,
// except: the WireGuard interface (ours and any other), tun devices, pod veths (alias
// "meshwire/..."), container and virtual bridges and devices (docker*, br-*, cni*, virbr*,
// kube-ipvs*, podman*, cali*, flannel*, lxcbr*, lxdbr*, cilium_*, and kinds dummy, vxlan,
// geneve, ipip, sit, gre). Listed `interfaces` replace the default (the WireGuard interface
// still never). Addresses: global scope (link scope only with link_local), never tentative,
// deprecated, DAD-failed or IPv6 temporary ones. Sorted by interface index.
std::vector<mdns_link> select_mdns_links(const std::vector<link_info>& links,
                                         const std::vector<addr_info>& addrs,
                                         const mdns_link_policy& policy);

// Reads the host through rtnetlink; empty when it cannot be read.
std::vector<mdns_link> host_mdns_links(const mdns_link_policy& policy);

}  // namespace mw::meshd
