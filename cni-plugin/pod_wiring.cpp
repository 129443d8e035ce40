#include "cni-plugin/pod_wiring.hpp"

#include <linux/rtnetlink.h>
#include <net/if.h>

#include <cerrno>
#include <cstdio>

#include "common/log.hpp"
#include "common/sysctl.hpp"

namespace mw::cni {

namespace {

uint64_t fnv1a64(const std::string& s) {
    uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    return h;
}

route_info default_route(int family, int oif) {
    route_info r;
    r.dst = ip_prefix(ip_address::from_u128(family, 0), 0);
    r.gateway = gateway_for(family);
    r.oif = oif;
    r.protocol = RTPROT_STATIC;
    // The v4 gateway is not on any subnet of the pod: onlink tells the kernel it is reachable on
    // the link anyway. The v6 gateway is link-local, which needs nothing.
    r.onlink = family == AF_INET;
    return r;
}

route_info host_route(const ip_address& pod_ip, int oif) {
    route_info r;
    r.dst = ip_prefix(pod_ip, pod_ip.bits());
    r.oif = oif;
    r.scope = RT_SCOPE_LINK;
    r.protocol = RTPROT_STATIC;
    return r;
}

bool route_matches(const route_info& have, const ip_prefix& dst,
                   const std::optional<ip_address>& gw, int oif) {
    if (!(have.dst.network() == dst.network()) || have.table != RT_TABLE_MAIN) return false;
    if (gw && (!have.gateway || !(*have.gateway == *gw))) return false;
    return oif == 0 || have.oif == oif;
}

}  // namespace

ip_address gateway_for(int family) {
    return *ip_address::parse(family == AF_INET ? k_gateway_v4 : k_gateway_v6);
}

std::string host_veth_name(const std::string& container_id, const std::string& ifname) {
    char buf[32];
    std::snprintf(
        buf, sizeof buf, "mw%012llx",
        static_cast<unsigned long long>(fnv1a64(container_id + "/" + ifname) & 0xffffffffffffULL));
    return buf;
}

std::string host_veth_alias(const std::string& network, const std::string& container_id,
                            const std::string& ifname) {
    return "meshwire/" + network + "/" + container_id + "/" + ifname;
}

std::optional<alias_parts> parse_alias(const std::string& alias) {
    const std::string prefix = "meshwire/";
    if (alias.rfind(prefix, 0) != 0) return std::nullopt;
    std::string rest = alias.substr(prefix.size());
    auto a = rest.find('/');
    if (a == std::string::npos) return std::nullopt;
    auto b = rest.find('/', a + 1);
    if (b == std::string::npos) return std::nullopt;
    alias_parts p{rest.substr(0, a), rest.substr(a + 1, b - a - 1), rest.substr(b + 1)};
    if (p.network.empty() || p.container_id.empty() || p.ifname.empty()) return std::nullopt;
    return p;
}

bool looks_half_created_veth(const link_info& l) {
    if (l.kind != "veth" || !l.alias.empty() || l.name.size() != 14 || l.name.rfind("mw", 0) != 0)
        return false;
    for (size_t i = 2; i < l.name.size(); ++i) {
        char c = l.name[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

bool is_half_created_veth(const link_info& l, const std::string& expected_name) {
    return l.name == expected_name && looks_half_created_veth(l);
}

unsigned pod_wiring::default_mtu() {
    return default_tunnel_mtu(host_);
}

status pod_wiring::configure_pod(const netns& pod_ns, const wiring_spec& spec,
                                 const mac_address& host_mac, wiring_result& out) {
    return pod_ns.run([&]() -> status {
        auto nl = MW_TRY(rtnl::open());
        auto link = MW_TRY(nl.get_link(spec.ifname));
        if (link.mac) out.pod_mac = mac_to_string(*link.mac);
        bool has_v6 = false;
        for (const auto& a : spec.addresses) has_v6 |= a.is_v6();
        if (has_v6) {
            // Addresses are added without DAD; the link-local one should not wait either.
            (void)write_sysctl("net/ipv6/conf/" + spec.ifname + "/accept_dad", "0");
            (void)write_sysctl("net/ipv6/conf/" + spec.ifname + "/disable_ipv6", "0");
        }
        for (const auto& a : spec.addresses) {
            MW_TRY_STATUS(nl.add_address(link.index, ip_prefix(a, a.bits()), /*nodad=*/true));
        }
        MW_TRY_STATUS(nl.set_link_up(link.index));
        for (const auto& a : spec.addresses) {
            MW_TRY_STATUS(nl.add_neighbor(link.index, gateway_for(a.family()), host_mac));
            // A second interface in the same pod must not steal the first one's default route:
            // its default goes in with a worse metric, so it takes over only if the first goes.
            route_info def = default_route(a.family(), link.index);
            auto st = nl.add_route(def);
            if (!st && st.err().is_errno(EEXIST)) {
                def.priority = 1024 + static_cast<uint32_t>(link.index);
                st = nl.add_route(def);
            }
            MW_TRY_STATUS(st);
        }
        return {};
    });
}

result<wiring_result> pod_wiring::add(const netns& pod_ns, const wiring_spec& spec) {
    wiring_result out;
    out.host_veth = host_veth_name(spec.container_id, spec.ifname);
    const std::string alias = host_veth_alias(spec.network, spec.container_id, spec.ifname);

    // A repeated ADD for the same attachment replaces the previous wiring.
    if (auto existing = host_.get_link(out.host_veth)) {
        if (existing->alias != alias && !is_half_created_veth(*existing, out.host_veth)) {
            return error(errc::already_exists,
                         "host interface " + out.host_veth +
                             " exists and is not ours for this attachment (alias \"" +
                             existing->alias + "\")");
        }
        log::info("replacing wiring of a repeated ADD",
                  {{"container_id", spec.container_id}, {"veth", out.host_veth}});
        MW_TRY_STATUS(host_.delete_link(existing->index));
    }

    // The alias is set together with IFF_UP below (one message); until then a crash leaves a veth
    // without alias: the rollback below removes it on errors, DEL, GC and a retried ADD after a
    // crash (is_half_created_veth).
    veth_spec vs{out.host_veth, spec.ifname, pod_ns.fd(), spec.mtu, {}};
    if (auto st = host_.create_veth(vs); !st) {
        if (st.err().is_errno(EEXIST)) {
            // The host name was free above, so the clash is in the pod.
            if (auto half = host_.get_link(out.host_veth)) (void)host_.delete_link(half->index);
            return error(errc::already_exists,
                         "interface " + spec.ifname +
                             " already exists in the container's network namespace");
        }
        // The veth may exist without its alias if only set_alias failed.
        if (auto half = host_.get_link(out.host_veth)) (void)host_.delete_link(half->index);
        return std::move(st).err();
    }

    auto undo = [&](error e) -> error {
        if (auto l = host_.get_link(out.host_veth)) {
            if (auto st = host_.delete_link(l->index); !st) {
                log::error("rollback: deleting host veth failed",
                           {{"veth", out.host_veth}, {"error", st.err().message}});
            }
        }
        return e;
    };

    auto host_link = host_.get_link(out.host_veth);
    if (!host_link) return undo(std::move(host_link).err());
    // A copy checked once: each host_link-> is a call, after which clang-tidy's
    // unchecked-optional-access no longer knows the mac was checked.
    const std::optional<mac_address> host_mac = host_link->mac;
    if (!host_mac) return undo(error(errc::protocol_error, "host veth has no MAC address"));
    out.host_mac = mac_to_string(*host_mac);

    bool has_v4 = false, has_v6 = false;
    for (const auto& a : spec.addresses) (a.is_v4() ? has_v4 : has_v6) = true;
    if (has_v6) {
        // The host's link-local address on the veth must be usable at once for neighbour discovery.
        (void)write_sysctl("net/ipv6/conf/" + out.host_veth + "/accept_dad", "0");
    }
    if (auto st = host_.change_link(host_link->index, {true, {}, alias}); !st) {
        return undo(std::move(st).err());
    }
    if (auto st = configure_pod(pod_ns, spec, *host_mac, out); !st) {
        return undo(st.err().wrap("configuring " + spec.ifname + " in " + pod_ns.path()));
    }
    for (const auto& a : spec.addresses) {
        if (auto st = host_.add_route(host_route(a, host_link->index), /*replace=*/true); !st) {
            return undo(std::move(st).err());
        }
    }
    // Pods reach each other and the overlay through the host: forwarding must be on.
    if (has_v4) {
        if (auto st = ensure_sysctl("net/ipv4/ip_forward", "1"); !st)
            return undo(std::move(st).err());
    }
    if (has_v6) {
        if (auto st = ensure_sysctl("net/ipv6/conf/all/forwarding", "1"); !st)
            return undo(std::move(st).err());
    }
    return out;
}

status pod_wiring::del(const std::string& container_id, const std::string& ifname) {
    std::string name = host_veth_name(container_id, ifname);
    auto link = host_.get_link(name);
    if (!link) {
        if (link.err().is_errno(ENODEV)) return {};
        return std::move(link).err();
    }
    if (auto p = parse_alias(link->alias);
        !is_half_created_veth(*link, name) &&
        (!p || p->container_id != container_id || p->ifname != ifname)) {
        log::warn("not deleting a host veth that is not ours",
                  {{"veth", name}, {"alias", link->alias}, {"container_id", container_id}});
        return {};
    }
    auto st = host_.delete_link(link->index);
    if (!st && (st.err().is_errno(ENODEV) || st.err().is_errno(ENOENT))) return {};
    return st;
}

status pod_wiring::check(const netns& pod_ns, const wiring_spec& spec, const cni_result& prev) {
    auto mismatch = [](std::string m) { return error(errc::state_mismatch, std::move(m)); };
    std::string host_name = host_veth_name(spec.container_id, spec.ifname);
    auto host_link = host_.get_link(host_name);
    if (!host_link) return mismatch("host veth " + host_name + " is missing");
    if (host_link->alias != host_veth_alias(spec.network, spec.container_id, spec.ifname)) {
        return mismatch("host veth " + host_name + " does not belong to this attachment");
    }
    if (!host_link->up()) return mismatch("host veth " + host_name + " is down");

    // Which result interface is the pod's?
    std::optional<int> pod_if;
    for (size_t i = 0; i < prev.interfaces.size(); ++i) {
        if (prev.interfaces[i].name == spec.ifname && !prev.interfaces[i].sandbox.empty()) {
            pod_if = static_cast<int>(i);
        }
    }
    if (!pod_if) return mismatch("prevResult lists no interface " + spec.ifname + " in a sandbox");
    const auto& want_if = prev.interfaces[*pod_if];

    MW_TRY_STATUS(pod_ns.run([&]() -> status {
        auto nl = MW_TRY(rtnl::open());
        auto link = nl.get_link(spec.ifname);
        if (!link)
            return mismatch("interface " + spec.ifname + " is missing from " + pod_ns.path());
        if (!want_if.mac.empty() && (!link->mac || mac_to_string(*link->mac) != want_if.mac)) {
            return mismatch("interface " + spec.ifname + " has MAC " +
                            (link->mac ? mac_to_string(*link->mac) : "none") +
                            ", prevResult says " + want_if.mac);
        }
        if (!link->up()) return mismatch("interface " + spec.ifname + " is down");
        auto addrs = MW_TRY(nl.list_addresses(AF_UNSPEC, link->index));
        for (const auto& ip : prev.ips) {
            if (ip.interface && *ip.interface != *pod_if) continue;
            bool found = false;
            for (const auto& a : addrs) found |= a.prefix == ip.address;
            if (!found) {
                return mismatch("address " + ip.address.str() + " is missing from " + spec.ifname);
            }
        }
        for (const auto& r : prev.routes) {
            auto routes = MW_TRY(nl.list_routes(r.dst.family()));
            bool found = false;
            for (const auto& have : routes) found |= route_matches(have, r.dst, r.gw, 0);
            if (!found) {
                return mismatch("route " + r.dst.str() + (r.gw ? " via " + r.gw->str() : "") +
                                " is missing in " + pod_ns.path());
            }
        }
        return {};
    }));

    for (int family : {AF_INET, AF_INET6}) {
        bool wanted = false;
        for (const auto& ip : prev.ips) wanted |= ip.address.family() == family;
        if (!wanted) continue;
        auto routes = MW_TRY(host_.list_routes(family));
        for (const auto& ip : prev.ips) {
            if (ip.address.family() != family || (ip.interface && *ip.interface != *pod_if))
                continue;
            const auto& a = ip.address.address();
            bool found = false;
            for (const auto& have : routes) {
                found |=
                    route_matches(have, ip_prefix(a, a.bits()), std::nullopt, host_link->index);
            }
            if (!found)
                return mismatch("host route " + a.str() + " dev " + host_name + " is missing");
        }
    }
    return {};
}

}  // namespace mw::cni
