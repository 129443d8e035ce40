// rtnetlink (links, addresses, routes, neighbours) over libmnl. Every request is acknowledged;
// failures come back as mw::error carrying the errno and, when the kernel sent one, its
// extended-ack text ("RTM_NEWLINK veth0: File exists (kernel: ...)").
#pragma once

#include <libmnl/libmnl.h>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.hpp"
#include "common/netns.hpp"
#include "common/result.hpp"

namespace mw {

using mac_address = std::array<uint8_t, 6>;
std::string mac_to_string(const mac_address& m);
std::optional<mac_address> parse_mac(std::string_view text);

struct link_info {
    int index = 0;
    std::string name;
    std::string kind;   // IFLA_INFO_KIND ("veth", "wireguard", …); empty for plain devices
    std::string alias;  // IFLA_IFALIAS
    unsigned mtu = 0;
    unsigned flags = 0;  // IFF_*
    std::optional<mac_address> mac;
    bool up() const;
};

struct addr_info {
    int index = 0;
    ip_prefix prefix;    // address with its prefix length
    unsigned flags = 0;  // IFA_F_*
    int scope = 0;
};

struct route_info {
    ip_prefix dst;  // 0.0.0.0/0 or ::/0 for default
    std::optional<ip_address> gateway;
    int oif = 0;
    uint32_t table = 254;  // RT_TABLE_MAIN
    uint8_t protocol = 4;  // RTPROT_STATIC
    uint8_t scope = 0;     // RT_SCOPE_UNIVERSE
    uint8_t type = 1;      // RTN_UNICAST
    uint32_t priority = 0;
    bool onlink = false;
    unsigned mtu = 0;  // RTA_METRICS/RTAX_MTU, not locked (`ip route ... mtu N`); 0: none
};

struct neigh_info {
    int index = 0;
    ip_address dst;
    std::optional<mac_address> lladdr;
    uint16_t state = 0;  // NUD_*
};

// Several link attributes changed in one RTM_NEWLINK (one round trip instead of one each).
struct link_change {
    std::optional<bool> up;
    std::optional<unsigned> mtu;
    std::optional<std::string> alias;
};

struct veth_spec {
    std::string name;  // in this socket's namespace
    std::string peer_name;
    int peer_netns_fd = -1;  // -1: peer stays in this namespace
    unsigned mtu = 0;        // 0: kernel default
    std::string alias;       // optional IFLA_IFALIAS on `name`
};

class rtnl {
public:
    // A socket in the calling thread's namespace.
    static result<rtnl> open();
    // A socket bound to `ns`. The socket is created on a helper thread inside ns, then used from
    // any thread: a netlink socket stays in the namespace it was created in.
    static result<rtnl> open_in(const netns& ns);
    // open() when `netns_path` is empty, else open_in() the namespace at that path.
    static result<rtnl> open_at(const std::string& netns_path);

    rtnl(rtnl&&) noexcept;
    rtnl& operator=(rtnl&&) noexcept;
    rtnl(const rtnl&) = delete;
    rtnl& operator=(const rtnl&) = delete;
    ~rtnl();

    // Links. get_link fails with ENODEV when there is no such link.
    result<link_info> get_link(const std::string& name);
    result<link_info> get_link(int index);
    result<std::vector<link_info>> list_links();
    status create_veth(const veth_spec& spec);
    status create_link(const std::string& name, const std::string& kind, unsigned mtu = 0);
    status delete_link(int index);
    status set_link_up(int index, bool up = true);
    status set_mtu(int index, unsigned mtu);
    status set_alias(int index, const std::string& alias);
    status change_link(int index, const link_change& change);
    // Moves the link into the network namespace `netns_fd` (IFLA_NET_NS_FD).
    status set_link_netns(int index, int netns_fd);

    // Addresses. nodad skips IPv6 duplicate address detection (the address is usable at once).
    status add_address(int index, const ip_prefix& addr, bool nodad = false);
    status del_address(int index, const ip_prefix& addr);
    result<std::vector<addr_info>> list_addresses(int family, int index = 0);

    // Routes in the main table unless route.table says otherwise. replace (NLM_F_REPLACE) swaps
    // the route for this one in place, its MTU included (mtu 0 drops the metric): the prefix is
    // never without a route, as it would be between a delete and an add.
    status add_route(const route_info& route, bool replace = false);
    // A nonzero route.mtu must match too (IPv4); 0 matches any.
    status del_route(const route_info& route);
    result<std::vector<route_info>> list_routes(int family);

    // Permanent neighbour entry (static ARP / NDP).
    status add_neighbor(int index, const ip_address& dst, const mac_address& lladdr);
    result<std::vector<neigh_info>> list_neighbors(int family, int index = 0);

private:
    explicit rtnl(mnl_socket* s);
    // Sends the message in buf_ and waits for its ack; `what` names the request in errors.
    status transact(nlmsghdr* nlh, const std::string& what);
    // Sends a dump request and feeds every answer message to cb.
    status dump(nlmsghdr* nlh, const std::string& what,
                const std::function<void(const nlmsghdr*)>& cb);
    // Receives until the answer to `seq` is complete. cb gets data messages (may be empty).
    status receive(uint32_t seq, const std::string& what,
                   const std::function<void(const nlmsghdr*)>* cb);
    nlmsghdr* start(uint16_t type, uint16_t flags);
    result<link_info> get_link_req(const std::string* name, int index);

    mnl_socket* sock_ = nullptr;
    uint32_t seq_ = 0;
    uint32_t portid_ = 0;
    std::vector<char> buf_;
};

}  // namespace mw
