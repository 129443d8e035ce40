#include "meshd/host_addresses.hpp"

#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <map>

#include "common/rtnl.hpp"
#include "meshd/core/peer_record.hpp"

namespace mw::meshd {

std::vector<wg_endpoint> advertised_endpoints(const std::string& wg_interface, uint16_t port) {
    std::vector<wg_endpoint> out;
    auto nl = rtnl::open();
    if (!nl) return out;
    auto links = nl->list_links();
    if (!links) return out;
    std::map<int, const link_info*> by_index;
    for (const auto& l : *links) by_index[l.index] = &l;
    for (int fam : {AF_INET, AF_INET6}) {
        auto addrs = nl->list_addresses(fam);
        if (!addrs) continue;
        for (const auto& a : *addrs) {
            auto it = by_index.find(a.index);
            if (it == by_index.end()) continue;
            const link_info& l = *it->second;
            // Not: loopback, our WireGuard interface, pod veths (their host side carries no
            // addresses, but be explicit), link-local or deprecated/tentative addresses.
            if ((l.flags & IFF_LOOPBACK) || l.name == wg_interface || l.kind == "wireguard" ||
                l.kind == "tun" || !l.up())
                continue;
            if (a.scope != RT_SCOPE_UNIVERSE) continue;
            if (a.flags & (IFA_F_TENTATIVE | IFA_F_DEPRECATED | IFA_F_DADFAILED)) continue;
            // IPv6 privacy addresses are for outgoing connections and rotate (each rotation
            // would re-sign our record, and re-verify a relay role offered on them).
            if (fam == AF_INET6 && (a.flags & IFA_F_TEMPORARY)) continue;
            out.push_back({a.prefix.address(), port});
            if (out.size() == peer_record::max_endpoints) return out;
        }
    }
    return out;
}

std::vector<ip_address> host_addresses() {
    std::vector<ip_address> out;
    if (auto nl = rtnl::open()) {
        for (int fam : {AF_INET, AF_INET6}) {
            if (auto addrs = nl->list_addresses(fam)) {
                for (const auto& a : *addrs) out.push_back(a.prefix.address());
            }
        }
    }
    return out;
}

}  // namespace mw::meshd
