// The reconciler's routes against the real kernel, per-route MTU above all (issue 15): a route
// gets the MTU it is given, an MTU-only change replaces that one route in place, and a full sync
// reads the MTU back and repairs one changed behind the reconciler's back. No WireGuard needed:
// the reconciler only names the link, so a fake backend drives a veth in a private namespace.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <thread>

#include "common/netns.hpp"
#include "common/rtnl.hpp"
#include "common/unique_fd.hpp"
#include "common/wireguard/wg_reconciler.hpp"

using namespace mw;

// Named, not anonymous, cases included: common_e2e is a unity build beside rtnl_e2e.cpp's helpers.
namespace reconciler_e2e {

class fake_backend final : public wg_backend {
public:
    explicit fake_backend(wg_backend_options o) : wg_backend(std::move(o)) {}
    std::string_view kind() const override { return "fake"; }
    status up() override { return {}; }
    status down() override { return {}; }
    result<wg_device> get() override { return dev; }
    status set(const wg_device_update& u) override {
        apply_update(dev, u);
        return {};
    }
    wg_backend_stats stats() const override { return {}; }
    void set_restart_hook(std::function<void()> /*hook*/) override {}

    wg_device dev;
};

ip_prefix pfx(const char* s) {
    auto p = ip_prefix::parse(s);
    REQUIRE_MESSAGE(p.ok(), s);
    return *p;
}

// A private network namespace with a veth `mwr0` (up, its peer too), reachable by path for the
// backend options; the namespace lives as long as this holds its fd.
struct route_ns {
    unique_fd fd;
    std::string path;
    std::optional<netns> ns;
    std::optional<rtnl> nl;
    int ifindex = 0;

    route_ns() {
        int raw = -1;
        std::thread t([&] {
            if (unshare(CLONE_NEWNET) == 0) raw = ::open("/proc/thread-self/ns/net", O_RDONLY);
        });
        t.join();
        REQUIRE_MESSAGE(raw >= 0, "creating a network namespace");
        fd.reset(raw);
        path = "/proc/" + std::to_string(getpid()) + "/fd/" + std::to_string(raw);
        auto n = netns::open(path);
        REQUIRE(n.ok());
        ns.emplace(std::move(*n));
        auto l = rtnl::open_in(*ns);
        REQUIRE(l.ok());
        nl.emplace(std::move(*l));
        REQUIRE(nl->create_veth({"mwr0", "mwr1", -1, 0, {}}).ok());
        auto peer = nl->get_link("mwr1");
        REQUIRE(peer.ok());
        REQUIRE(nl->set_link_up(peer->index).ok());
        ifindex = nl->get_link("mwr0")->index;
    }

    // Our route for `dst` on mwr0, if there is one.
    std::optional<route_info> route(const ip_prefix& dst) {
        auto routes = nl->list_routes(dst.family());
        REQUIRE(routes.ok());
        for (const auto& r : *routes) {
            if (r.dst == dst && r.oif == ifindex && r.protocol == k_wg_route_protocol) return r;
        }
        return std::nullopt;
    }

    // Output of an `ip` command run inside the namespace.
    std::string ip(const std::string& args) {
        std::string text;
        int rc = -1;
        auto st = ns->run([&]() -> status {
            FILE* f = popen(("ip " + args + " 2>&1").c_str(), "r");
            if (!f) return error::from_errno(errno, "popen");
            char buf[4096];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
            int ws = pclose(f);
            rc = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
            return {};
        });
        REQUIRE(st.ok());
        REQUIRE_MESSAGE(rc == 0, "ip " << args << ": " << text);
        return text;
    }
};

// Two peers: 10.60.1.0/24 + fd60:1::/64 and 10.60.2.0/24 + fd60:2::/64.
wg_interface_config two_peers() {
    wg_interface_config c;
    c.device.private_key = wg_key::generate_private();
    for (int i = 1; i <= 2; ++i) {
        wg_peer p;
        p.public_key = wg_key::generate_private().public_key();
        std::string n = std::to_string(i);
        p.allowed_ips = {pfx(("10.60." + n + ".0/24").c_str()),
                         pfx(("fd60:" + n + "::/64").c_str())};
        c.device.peers.push_back(p);
    }
    return c;
}

bool root() {
    return geteuid() == 0;
}

// The namespace's veth as WireGuard interface "mwr0", driven through the fake backend.
struct route_dev {
    route_ns t;
    fake_backend be{options(t)};

    static wg_backend_options options(const route_ns& ns) {
        wg_backend_options o;
        o.ifname = "mwr0";
        o.netns_path = ns.path;
        return o;
    }
};

TEST_CASE("reconciler routes: each gets its MTU; an MTU change replaces only that route") {
    if (!root()) return;
    route_dev d;
    auto& t = d.t;
    wg_reconciler rec(d.be);
    auto cfg = two_peers();
    cfg.route_mtu = {{pfx("10.60.1.0/24"), 1380}, {pfx("fd60:1::/64"), 1360}};
    auto r = rec.apply(cfg);
    REQUIRE(r.ok());
    CHECK(r->routes_added == 4);
    CHECK(r->routes_changed == 0);
    CHECK(t.route(pfx("10.60.1.0/24"))->mtu == 1380);
    CHECK(t.route(pfx("fd60:1::/64"))->mtu == 1360);  // IPv6 dumps carry RTA_METRICS too
    CHECK(t.route(pfx("10.60.2.0/24"))->mtu == 0);
    CHECK(t.route(pfx("fd60:2::/64"))->mtu == 0);
    // What iproute2 sees: a plain metric, not `mtu lock`.
    CHECK(t.ip("-d route show 10.60.1.0/24").find(" mtu 1380") != std::string::npos);
    CHECK(t.ip("-d -6 route show fd60:1::/64").find(" mtu 1360") != std::string::npos);
    CHECK(t.ip("-d route show 10.60.1.0/24").find("lock") == std::string::npos);
    CHECK(t.ip("-d route show 10.60.2.0/24").find("mtu") == std::string::npos);

    // The same state again: nothing.
    r = rec.apply(cfg);
    REQUIRE(r.ok());
    CHECK_FALSE(r->changed());

    // One prefix's MTU changes (between full syncs): one replace, nothing added or removed.
    cfg.route_mtu[pfx("10.60.1.0/24")] = 1280;
    r = rec.apply(cfg);
    REQUIRE(r.ok());
    CHECK_FALSE(r->full_sync);
    CHECK(r->routes_changed == 1);
    CHECK(r->routes_added == 0);
    CHECK(r->routes_removed == 0);
    CHECK(r->changed());
    CHECK(t.route(pfx("10.60.1.0/24"))->mtu == 1280);
    CHECK(t.ip("-d route show 10.60.1.0/24").find(" mtu 1280") != std::string::npos);
    CHECK(t.route(pfx("fd60:1::/64"))->mtu == 1360);

    // An MTU given to a prefix without one, v6 this time; keys with host bits count as the prefix.
    cfg.route_mtu[pfx("fd60:2::5/64")] = 1400;
    r = rec.apply(cfg);
    REQUIRE(r.ok());
    CHECK(r->routes_changed == 1);
    CHECK(t.route(pfx("fd60:2::/64"))->mtu == 1400);
    CHECK(t.ip("-d -6 route show fd60:2::/64").find(" mtu 1400") != std::string::npos);

    // Removing the entry (or setting 0) removes the metric, again in place.
    cfg.route_mtu.erase(pfx("10.60.1.0/24"));
    cfg.route_mtu[pfx("fd60:1::/64")] = 0;
    r = rec.apply(cfg);
    REQUIRE(r.ok());
    CHECK(r->routes_changed == 2);
    CHECK(r->routes_added == 0);
    CHECK(r->routes_removed == 0);
    CHECK(t.route(pfx("10.60.1.0/24"))->mtu == 0);
    CHECK(t.route(pfx("fd60:1::/64"))->mtu == 0);
    CHECK(t.ip("-d route show 10.60.1.0/24").find("mtu") == std::string::npos);
    CHECK(t.ip("-d -6 route show fd60:1::/64").find("mtu") == std::string::npos);

    // A full sync reads the same back: nothing to do.
    r = rec.apply(cfg, wg_sync::full);
    REQUIRE(r.ok());
    CHECK(r->full_sync);
    CHECK_FALSE(r->changed());
}

TEST_CASE("reconciler routes: a full sync repairs an MTU changed behind its back (v4, v6)") {
    if (!root()) return;
    route_dev d;
    auto& t = d.t;
    wg_reconciler rec(d.be);
    auto cfg = two_peers();
    cfg.route_mtu = {{pfx("10.60.1.0/24"), 1380}, {pfx("fd60:1::/64"), 1380}};
    REQUIRE(rec.apply(cfg).ok());

    // An operator changes two MTUs and adds one where there was none, with iproute2 and rtnl.
    t.ip("route change 10.60.1.0/24 dev mwr0 proto 109 scope link mtu 1200");
    t.ip("-6 route change fd60:1::/64 dev mwr0 proto 109 mtu 1300");
    route_info v6 = *t.route(pfx("fd60:2::/64"));
    v6.mtu = 1290;
    REQUIRE(t.nl->add_route(v6, /*replace=*/true).ok());
    CHECK(t.route(pfx("10.60.1.0/24"))->mtu == 1200);
    CHECK(t.route(pfx("fd60:2::/64"))->mtu == 1290);

    // Invisible between full syncs ...
    auto quiet = rec.apply(cfg);
    REQUIRE(quiet.ok());
    CHECK_FALSE(quiet->changed());
    // ... and repaired, in place, by the next full one.
    auto full = rec.apply(cfg, wg_sync::full);
    REQUIRE(full.ok());
    CHECK(full->routes_changed == 3);
    CHECK(full->routes_added == 0);
    CHECK(full->routes_removed == 0);
    CHECK(t.route(pfx("10.60.1.0/24"))->mtu == 1380);
    CHECK(t.route(pfx("fd60:1::/64"))->mtu == 1380);
    CHECK(t.route(pfx("fd60:2::/64"))->mtu == 0);

    // A deleted route whose MTU also changed comes back with the new one (the replace creates it).
    t.ip("route del 10.60.1.0/24 dev mwr0");
    cfg.route_mtu[pfx("10.60.1.0/24")] = 1300;
    auto back = rec.apply(cfg);
    REQUIRE(back.ok());
    CHECK(back->routes_changed == 1);
    CHECK(t.route(pfx("10.60.1.0/24"))->mtu == 1300);
}

TEST_CASE("reconciler routes: one new peer is one route operation each; removal drops its MTU") {
    if (!root()) return;
    route_dev d;
    auto& t = d.t;
    wg_reconciler rec(d.be);
    auto cfg = two_peers();
    cfg.route_mtu = {{pfx("10.60.1.0/24"), 1380}, {pfx("10.60.2.0/24"), 1380}};
    REQUIRE(rec.apply(cfg).ok());

    wg_peer p;
    p.public_key = wg_key::generate_private().public_key();
    p.allowed_ips = {pfx("10.60.3.0/24")};
    cfg.device.peers.push_back(p);
    cfg.route_mtu[pfx("10.60.3.0/24")] = 1340;
    auto r = rec.apply(cfg);
    REQUIRE(r.ok());
    CHECK(r->routes_added == 1);
    CHECK(r->routes_changed == 0);
    CHECK(t.route(pfx("10.60.3.0/24"))->mtu == 1340);

    cfg.device.peers.pop_back();
    cfg.route_mtu.erase(pfx("10.60.3.0/24"));
    r = rec.apply(cfg);
    REQUIRE(r.ok());
    CHECK(r->routes_removed == 1);
    CHECK(r->routes_changed == 0);
    CHECK_FALSE(t.route(pfx("10.60.3.0/24")));
    // An MTU for a prefix no peer has is ignored.
    cfg.route_mtu[pfx("10.61.0.0/24")] = 1300;
    r = rec.apply(cfg, wg_sync::full);
    REQUIRE(r.ok());
    CHECK_FALSE(r->changed());
    CHECK_FALSE(t.route(pfx("10.61.0.0/24")));
}

TEST_CASE("reconciler routes: peers kept after a restart keep their routes' MTU") {
    if (!root()) return;
    route_dev d;
    auto& t = d.t;
    auto& be = d.be;
    auto before = two_peers();
    before.route_mtu = {{pfx("10.60.1.0/24"), 1380}, {pfx("10.60.2.0/24"), 1360}};
    {
        wg_reconciler first(be);  // the meshd before the restart
        REQUIRE(first.apply(before).ok());
    }
    // The restarted meshd has found peer 1 again, with its MTU not measured yet, and not peer 2.
    wg_reconciler rec(be);
    auto now = before;
    now.device.peers.resize(1);
    now.route_mtu.clear();
    now.keep_other_peers = true;
    auto r = rec.apply(now);
    REQUIRE(r.ok());
    CHECK(r->routes_changed == 1);                     // peer 1's: no MTU wanted now
    CHECK(t.route(pfx("10.60.1.0/24"))->mtu == 0);     // it is wanted as it is
    CHECK(t.route(pfx("10.60.2.0/24"))->mtu == 1360);  // kept peer, kept route: as it was
    // The window ends: the peer nobody found again goes, with its route.
    now.keep_other_peers = false;
    r = rec.apply(now);
    REQUIRE(r.ok());
    CHECK(r->routes_removed == 2);
    CHECK_FALSE(t.route(pfx("10.60.2.0/24")));
}

}  // namespace reconciler_e2e
