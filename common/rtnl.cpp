#include "common/rtnl.hpp"

#include "common/nl_attr.hpp"
#include "common/nl_socket.hpp"

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if_arp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace mw {

using nl::attr_string;

namespace {

constexpr size_t k_buf_size = 32768;  // large enough for one dump datagram

}  // namespace

std::string mac_to_string(const mac_address& m) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4],
                  m[5]);
    return buf;
}

std::optional<mac_address> parse_mac(std::string_view text) {
    if (text.size() != 17) return std::nullopt;
    mac_address m{};
    for (size_t i = 0; i < 6; ++i) {
        auto hex = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
        };
        int hi = hex(text[i * 3]), lo = hex(text[i * 3 + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && text[i * 3 + 2] != ':')) return std::nullopt;
        m[i] = static_cast<uint8_t>(hi * 16 + lo);
    }
    return m;
}

bool link_info::up() const {
    return (flags & IFF_UP) != 0;
}

rtnl::rtnl(mnl_socket* s) : sock_(s), buf_(k_buf_size) {
    portid_ = mnl_socket_get_portid(s);
    seq_ = static_cast<uint32_t>(time(nullptr));
}

rtnl::rtnl(rtnl&& o) noexcept
    : sock_(std::exchange(o.sock_, nullptr)),
      seq_(o.seq_),
      portid_(o.portid_),
      buf_(std::move(o.buf_)) {}

rtnl& rtnl::operator=(rtnl&& o) noexcept {
    if (this != &o) {
        if (sock_) mnl_socket_close(sock_);
        sock_ = std::exchange(o.sock_, nullptr);
        seq_ = o.seq_;
        portid_ = o.portid_;
        buf_ = std::move(o.buf_);
    }
    return *this;
}

rtnl::~rtnl() {
    if (sock_) mnl_socket_close(sock_);
}

result<rtnl> rtnl::open() {
    auto s = nl::open_socket(NETLINK_ROUTE, "rtnetlink");
    if (!s) return std::move(s).err();
    return rtnl(*s);
}

result<rtnl> rtnl::open_in(const netns& ns) {
    auto r = ns.run_value<rtnl>([] { return rtnl::open(); });
    if (!r) return r.err().wrap("in network namespace " + ns.path());
    return r;
}

result<rtnl> rtnl::open_at(const std::string& netns_path) {
    if (netns_path.empty()) return open();
    auto ns = MW_TRY(netns::open(netns_path));
    return open_in(ns);
}

nlmsghdr* rtnl::start(uint16_t type, uint16_t flags) {
    std::memset(buf_.data(), 0, MNL_NLMSG_HDRLEN);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf_.data());
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | flags;
    nlh->nlmsg_seq = ++seq_;
    return nlh;
}

status rtnl::receive(uint32_t seq, const std::string& what,
                     const std::function<void(const nlmsghdr*)>* cb) {
    std::vector<char> rbuf(k_buf_size);
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(sock_, rbuf.data(), rbuf.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return error::from_errno(errno, what + ": receiving netlink answer");
        }
        const auto* nlh = reinterpret_cast<const nlmsghdr*>(rbuf.data());
        int len = static_cast<int>(n);
        // mnl_nlmsg_ok compares lengths as int; the unsigned bound keeps a bogus length in check.
        for (; mnl_nlmsg_ok(nlh, len) && nlh->nlmsg_len <= static_cast<unsigned>(len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_seq != seq || nlh->nlmsg_pid != portid_) continue;  // stale answer
            if (nlh->nlmsg_type == NLMSG_ERROR) {
                const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
                if (err->error == 0) return {};
                int e = -err->error;
                std::string msg = what + ": " + std::strerror(e);
                std::string ext = nl::extack_text(nlh);
                if (!ext.empty()) msg += " (kernel: " + ext + ")";
                return error(std::error_code(e, std::system_category()), msg);
            }
            if (nlh->nlmsg_type == NLMSG_DONE) return {};
            if (cb) (*cb)(nlh);
            if (!(nlh->nlmsg_flags & NLM_F_MULTI) && cb) return {};  // single GET answer
        }
    }
}

status rtnl::transact(nlmsghdr* nlh, const std::string& what) {
    nlh->nlmsg_flags |= NLM_F_ACK;
    if (mnl_socket_sendto(sock_, nlh, nlh->nlmsg_len) < 0) {
        return error::from_errno(errno, what + ": sending netlink request");
    }
    return receive(nlh->nlmsg_seq, what, nullptr);
}

status rtnl::dump(nlmsghdr* nlh, const std::string& what,
                  const std::function<void(const nlmsghdr*)>& cb) {
    if (mnl_socket_sendto(sock_, nlh, nlh->nlmsg_len) < 0) {
        return error::from_errno(errno, what + ": sending netlink request");
    }
    return receive(nlh->nlmsg_seq, what, &cb);
}

// ---- links ----

static link_info parse_link(const nlmsghdr* nlh) {
    link_info li;
    const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
    li.index = ifi->ifi_index;
    li.flags = ifi->ifi_flags;
    nl::for_each_attr(nlh, sizeof(*ifi), [&](const nlattr* a) {
        switch (mnl_attr_get_type(a)) {
            case IFLA_IFNAME:
                li.name = attr_string(a);
                break;
            case IFLA_MTU:
                li.mtu = mnl_attr_get_u32(a);
                break;
            case IFLA_IFALIAS:
                li.alias = attr_string(a);
                break;
            case IFLA_ADDRESS:
                if (mnl_attr_get_payload_len(a) == 6) {
                    mac_address m;
                    std::memcpy(m.data(), mnl_attr_get_payload(a), 6);
                    li.mac = m;
                }
                break;
            case IFLA_LINKINFO: {
                nl::for_each_nested(a, [&](const nlattr* n) {
                    if (mnl_attr_get_type(n) == IFLA_INFO_KIND) li.kind = attr_string(n);
                });
                break;
            }
            default:
                break;
        }
    });
    return li;
}

result<link_info> rtnl::get_link_req(const std::string* name, int index) {
    nlmsghdr* nlh = start(RTM_GETLINK, 0);
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = index;
    if (name) mnl_attr_put_strz(nlh, IFLA_IFNAME, name->c_str());
    // Skip per-VF stats etc.; we only need the basics.
    mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    std::optional<link_info> out;
    std::string what = name ? "RTM_GETLINK " + *name : "RTM_GETLINK index " + std::to_string(index);
    std::function<void(const nlmsghdr*)> cb = [&](const nlmsghdr* m) {
        if (m->nlmsg_type == RTM_NEWLINK) out = parse_link(m);
    };
    MW_TRY_STATUS(dump(nlh, what, cb));
    if (!out) return error(std::error_code(ENODEV, std::system_category()), what + ": no answer");
    return std::move(*out);
}

result<link_info> rtnl::get_link(const std::string& name) {
    if (name.empty() || name.size() >= IFNAMSIZ) {
        return error(errc::invalid_argument, "invalid interface name \"" + name + "\"");
    }
    return get_link_req(&name, 0);
}

result<link_info> rtnl::get_link(int index) {
    return get_link_req(nullptr, index);
}

result<std::vector<link_info>> rtnl::list_links() {
    nlmsghdr* nlh = start(RTM_GETLINK, NLM_F_DUMP);
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifi->ifi_family = AF_UNSPEC;
    mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    std::vector<link_info> out;
    MW_TRY_STATUS(dump(nlh, "RTM_GETLINK dump", [&](const nlmsghdr* m) {
        if (m->nlmsg_type == RTM_NEWLINK) out.push_back(parse_link(m));
    }));
    return out;
}

status rtnl::create_veth(const veth_spec& spec) {
    if (spec.name.empty() || spec.name.size() >= IFNAMSIZ || spec.peer_name.empty() ||
        spec.peer_name.size() >= IFNAMSIZ) {
        return error(errc::invalid_argument,
                     "invalid veth names \"" + spec.name + "\"/\"" + spec.peer_name + "\"");
    }
    nlmsghdr* nlh = start(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifi->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, spec.name.c_str());
    if (spec.mtu) mnl_attr_put_u32(nlh, IFLA_MTU, spec.mtu);
    nlattr* linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
    nlattr* data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
    nlattr* peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
    // The peer's attributes are preceded by its own ifinfomsg.
    auto* pifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    pifi->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, spec.peer_name.c_str());
    if (spec.mtu) mnl_attr_put_u32(nlh, IFLA_MTU, spec.mtu);
    if (spec.peer_netns_fd >= 0) mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, spec.peer_netns_fd);
    mnl_attr_nest_end(nlh, peer);
    mnl_attr_nest_end(nlh, data);
    mnl_attr_nest_end(nlh, linkinfo);
    MW_TRY_STATUS(transact(nlh, "RTM_NEWLINK veth " + spec.name + "/" + spec.peer_name));
    if (!spec.alias.empty()) {
        auto li = get_link(spec.name);
        if (!li) return std::move(li).err();
        return set_alias(li->index, spec.alias);
    }
    return {};
}

status rtnl::create_link(const std::string& name, const std::string& kind, unsigned mtu) {
    if (name.empty() || name.size() >= IFNAMSIZ) {
        return error(errc::invalid_argument, "invalid interface name \"" + name + "\"");
    }
    nlmsghdr* nlh = start(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifi->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, name.c_str());
    if (mtu) mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
    nlattr* linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, kind.c_str());
    mnl_attr_nest_end(nlh, linkinfo);
    return transact(nlh, "RTM_NEWLINK " + kind + " " + name);
}

status rtnl::delete_link(int index) {
    nlmsghdr* nlh = start(RTM_DELLINK, 0);
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = index;
    return transact(nlh, "RTM_DELLINK index " + std::to_string(index));
}

status rtnl::change_link(int index, const link_change& change) {
    nlmsghdr* nlh = start(RTM_NEWLINK, 0);
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = index;
    std::string what = "RTM_NEWLINK index " + std::to_string(index);
    if (change.up) {
        ifi->ifi_change = IFF_UP;
        ifi->ifi_flags = *change.up ? IFF_UP : 0;
        what += *change.up ? " up" : " down";
    }
    if (change.mtu) {
        mnl_attr_put_u32(nlh, IFLA_MTU, *change.mtu);
        what += " mtu " + std::to_string(*change.mtu);
    }
    if (change.alias) {
        mnl_attr_put(nlh, IFLA_IFALIAS, change.alias->size(), change.alias->data());
        what += " alias";
    }
    return transact(nlh, what);
}

status rtnl::set_link_up(int index, bool up) {
    return change_link(index, {up, {}, {}});
}
status rtnl::set_mtu(int index, unsigned mtu) {
    return change_link(index, {{}, mtu, {}});
}
status rtnl::set_alias(int index, const std::string& alias) {
    return change_link(index, {{}, {}, alias});
}

status rtnl::set_link_netns(int index, int netns_fd) {
    nlmsghdr* nlh = start(RTM_NEWLINK, 0);
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = index;
    mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, static_cast<uint32_t>(netns_fd));
    return transact(nlh, "RTM_NEWLINK set netns index " + std::to_string(index));
}

// ---- addresses ----

static void put_addr(nlmsghdr* nlh, uint16_t type, const ip_address& a) {
    mnl_attr_put(nlh, type, a.byte_len(), a.data());
}

status rtnl::add_address(int index, const ip_prefix& addr, bool nodad) {
    nlmsghdr* nlh = start(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
    auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
    ifa->ifa_family = static_cast<uint8_t>(addr.family());
    ifa->ifa_prefixlen = static_cast<uint8_t>(addr.length());
    ifa->ifa_index = static_cast<unsigned>(index);
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    put_addr(nlh, IFA_LOCAL, addr.address());
    put_addr(nlh, IFA_ADDRESS, addr.address());
    if (nodad && !addr.is_v4()) mnl_attr_put_u32(nlh, IFA_FLAGS, IFA_F_NODAD);
    return transact(nlh, "RTM_NEWADDR " + addr.str() + " index " + std::to_string(index));
}

status rtnl::del_address(int index, const ip_prefix& addr) {
    nlmsghdr* nlh = start(RTM_DELADDR, 0);
    auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
    ifa->ifa_family = static_cast<uint8_t>(addr.family());
    ifa->ifa_prefixlen = static_cast<uint8_t>(addr.length());
    ifa->ifa_index = static_cast<unsigned>(index);
    put_addr(nlh, IFA_LOCAL, addr.address());
    put_addr(nlh, IFA_ADDRESS, addr.address());
    return transact(nlh, "RTM_DELADDR " + addr.str() + " index " + std::to_string(index));
}

result<std::vector<addr_info>> rtnl::list_addresses(int family, int index) {
    nlmsghdr* nlh = start(RTM_GETADDR, NLM_F_DUMP);
    auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
    ifa->ifa_family = static_cast<uint8_t>(family);
    std::vector<addr_info> out;
    MW_TRY_STATUS(dump(nlh, "RTM_GETADDR dump", [&](const nlmsghdr* m) {
        if (m->nlmsg_type != RTM_NEWADDR) return;
        const auto* a = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(m));
        if (index && static_cast<int>(a->ifa_index) != index) return;
        addr_info ai;
        ai.index = static_cast<int>(a->ifa_index);
        ai.flags = a->ifa_flags;
        ai.scope = a->ifa_scope;
        std::optional<ip_address> local, address;
        nl::for_each_attr(m, sizeof(*a), [&](const nlattr* at) {
            auto t = mnl_attr_get_type(at);
            if (t == IFA_LOCAL || t == IFA_ADDRESS) {
                auto ip = ip_address::from_bytes(a->ifa_family, mnl_attr_get_payload(at),
                                                 mnl_attr_get_payload_len(at));
                (t == IFA_LOCAL ? local : address) = ip;
            } else if (t == IFA_FLAGS) {
                ai.flags = mnl_attr_get_u32(at);
            }
        });
        auto ip = local ? local : address;
        if (!ip) return;
        ai.prefix = ip_prefix(*ip, a->ifa_prefixlen);
        out.push_back(ai);
    }));
    return out;
}

// ---- routes ----

static nlmsghdr* fill_route(nlmsghdr* nlh, const route_info& r) {
    auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
    rtm->rtm_family = static_cast<uint8_t>(r.dst.family());
    rtm->rtm_dst_len = static_cast<uint8_t>(r.dst.length());
    rtm->rtm_table =
        r.table < 256 ? static_cast<uint8_t>(r.table) : static_cast<uint8_t>(RT_TABLE_UNSPEC);
    rtm->rtm_protocol = r.protocol;
    rtm->rtm_scope = r.scope;
    rtm->rtm_type = r.type;
    if (r.onlink) rtm->rtm_flags |= RTNH_F_ONLINK;
    if (r.table >= 256) mnl_attr_put_u32(nlh, RTA_TABLE, r.table);
    if (r.dst.length() > 0) put_addr(nlh, RTA_DST, r.dst.network().address());
    if (r.gateway) put_addr(nlh, RTA_GATEWAY, *r.gateway);
    if (r.oif) mnl_attr_put_u32(nlh, RTA_OIF, static_cast<uint32_t>(r.oif));
    if (r.priority) mnl_attr_put_u32(nlh, RTA_PRIORITY, r.priority);
    if (r.mtu) {
        // Nested, as iproute2 sends it. No RTAX_LOCK: path MTU discovery may still lower it.
        nlattr* metrics = mnl_attr_nest_start(nlh, RTA_METRICS);
        mnl_attr_put_u32(nlh, RTAX_MTU, r.mtu);
        mnl_attr_nest_end(nlh, metrics);
    }
    return nlh;
}

static std::string route_what(const char* verb, const route_info& r) {
    std::string s = std::string(verb) + " " + r.dst.str();
    if (r.gateway) s += " via " + r.gateway->str();
    if (r.oif) s += " oif " + std::to_string(r.oif);
    if (r.mtu) s += " mtu " + std::to_string(r.mtu);
    return s;
}

status rtnl::add_route(const route_info& route, bool replace) {
    nlmsghdr* nlh = start(RTM_NEWROUTE, NLM_F_CREATE | (replace ? NLM_F_REPLACE : NLM_F_EXCL));
    fill_route(nlh, route);
    return transact(nlh, route_what("RTM_NEWROUTE", route));
}

status rtnl::del_route(const route_info& route) {
    nlmsghdr* nlh = start(RTM_DELROUTE, 0);
    fill_route(nlh, route);
    auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_get_payload(nlh));
    rtm->rtm_scope = RT_SCOPE_NOWHERE;  // match any scope
    rtm->rtm_protocol = 0;              // match any protocol
    return transact(nlh, route_what("RTM_DELROUTE", route));
}

result<std::vector<route_info>> rtnl::list_routes(int family) {
    nlmsghdr* nlh = start(RTM_GETROUTE, NLM_F_DUMP);
    auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
    rtm->rtm_family = static_cast<uint8_t>(family);
    std::vector<route_info> out;
    MW_TRY_STATUS(dump(nlh, "RTM_GETROUTE dump", [&](const nlmsghdr* m) {
        if (m->nlmsg_type != RTM_NEWROUTE) return;
        const auto* r = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(m));
        route_info ri;
        ri.table = r->rtm_table;
        ri.protocol = r->rtm_protocol;
        ri.scope = r->rtm_scope;
        ri.type = r->rtm_type;
        ri.onlink = (r->rtm_flags & RTNH_F_ONLINK) != 0;
        ip_address dst = ip_address::from_u128(r->rtm_family, 0);
        nl::for_each_attr(m, sizeof(*r), [&](const nlattr* at) {
            switch (mnl_attr_get_type(at)) {
                case RTA_DST:
                    if (auto ip = ip_address::from_bytes(r->rtm_family, mnl_attr_get_payload(at),
                                                         mnl_attr_get_payload_len(at)))
                        dst = *ip;
                    break;
                case RTA_GATEWAY:
                    ri.gateway = ip_address::from_bytes(r->rtm_family, mnl_attr_get_payload(at),
                                                        mnl_attr_get_payload_len(at));
                    break;
                case RTA_OIF:
                    ri.oif = static_cast<int>(mnl_attr_get_u32(at));
                    break;
                case RTA_TABLE:
                    ri.table = mnl_attr_get_u32(at);
                    break;
                case RTA_PRIORITY:
                    ri.priority = mnl_attr_get_u32(at);
                    break;
                case RTA_METRICS:
                    // IPv6 dumps carry the route MTU here too (the kernel's fib6_pmtu).
                    nl::for_each_nested(at, [&](const nlattr* mx) {
                        if (mnl_attr_get_type(mx) == RTAX_MTU &&
                            mnl_attr_get_payload_len(mx) >= sizeof(uint32_t))
                            ri.mtu = mnl_attr_get_u32(mx);
                    });
                    break;
                default:
                    break;
            }
        });
        ri.dst = ip_prefix(dst, r->rtm_dst_len);
        out.push_back(ri);
    }));
    return out;
}

// ---- neighbours ----

status rtnl::add_neighbor(int index, const ip_address& dst, const mac_address& lladdr) {
    nlmsghdr* nlh = start(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
    auto* nd = static_cast<ndmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ndmsg)));
    nd->ndm_family = static_cast<uint8_t>(dst.family());
    nd->ndm_ifindex = index;
    nd->ndm_state = NUD_PERMANENT;
    nd->ndm_type = RTN_UNICAST;
    put_addr(nlh, NDA_DST, dst);
    mnl_attr_put(nlh, NDA_LLADDR, 6, lladdr.data());
    return transact(nlh, "RTM_NEWNEIGH " + dst.str() + " lladdr " + mac_to_string(lladdr));
}

result<std::vector<neigh_info>> rtnl::list_neighbors(int family, int index) {
    nlmsghdr* nlh = start(RTM_GETNEIGH, NLM_F_DUMP);
    auto* nd = static_cast<ndmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ndmsg)));
    nd->ndm_family = static_cast<uint8_t>(family);
    std::vector<neigh_info> out;
    MW_TRY_STATUS(dump(nlh, "RTM_GETNEIGH dump", [&](const nlmsghdr* m) {
        if (m->nlmsg_type != RTM_NEWNEIGH) return;
        const auto* n = static_cast<const ndmsg*>(mnl_nlmsg_get_payload(m));
        if (index && n->ndm_ifindex != index) return;
        neigh_info ni;
        ni.index = n->ndm_ifindex;
        ni.state = n->ndm_state;
        nl::for_each_attr(m, sizeof(*n), [&](const nlattr* at) {
            auto t = mnl_attr_get_type(at);
            if (t == NDA_DST) {
                if (auto ip = ip_address::from_bytes(n->ndm_family, mnl_attr_get_payload(at),
                                                     mnl_attr_get_payload_len(at)))
                    ni.dst = *ip;
            } else if (t == NDA_LLADDR && mnl_attr_get_payload_len(at) == 6) {
                mac_address mac;
                std::memcpy(mac.data(), mnl_attr_get_payload(at), 6);
                ni.lladdr = mac;
            }
        });
        if (ni.dst.valid()) out.push_back(ni);
    }));
    return out;
}

}  // namespace mw
