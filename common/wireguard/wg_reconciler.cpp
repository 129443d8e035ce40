#include "common/wireguard/wg_reconciler.hpp"

#include <linux/rtnetlink.h>

#include <algorithm>
#include <map>

#include "common/log.hpp"
#include "common/netns.hpp"

namespace mw {

namespace {

bool prefix_less(const ip_prefix& a, const ip_prefix& b) {
    if (a.address() == b.address()) return a.length() < b.length();
    return a.address() < b.address();
}

result<rtnl> open_rtnl(const std::string& netns_path) {
    if (netns_path.empty()) return rtnl::open();
    auto ns = MW_TRY(netns::open(netns_path));
    return rtnl::open_in(ns);
}

}  // namespace

wg_reconciler::wg_reconciler(wg_backend& backend) : backend_(backend) {
    backend_.set_restart_hook([this] { on_restart(); });
}

wg_reconciler::~wg_reconciler() {
    backend_.set_restart_hook({});
}

wg_device_update wg_reconciler::diff(const wg_device& observed, const wg_device& desired) {
    wg_device_update u;
    if (desired.private_key && desired.private_key != observed.private_key) {
        u.private_key = desired.private_key;
    }
    if (desired.listen_port && desired.listen_port != observed.listen_port) {
        u.listen_port = desired.listen_port;
    }
    if (desired.fwmark && desired.fwmark.value_or(0) != observed.fwmark.value_or(0)) {
        u.fwmark = desired.fwmark;
    }
    std::map<wg_key, const wg_peer*> have, want;
    for (const auto& p : observed.peers) have[p.public_key] = &p;
    for (const auto& p : desired.peers) want[p.public_key] = &p;

    for (const auto& [key, p] : have) {
        if (!want.count(key)) {
            wg_peer_update pu;
            pu.public_key = key;
            pu.remove = true;
            u.peers.push_back(std::move(pu));
        }
    }
    for (const auto& [key, d] : want) {
        auto it = have.find(key);
        wg_peer_update pu;
        pu.public_key = key;
        auto wanted_ips = normalize_allowed_ips(d->allowed_ips);
        if (it == have.end()) {
            pu.preshared_key = d->preshared_key;
            pu.endpoint = d->endpoint;
            if (d->persistent_keepalive) pu.persistent_keepalive = d->persistent_keepalive;
            pu.allowed_ips = std::move(wanted_ips);
            u.peers.push_back(std::move(pu));
            continue;
        }
        const wg_peer& o = *it->second;
        bool changed = false;
        if (d->preshared_key != o.preshared_key) {
            // Clearing is done with the all-zero key.
            pu.preshared_key = d->preshared_key ? *d->preshared_key : wg_key{};
            changed = true;
        }
        // An unset endpoint is left alone: WireGuard learns it when the peer roams.
        if (d->endpoint && d->endpoint != o.endpoint) {
            pu.endpoint = d->endpoint;
            changed = true;
        }
        if (d->persistent_keepalive != o.persistent_keepalive) {
            pu.persistent_keepalive = d->persistent_keepalive;
            changed = true;
        }
        if (wanted_ips != normalize_allowed_ips(o.allowed_ips)) {
            pu.replace_allowed_ips = true;
            pu.allowed_ips = std::move(wanted_ips);
            changed = true;
        }
        if (changed) {
            // Never re-create a peer that disappeared between our read and this write.
            pu.update_only = true;
            u.peers.push_back(std::move(pu));
        }
    }
    return u;
}

std::vector<ip_prefix> wg_reconciler::wanted_routes(const wg_device& desired) {
    std::vector<ip_prefix> out;
    for (const auto& p : desired.peers) {
        for (const auto& a : p.allowed_ips) out.push_back(a.network());
    }
    std::sort(out.begin(), out.end(), prefix_less);
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

wg_route_diff wg_reconciler::diff_routes(const std::vector<ip_prefix>& owned,
                                         const std::vector<ip_prefix>& wanted) {
    auto a = owned, b = wanted;
    for (auto& p : a) p = p.network();
    for (auto& p : b) p = p.network();
    std::sort(a.begin(), a.end(), prefix_less);
    a.erase(std::unique(a.begin(), a.end()), a.end());
    std::sort(b.begin(), b.end(), prefix_less);
    b.erase(std::unique(b.begin(), b.end()), b.end());
    wg_route_diff d;
    std::set_difference(b.begin(), b.end(), a.begin(), a.end(), std::back_inserter(d.add),
                        prefix_less);
    std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(d.remove),
                        prefix_less);
    return d;
}

result<wg_reconcile_report> wg_reconciler::apply(const wg_interface_config& desired) {
    // Everything is checked before the first change, so bad input never half-applies.
    MW_TRY_STATUS(validate_ifname(backend_.ifname()));
    MW_TRY_STATUS(validate(desired.device));
    for (const auto& a : desired.addresses) {
        if (!a.address().valid() || a.length() < 0 || a.length() > a.address().bits()) {
            return error(errc::invalid_argument, "invalid interface address prefix");
        }
    }
    std::lock_guard lk(mu_);
    wg_reconcile_report rep;
    MW_TRY_STATUS(backend_.up());
    auto observed = MW_TRY(backend_.get());
    auto u = diff(observed, desired.device);
    if (!u.empty()) {
        auto before = backend_.stats().bytes_sent;
        MW_TRY_STATUS(backend_.set(u));
        rep.wg_operations = u.operation_count();
        rep.wg_bytes = backend_.stats().bytes_sent - before;
        log::info("wireguard device updated",
                  {{"interface", backend_.ifname()},
                   {"operations", std::to_string(rep.wg_operations)},
                   {"peers", std::to_string(desired.device.peers.size())}});
    }
    last_ = desired;
    MW_TRY_STATUS(apply_link_locked(desired, rep));
    return rep;
}

status wg_reconciler::apply_link_locked(const wg_interface_config& desired,
                                        wg_reconcile_report& rep) {
    const std::string& ifname = backend_.ifname();
    auto nl = MW_TRY(open_rtnl(backend_.options().netns_path));
    auto link = MW_TRY(nl.get_link(ifname));
    if (desired.mtu && link.mtu != desired.mtu) {
        MW_TRY_STATUS(nl.set_mtu(link.index, desired.mtu));
        ++rep.link_changes;
    }
    if (!link.up()) {
        MW_TRY_STATUS(nl.set_link_up(link.index));
        ++rep.link_changes;
    }
    auto addrs = MW_TRY(nl.list_addresses(AF_UNSPEC, link.index));
    std::set<std::pair<ip_address, int>> have, want;
    for (const auto& a : addrs) have.emplace(a.prefix.address(), a.prefix.length());
    for (const auto& a : desired.addresses) {
        auto k = std::make_pair(a.address(), a.length());
        want.insert(k);
        if (!have.count(k)) {
            MW_TRY_STATUS(nl.add_address(link.index, a, /*nodad=*/true));
            ++rep.link_changes;
        }
        added_addresses_.insert(k);
    }
    // Only addresses this reconciler added before are removed; others belong to someone else.
    for (auto it = added_addresses_.begin(); it != added_addresses_.end();) {
        if (!want.count(*it)) {
            if (have.count(*it)) {
                MW_TRY_STATUS(nl.del_address(link.index, ip_prefix(it->first, it->second)));
                ++rep.link_changes;
            }
            it = added_addresses_.erase(it);
        } else {
            ++it;
        }
    }

    std::vector<ip_prefix> owned;
    for (int family : {AF_INET, AF_INET6}) {
        auto routes = MW_TRY(nl.list_routes(family));
        for (const auto& r : routes) {
            if (r.oif == link.index && r.protocol == k_wg_route_protocol &&
                r.table == desired.route_table) {
                owned.push_back(r.dst);
            }
        }
    }
    auto wanted = desired.manage_routes ? wanted_routes(desired.device) : std::vector<ip_prefix>{};
    auto rd = diff_routes(owned, wanted);
    for (const auto& p : rd.remove) {
        route_info r;
        r.dst = p;
        r.oif = link.index;
        r.table = desired.route_table;
        auto st = nl.del_route(r);
        if (!st && !st.err().is_errno(ESRCH) && !st.err().is_errno(ENOENT)) return st;
        ++rep.routes_removed;
    }
    for (const auto& p : rd.add) {
        route_info r;
        r.dst = p;
        r.oif = link.index;
        r.table = desired.route_table;
        r.protocol = k_wg_route_protocol;
        r.scope = p.is_v4() ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
        auto st = nl.add_route(r);
        if (!st && st.err().is_errno(EEXIST)) {
            // Someone else's route for the same prefix: it is theirs, we leave it.
            log::warn("route exists and is not ours, leaving it",
                      {{"interface", ifname}, {"route", p.str()}});
            continue;
        }
        if (!st) return st;
        ++rep.routes_added;
    }
    return {};
}

void wg_reconciler::on_restart() {
    std::lock_guard lk(mu_);
    if (!last_) return;
    wg_reconcile_report rep;
    auto st = apply_link_locked(*last_, rep);
    if (!st) {
        log::error("restoring link state after device restart failed",
                   {{"interface", backend_.ifname()}, {"error", st.err().message}});
        return;
    }
    log::info("link state restored after device restart",
              {{"interface", backend_.ifname()},
               {"routes", std::to_string(rep.routes_added)},
               {"changes", std::to_string(rep.link_changes)}});
}

}  // namespace mw
