// Routed veth wiring (DESIGN §3): no bridge. The pod's interface holds its addresses as /32 and
// /128, its default routes go via the link-local gateways 169.254.1.1 and fe80::1, which a
// permanent neighbour entry maps to the host veth's MAC (so no proxy ARP/NDP is needed), and the
// host routes each pod address to the host veth.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cni-plugin/cni_result.hpp"
#include "common/ip_address.hpp"
#include "common/netns.hpp"
#include "common/rtnl.hpp"
#include "common/tunnel_mtu.hpp"

namespace mw::cni {

inline constexpr const char* k_gateway_v4 = "169.254.1.1";
inline constexpr const char* k_gateway_v6 = "fe80::1";

ip_address gateway_for(int family);

// "mw" + 12 hex digits of a hash of container ID and ifname: stable, unique per attachment, and
// within IFNAMSIZ.
std::string host_veth_name(const std::string& container_id, const std::string& ifname);
// IFLA_IFALIAS on the host veth: "meshwire/<network>/<containerID>/<ifname>". GC and CHECK use it
// to tell our links from anyone else's.
std::string host_veth_alias(const std::string& network, const std::string& container_id,
                            const std::string& ifname);
struct alias_parts {
    std::string network, container_id, ifname;
};
std::optional<alias_parts> parse_alias(const std::string& alias);

// A veth left by an ADD killed between creating it and setting its alias (the kernel ignores
// IFLA_IFALIAS in RTM_NEWLINK, so these are two messages). The name is a hash of container ID and
// ifname, so a veth without alias under `expected_name` is that attachment's half-made one: DEL
// removes it and a retried ADD replaces it.
bool is_half_created_veth(const link_info& l, const std::string& expected_name);
// The same without knowing the attachment (GC): a veth without alias named like ours.
bool looks_half_created_veth(const link_info& l);

struct wiring_spec {
    std::string network;
    std::string container_id;
    std::string ifname;
    unsigned mtu = 0;
    std::vector<ip_address> addresses;  // one per family at most
};

struct wiring_result {
    std::string host_veth;
    std::string host_mac;
    std::string pod_mac;
};

class pod_wiring {
public:
    explicit pod_wiring(rtnl& host) : host_(host) {}

    // Creates and configures everything; on failure removes what it created.
    result<wiring_result> add(const netns& pod_ns, const wiring_spec& spec);
    // Removes the host veth (its peer goes with it, and with it the host routes). Missing is fine.
    status del(const std::string& container_id, const std::string& ifname);
    // Verifies that what `prev` says exists really does.
    status check(const netns& pod_ns, const wiring_spec& spec, const cni_result& prev);

    // Underlay MTU − k_tunnel_overhead (WireGuard over IPv6 + relay header, common/tunnel_mtu.hpp);
    // 1500 − 92 when there is no default route.
    unsigned default_mtu();

private:
    status configure_pod(const netns& pod_ns, const wiring_spec& spec, const mac_address& host_mac,
                         wiring_result& out);
    rtnl& host_;
};

}  // namespace mw::cni
