#include "common/wireguard/wg_reconciler.hpp"

#include <linux/rtnetlink.h>

#include <algorithm>
#include <map>

#include "common/log.hpp"
#include "common/netns.hpp"

namespace mw {

struct wg_reconciler::hook_guard {
    std::mutex m;
    wg_reconciler* self = nullptr;
};

wg_reconciler::wg_reconciler(wg_backend& backend, std::chrono::seconds full_sync_interval)
    : backend_(backend),
      full_sync_interval_(full_sync_interval),
      guard_(std::make_shared<hook_guard>()) {
    guard_->self = this;
    // The hook may already be running on the backend's supervisor thread when we are destroyed;
    // the guard makes the destructor wait for it and later calls find no reconciler.
    backend_.set_restart_hook([g = guard_] {
        std::lock_guard lk(g->m);
        if (g->self) g->self->on_restart();
    });
}

wg_reconciler::~wg_reconciler() {
    backend_.set_restart_hook({});
    std::lock_guard lk(guard_->m);
    guard_->self = nullptr;
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
    // Both peer sets sorted by key and walked together: O(N log N), no per-peer allocation.
    auto by_key = [](const std::vector<wg_peer>& v) {
        std::vector<const wg_peer*> out;
        out.reserve(v.size());
        for (const auto& p : v) out.push_back(&p);
        std::sort(out.begin(), out.end(),
                  [](const wg_peer* x, const wg_peer* y) { return x->public_key < y->public_key; });
        return out;
    };
    auto have = by_key(observed.peers), want = by_key(desired.peers);
    std::vector<wg_peer_update> changes;
    size_t i = 0, j = 0;
    while (i < have.size() || j < want.size()) {
        if (j == want.size() || (i < have.size() && have[i]->public_key < want[j]->public_key)) {
            wg_peer_update pu;
            pu.public_key = have[i++]->public_key;
            pu.remove = true;
            u.peers.push_back(std::move(pu));  // removals first
            continue;
        }
        const wg_peer& d = *want[j++];
        wg_peer_update pu;
        pu.public_key = d.public_key;
        if (i == have.size() || want[j - 1]->public_key < have[i]->public_key) {
            pu.preshared_key = d.preshared_key;
            pu.endpoint = d.endpoint;
            if (d.persistent_keepalive) pu.persistent_keepalive = d.persistent_keepalive;
            pu.allowed_ips = normalize_allowed_ips(d.allowed_ips);
            changes.push_back(std::move(pu));
            continue;
        }
        const wg_peer& o = *have[i++];
        bool changed = false;
        if (d.preshared_key != o.preshared_key) {
            // Clearing is done with the all-zero key.
            pu.preshared_key = d.preshared_key ? *d.preshared_key : wg_key{};
            changed = true;
        }
        // An unset endpoint is left alone: WireGuard learns it when the peer roams.
        if (d.endpoint && d.endpoint != o.endpoint) {
            pu.endpoint = d.endpoint;
            changed = true;
        }
        if (d.persistent_keepalive != o.persistent_keepalive) {
            pu.persistent_keepalive = d.persistent_keepalive;
            changed = true;
        }
        if (!same_allowed_ips(d.allowed_ips, o.allowed_ips)) {
            pu.replace_allowed_ips = true;
            pu.allowed_ips = normalize_allowed_ips(d.allowed_ips);
            changed = true;
        }
        if (changed) {
            // Never re-create a peer that disappeared between our read and this write.
            pu.update_only = true;
            changes.push_back(std::move(pu));
        }
    }
    for (auto& c : changes) u.peers.push_back(std::move(c));
    return u;
}

std::vector<ip_prefix> wg_reconciler::wanted_routes(const wg_device& desired) {
    std::vector<ip_prefix> out;
    for (const auto& p : desired.peers) {
        for (const auto& a : p.allowed_ips) out.push_back(a.network());
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

wg_route_set wg_reconciler::wanted_route_set(const wg_device& desired,
                                             const std::map<ip_prefix, unsigned>& route_mtu) {
    wg_route_set out;
    for (const auto& p : wanted_routes(desired)) out.emplace_hint(out.end(), p, 0);
    for (const auto& [p, mtu] : route_mtu) {
        auto it = out.find(p.network());
        if (it != out.end()) it->second = mtu;
    }
    return out;
}

result<wg_route_set> wg_reconciler::read_owned_routes(rtnl& nl, int ifindex, uint32_t table) {
    wg_route_set owned;
    for (int family : {AF_INET, AF_INET6}) {
        auto routes = MW_TRY(nl.list_routes(family));
        for (const auto& r : routes) {
            if (r.oif == ifindex && r.protocol == k_wg_route_protocol && r.table == table) {
                owned[r.dst.network()] = r.mtu;
            }
        }
    }
    return owned;
}

wg_route_diff wg_reconciler::diff_routes(const wg_route_set& owned, const wg_route_set& wanted) {
    // Both sorted by prefix and walked together.
    wg_route_diff d;
    auto a = owned.begin(), b = wanted.begin();
    while (a != owned.end() || b != wanted.end()) {
        if (b == wanted.end() || (a != owned.end() && a->first < b->first)) {
            d.remove.push_back((a++)->first);
        } else if (a == owned.end() || b->first < a->first) {
            d.add.push_back((b++)->first);
        } else {
            if (a->second != b->second) d.change.push_back(b->first);
            ++a;
            ++b;
        }
    }
    return d;
}

void wg_reconciler::invalidate_locked() {
    expected_.reset();
    owned_routes_.reset();
    ifindex_ = 0;
}

result<wg_reconcile_report> wg_reconciler::apply(const wg_interface_config& desired, wg_sync sync) {
    // Everything is checked before the first change, so bad input never half-applies.
    MW_TRY_STATUS(validate_ifname(backend_.ifname()));
    MW_TRY_STATUS(validate(desired.device));
    for (const auto& a : desired.addresses) {
        if (!a.address().valid() || a.length() < 0 || a.length() > a.address().bits()) {
            return error(errc::invalid_argument, "invalid interface address prefix");
        }
    }
    for (const auto& [p, mtu] : desired.route_mtu) {
        // The kernel clamps larger values: the route read back would differ at every full sync.
        if (mtu > k_max_route_mtu) {
            return error(errc::invalid_argument, "route MTU " + std::to_string(mtu) + " for " +
                                                     p.str() + " above " +
                                                     std::to_string(k_max_route_mtu));
        }
    }
    std::lock_guard lk(mu_);
    auto now = std::chrono::steady_clock::now();
    bool full = sync == wg_sync::full || !expected_ || now - last_full_ >= full_sync_interval_;
    wg_reconcile_report rep;
    rep.full_sync = full;
    wg_device base;
    if (full) {
        MW_TRY_STATUS(backend_.up());
        auto observed = backend_.get();
        if (!observed) {
            invalidate_locked();
            return std::move(observed).err();
        }
        base = std::move(*observed);
    } else {
        base = std::move(*expected_);
        expected_.reset();
    }
    const wg_interface_config* want = &desired;
    std::optional<wg_interface_config> with_kept;
    std::vector<ip_prefix> kept_routes;
    if (desired.keep_other_peers) {
        // Peers only the device has are wanted as they are (diff() then leaves them alone).
        std::set<wg_key> listed;
        for (const auto& p : desired.device.peers) listed.insert(p.public_key);
        for (const auto& p : base.peers) {
            if (listed.count(p.public_key)) continue;
            if (!with_kept) with_kept = desired;
            with_kept->device.peers.push_back(p);
            for (const auto& a : p.allowed_ips) kept_routes.push_back(a.network());
        }
        if (with_kept) want = &*with_kept;
    }
    auto u = diff(base, want->device);
    if (u.private_key && base.private_key) {
        // A device that was kept or adopted across a restart with another key (the node's key
        // file changed): ours wins; every session restarts with a handshake.
        log::warn("wireguard private key differs from the device's, reconfiguring",
                  {{"interface", backend_.ifname()}});
    }
    if (!u.empty()) {
        auto before = backend_.stats().bytes_sent;
        auto st = backend_.set(u);
        if (!st) {
            // What the device holds is unknown now: the next apply reads it back.
            invalidate_locked();
            return std::move(st).err();
        }
        rep.wg_operations = u.operation_count();
        rep.wg_bytes = backend_.stats().bytes_sent - before;
        apply_update(base, u);
        log::info("wireguard device updated",
                  {{"interface", backend_.ifname()},
                   {"operations", std::to_string(rep.wg_operations)},
                   {"peers", std::to_string(desired.device.peers.size())}});
    }
    expected_ = std::move(base);
    if (want->manage_link) {
        auto st = apply_link_locked(*want, full, rep, kept_routes);
        if (!st) {
            invalidate_locked();
            return std::move(st).err();
        }
    }
    last_ = *want;
    if (full) last_full_ = now;
    return rep;
}

status wg_reconciler::apply_link_locked(const wg_interface_config& desired, bool full,
                                        wg_reconcile_report& rep,
                                        const std::vector<ip_prefix>& kept) {
    const std::string& ifname = backend_.ifname();
    auto wanted = desired.manage_routes ? wanted_route_set(desired.device, desired.route_mtu)
                                        : wg_route_set{};
    // Between full syncs, link settings that did not change are not re-read, and routes are
    // diffed against the set we know we own: a one-peer change costs one route operation.
    bool incremental = !full && ifindex_ > 0 && owned_routes_ && last_ &&
                       last_->addresses == desired.addresses && last_->mtu == desired.mtu &&
                       last_->route_table == desired.route_table;
    std::optional<rtnl> nl_opt;
    auto nl_get = [&]() -> result<rtnl*> {
        if (!nl_opt) nl_opt.emplace(MW_TRY(rtnl::open_at(backend_.options().netns_path)));
        return &*nl_opt;
    };
    if (!incremental) {
        rtnl& nl = *MW_TRY(nl_get());
        auto link = MW_TRY(nl.get_link(ifname));
        ifindex_ = link.index;
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
        // With the MTU the kernel has, so that a route whose MTU someone changed is repaired.
        owned_routes_ = MW_TRY(read_owned_routes(nl, link.index, desired.route_table));
        foreign_routes_.clear();
    }
    // Prefixes someone else already routes are not ours to add (found on an earlier attempt).
    std::erase_if(wanted, [&](const auto& w) { return foreign_routes_.count(w.first.str()) > 0; });
    auto& owned = *owned_routes_;
    // A kept peer's route stays as it is: the MTU it was given before a restart is still the best
    // we know until meshd measures the path again.
    for (const auto& p : kept) {
        auto w = wanted.find(p);
        auto o = owned.find(p);
        if (w != wanted.end() && w->second == 0 && o != owned.end()) w->second = o->second;
    }
    auto rd = diff_routes(owned, wanted);
    auto route_for = [&](const ip_prefix& p) {
        route_info r;
        r.dst = p;
        r.oif = ifindex_;
        r.table = desired.route_table;
        r.protocol = k_wg_route_protocol;
        r.scope = p.is_v4() ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
        auto w = wanted.find(p);
        if (w != wanted.end()) r.mtu = w->second;
        return r;
    };
    for (const auto& p : rd.remove) {
        route_info r;
        r.dst = p;
        r.oif = ifindex_;
        r.table = desired.route_table;
        auto st = MW_TRY(nl_get())->del_route(r);
        if (!st && !st.err().is_errno(ESRCH) && !st.err().is_errno(ENOENT)) return st;
        owned.erase(p);
        ++rep.routes_removed;
    }
    for (const auto& p : rd.change) {
        // Replaced, not deleted and added: the prefix is never without its route, and never
        // falls back to a less specific one meanwhile.
        auto r = route_for(p);
        rtnl* nl = MW_TRY(nl_get());
        MW_TRY_STATUS(nl->add_route(r, /*replace=*/true));
        owned[p] = r.mtu;
        ++rep.routes_changed;
    }
    for (const auto& p : rd.add) {
        auto r = route_for(p);
        auto st = MW_TRY(nl_get())->add_route(r);
        if (!st && st.err().is_errno(EEXIST)) {
            // Someone else's route for the same prefix: it is theirs, we leave it.
            log::warn("route exists and is not ours, leaving it",
                      {{"interface", ifname}, {"route", p.str()}});
            foreign_routes_.insert(p.str());
            continue;
        }
        if (!st) return st;
        owned[p] = r.mtu;
        ++rep.routes_added;
    }
    return {};
}

void wg_reconciler::on_restart() {
    std::lock_guard lk(mu_);
    if (!last_ || !last_->manage_link) return;
    // The link is new: its index, addresses and routes must be read and set again.
    owned_routes_.reset();
    ifindex_ = 0;
    wg_reconcile_report rep;
    auto st = apply_link_locked(*last_, /*full=*/true, rep);
    if (!st) {
        log::error("restoring link state after device restart failed",
                   {{"interface", backend_.ifname()}, {"error", st.err().message}});
        invalidate_locked();
        return;
    }
    log::info("link state restored after device restart",
              {{"interface", backend_.ifname()},
               {"routes", std::to_string(rep.routes_added)},
               {"changes", std::to_string(rep.link_changes)}});
}

}  // namespace mw
