#include "common/tunnel_mtu.hpp"

#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <string>

#include "common/log.hpp"

namespace mw {

static_assert(tunnel_mtu_for(k_default_underlay_mtu) == 1408);

std::optional<unsigned> default_route_mtu(rtnl& nl) {
    for (int family : {AF_INET, AF_INET6}) {
        auto routes = nl.list_routes(family);
        if (!routes) continue;
        for (const auto& r : *routes) {
            if (r.table != RT_TABLE_MAIN || r.dst.length() != 0 || !r.oif) continue;
            auto link = nl.get_link(r.oif);
            if (link && link->mtu >= k_min_underlay_mtu) {
                log::debug(
                    "MTU from default route device",
                    {{"interface", link->name}, {"underlay_mtu", std::to_string(link->mtu)}});
                return link->mtu;
            }
        }
    }
    return std::nullopt;
}

unsigned default_tunnel_mtu(rtnl& nl) {
    if (auto m = default_route_mtu(nl)) return tunnel_mtu_for(*m);
    log::debug("no default route: assuming underlay MTU 1500");
    return tunnel_mtu_for(k_default_underlay_mtu);
}

}  // namespace mw
