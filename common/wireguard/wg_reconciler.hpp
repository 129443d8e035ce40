// Drives one WireGuard interface towards a desired state with the fewest changes: it computes the
// difference between what the device holds and what is wanted (diff() is pure and unit-tested),
// sends only that, and keeps the interface's link state (up, MTU, addresses) and the routes for
// the peers' allowed-ips in line. Applying the same state twice sends nothing. Routes it installs
// carry their own rtnetlink protocol number, so routes others installed are never touched.
//
// A route may carry its own MTU (wg_interface_config::route_mtu); when only that changes, the
// route is replaced in place (NLM_F_REPLACE), so its prefix is never without a route.
//
// Cost: a full sync reads the device, its addresses and the route table (O(peers)); between full
// syncs the reconciler diffs against what it knows it applied, so changing one peer costs O(1)
// bytes and time. A full sync happens on the first apply, after any failure or device restart,
// when the caller asks for one, and at least every `full_sync_interval` — that is what catches
// changes made behind meshd's back (an operator's `wg set`, a deleted route).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/ip_address.hpp"
#include "common/result.hpp"
#include "common/rtnl.hpp"
#include "common/wireguard/wg_backend.hpp"

namespace mw {

// rtm_protocol of the routes we own ("m" for meshwire). Not a value the kernel or the common
// routing daemons use (see /etc/iproute2/rt_protos).
inline constexpr uint8_t k_wg_route_protocol = 109;
// The largest route MTU the kernel keeps as given (it clamps RTAX_MTU to 65535 - 15).
inline constexpr unsigned k_max_route_mtu = 65520;

struct wg_interface_config {
    wg_device device;
    std::vector<ip_prefix> addresses;  // the node's addresses on the interface
    unsigned mtu = 0;                  // 0: leave the device default
    bool manage_routes = true;         // a route via the interface for every allowed-ip
    uint32_t route_table = 254;        // RT_TABLE_MAIN
    bool manage_link = true;           // false: WireGuard state only (no up/MTU/addresses/routes)
    // Peers on the device that `device` does not list stay, with their routes. A restarted meshd
    // sets it for its first seconds: the device it kept or adopted carries peers its fresh core
    // has not found again yet, and removing them broke pairs that never stopped working.
    bool keep_other_peers = false;
    // MTU of the route for a prefix, keyed by the network prefix (as wanted_routes() gives it);
    // absent or 0: no MTU metric, the interface's MTU applies. meshd sets a peer's measured path
    // MTU on the routes of its pod CIDRs (issue 15), so that a pod packet too big for that path is
    // refused with an ICMP "too big" by its own node instead of being lost on the way. At most
    // k_max_route_mtu.
    std::map<ip_prefix, unsigned> route_mtu;
};

// Routes by normalized prefix, with their MTU (0: no MTU metric).
using wg_route_set = std::map<ip_prefix, unsigned>;

enum class wg_sync { automatic, full };

struct wg_reconcile_report {
    size_t wg_operations = 0;  // wg_device_update::operation_count() of what was sent
    uint64_t wg_bytes = 0;     // bytes written to the backend socket
    size_t link_changes = 0;   // up / mtu / addresses
    size_t routes_added = 0;
    size_t routes_removed = 0;
    size_t routes_changed = 0;  // replaced in place: only the MTU differed
    bool full_sync = false;     // the device (and routes) were read back this time
    bool changed() const {
        return wg_operations || link_changes || routes_added || routes_removed || routes_changed;
    }
};

struct wg_route_diff {
    std::vector<ip_prefix> add;
    std::vector<ip_prefix> remove;
    std::vector<ip_prefix> change;  // owned and wanted with another MTU: replaced in place
};

class wg_reconciler {
public:
    // `backend` must outlive the reconciler. Installs the backend's restart hook, so that a
    // re-created device gets its link state and routes back without waiting for the next apply().
    explicit wg_reconciler(wg_backend& backend,
                           std::chrono::seconds full_sync_interval = std::chrono::seconds(60));
    ~wg_reconciler();
    wg_reconciler(const wg_reconciler&) = delete;
    wg_reconciler& operator=(const wg_reconciler&) = delete;

    // Validates everything first (nothing is applied when any part is bad), then brings the device
    // up if needed and applies the difference. wg_sync::full forces reading everything back.
    result<wg_reconcile_report> apply(const wg_interface_config& desired,
                                      wg_sync sync = wg_sync::automatic);

    // Minimal update turning `observed` into `desired`. Fields unset in desired (private key,
    // listen port, fwmark, a peer's endpoint) are left alone; peers absent from desired are
    // removed.
    static wg_device_update diff(const wg_device& observed, const wg_device& desired);
    // Routes to add, remove and replace, given the routes we own now and the ones wanted (both
    // keyed by normalized prefix, as wanted_route_set() and a route dump give them). O(N).
    static wg_route_diff diff_routes(const wg_route_set& owned, const wg_route_set& wanted);
    // The routes on interface `ifindex` in `table` that a reconciler installed (our protocol
    // number), with the MTU each has in the kernel. meshd reads them at start: the route MTUs a
    // previous meshd measured (issue 15) are kept and confirmed, not dropped by the first apply.
    static result<wg_route_set> read_owned_routes(rtnl& nl, int ifindex, uint32_t table);
    // Every allowed-ip of every peer, normalized (what needs a route).
    static std::vector<ip_prefix> wanted_routes(const wg_device& desired);
    // wanted_routes() with each route's MTU from `route_mtu` (its keys are normalized here too;
    // entries for prefixes no peer has are ignored).
    static wg_route_set wanted_route_set(const wg_device& desired,
                                         const std::map<ip_prefix, unsigned>& route_mtu);

private:
    struct hook_guard;  // lets the backend's restart hook outlive us safely

    // `kept`: allowed-ips of the peers keep_other_peers kept; their routes keep the MTU they
    // have unless desired.route_mtu names one.
    status apply_link_locked(const wg_interface_config& desired, bool full,
                             wg_reconcile_report& rep, const std::vector<ip_prefix>& kept = {});
    void invalidate_locked();
    void on_restart();

    wg_backend& backend_;
    std::chrono::seconds full_sync_interval_;
    std::shared_ptr<hook_guard> guard_;
    std::mutex mu_;
    std::optional<wg_interface_config> last_;  // for on_restart() and the link cache
    std::set<std::pair<ip_address, int>> added_addresses_;
    // What we know the device holds (valid between full syncs).
    std::optional<wg_device> expected_;
    std::optional<wg_route_set> owned_routes_;  // with the MTU each has in the kernel
    std::set<std::string> foreign_routes_;      // prefixes routed by someone else on this interface
    int ifindex_ = 0;
    std::chrono::steady_clock::time_point last_full_{};
};

}  // namespace mw
