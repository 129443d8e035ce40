// End-to-end tests of the kernel backend. They need a kernel with WireGuard, so CTest runs this
// binary inside the QEMU guest (test/vm/run-in-vm.sh), with the module unloaded first as on a
// stock Debian host where it loads on first use (test/e2e/wireguard/module-unloaded.sh).
// The first case ("kernel backend on this host") is meaningful everywhere and is also run on the
// host itself (CTest wg_kernel_host): with the module the backend must create a working device
// (loading the module if needed) and "auto" must pick it; without, the error must name the
// userspace fallback and "auto" must pick wireguard-go. The other cases need the module; where
// it is missing they are skipped and the binary exits 77, never 0 (see finish_run()).
// Topology: both WireGuard links are created in an "underlay" namespace U and then moved into the
// node namespaces A and B; kernel WireGuard keeps its UDP socket in U, so the endpoints are
// 127.0.0.1 / 127.0.0.2 / [::1] on U's loopback.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common/wireguard/wg_kernel_backend.hpp"
#include "test/e2e/wireguard/wg_e2e_fixture.hpp"

using namespace wg_e2e;

namespace {

// What this host's kernel offers, decided once in main() before any case runs.
enum class host_wg { absent, loadable, loaded };
host_wg g_host = host_wg::absent;
std::string g_host_why;

// The module must not be loaded by the detection itself: on a stock Debian host it is installed
// but unloaded, and loading it on first use is the backend's job, which the first case checks.
// So modprobe is asked without loading (-n); only when it knows nothing (no /lib/modules, as on
// these build machines, or a kernel with WireGuard built in) does a link probe decide.
void detect_host() {
    if (access("/sys/module/wireguard", F_OK) == 0) {
        g_host = host_wg::loaded;
        g_host_why = "module loaded (/sys/module/wireguard exists)";
        return;
    }
    if (std::system("modprobe -n -q wireguard >/dev/null 2>&1") == 0) {
        g_host = host_wg::loadable;
        g_host_why = "module installed but not loaded (modprobe -n wireguard)";
        return;
    }
    std::string err;
    bool ok = false;
    std::thread t([&] {  // a scratch namespace of this thread only; it goes with the thread
        if (unshare(CLONE_NEWNET) != 0) {
            err = std::string("unshare: ") + std::strerror(errno);
            return;
        }
        auto nl = rtnl::open();
        if (!nl) {
            err = nl.err().message;
            return;
        }
        auto st = nl->create_link("mwprobe0", "wireguard");
        ok = st.ok();
        if (!ok) err = st.err().message;
    });
    t.join();
    g_host = ok ? host_wg::loaded : host_wg::absent;
    g_host_why = ok ? "a wireguard link can be created (built in or loaded by the kernel)"
                    : "no module: creating a wireguard link failed: " + err;
}

bool kernel_wg() {
    if (g_host != host_wg::absent) return true;
    skip_case("no WireGuard kernel module here (" + g_host_why +
              "); CTest runs this test in the QEMU guest (test/vm/run-in-vm.sh)");
    return false;
}

struct kernel_nodes {
    node a, b;
    std::unique_ptr<test_ns> underlay = std::make_unique<test_ns>();
    std::string suffix = random_suffix();

    explicit kernel_nodes(size_t max_message_size = 32768) {
        a.ns = std::make_unique<test_ns>();
        b.ns = std::make_unique<test_ns>();
        make(a, 1, "mwka" + suffix, 41001, max_message_size);
        make(b, 2, "mwkb" + suffix, 41002, max_message_size);
        a.cfg.device.peers = {peer_for(b, 2, "127.0.0.1:41002")};
        b.cfg.device.peers = {peer_for(a, 1, "127.0.0.1:41001")};
        a.apply();
        b.apply();
    }

    void make(node& n, int i, const std::string& ifname, uint16_t port, size_t max_msg) {
        n.ifname = ifname;
        // Created in U (its socket stays there), then moved into the node's namespace.
        auto nl = underlay->nl();
        REQUIRE(nl.create_link(ifname, "wireguard").ok());
        auto l = nl.get_link(ifname);
        REQUIRE(l.ok());
        REQUIRE(nl.set_link_netns(l->index, n.ns->fd()).ok());
        wg_backend_options o;
        o.ifname = ifname;
        o.netns_path = n.ns->path();
        o.max_message_size = max_msg;
        n.backend = std::make_unique<wg_kernel_backend>(o);
        n.rec = std::make_unique<wg_reconciler>(*n.backend);
        init_node(n, i, port);
    }

    void check_pings() {
        CHECK(ping(*a.ns, b.tunnel_v4, a.tunnel_v4));
        CHECK(ping(*a.ns, b.tunnel_v6, a.tunnel_v6));
        CHECK(ping(*b.ns, a.tunnel_v4, b.tunnel_v4));
        CHECK(ping(*b.ns, a.tunnel_v6, b.tunnel_v6));
    }
};

}  // namespace

TEST_CASE("kernel backend on this host: works with the module, names the fallback without") {
    MESSAGE("kernel WireGuard on this host: " << g_host_why);
    test_ns ns;
    wg_backend_options o;
    o.ifname = "mwk" + random_suffix();
    o.netns_path = ns.path();
    if (g_host == host_wg::absent) {
        wg_kernel_backend be(o);
        auto st = be.up();
        REQUIRE_FALSE(st.ok());
        CHECK(st.err().is(errc::unsupported));
        CHECK(st.err().message.find("userspace") != std::string::npos);
        MESSAGE("error: " << st.err().message);
        auto a = make_wg_backend("auto", o);  // not started: that would run wireguard-go
        REQUIRE(a.ok());
        CHECK((*a)->kind() == "userspace");
    } else {
        node n;
        n.ns = std::make_unique<test_ns>();
        n.ifname = o.ifname;
        wg_backend_options no = o;
        no.netns_path = n.ns->path();
        n.backend = std::make_unique<wg_kernel_backend>(no);
        n.rec = std::make_unique<wg_reconciler>(*n.backend);
        init_node(n, 1, 41009);
        n.apply();  // up() creates the link, loading the module when it is not loaded yet
        if (g_host == host_wg::loadable) CHECK(access("/sys/module/wireguard", F_OK) == 0);
        auto link = n.ns->nl().get_link(n.ifname);
        REQUIRE(link.ok());
        CHECK(link->kind == "wireguard");
        check_dump_matches(*n.ns, n.ifname, n.cfg.device);
        CHECK(n.cfg.device.same_config(n.read()));
        auto a = make_wg_backend("auto", o);
        REQUIRE(a.ok());
        CHECK((*a)->kind() == "kernel");
        REQUIRE(n.backend->down().ok());
        CHECK_FALSE(n.ns->nl().get_link(n.ifname).ok());
        if (g_host == host_wg::loadable) MESSAGE("the backend loaded the module on first use");
    }
    // "auto" (and its probe, without the module) left nothing in its namespace (only lo).
    auto links = ns.nl().list_links();
    REQUIRE(links.ok());
    CHECK(links->size() == 1);
}

TEST_CASE("kernel: ping over the tunnel (v4, v6); wg show matches; idempotent re-apply") {
    if (!kernel_wg()) return;
    kernel_nodes t;
    t.check_pings();
    auto psk = wg_key::generate_private();
    t.a.cfg.device.peers[0].preshared_key = psk;
    t.a.cfg.device.peers[0].persistent_keepalive = 15;
    t.b.cfg.device.peers[0].preshared_key = psk;
    t.a.cfg.device.fwmark = 0x51;
    t.a.apply();
    t.b.apply();
    check_dump_matches(*t.a.ns, t.a.ifname, t.a.cfg.device);
    check_dump_matches(*t.b.ns, t.b.ifname, t.b.cfg.device);
    CHECK(t.a.cfg.device.same_config(t.a.read()));
    CHECK(has_owned_route(*t.a.ns, t.a.ifname, "10.99.2.0/24"));
    CHECK(has_owned_route(*t.a.ns, t.a.ifname, "fd99:2::/64"));
    t.check_pings();
    auto got = t.a.read();
    const auto* p = got.find_peer(t.a.cfg.device.peers[0].public_key);
    REQUIRE(p);
    CHECK(p->last_handshake_sec > 0);
    CHECK(p->rx_bytes > 0);
    CHECK(p->tx_bytes > 0);

    auto before = t.a.backend->stats();
    auto r = t.a.rec->apply(t.a.cfg);
    REQUIRE(r.ok());
    CHECK_FALSE(r->changed());
    CHECK(t.a.backend->stats().set_calls == before.set_calls);
}

TEST_CASE("kernel: endpoint and allowed-ips changed live; removed peers are gone") {
    if (!kernel_wg()) return;
    kernel_nodes t;
    t.check_pings();
    for (const char* e : {"127.0.0.2:41002", "[::1]:41002"}) {
        t.a.cfg.device.peers[0].endpoint = ep(e);
        auto r = t.a.rec->apply(t.a.cfg);
        REQUIRE(r.ok());
        CHECK(r->wg_operations == 1);
        // Checked before traffic: afterwards WireGuard may legitimately roam the endpoint to the
        // source address B answers from (all of U's loopback addresses reach B).
        check_dump_matches(*t.a.ns, t.a.ifname, t.a.cfg.device);
        CHECK(ping(*t.a.ns, t.b.tunnel_v4, t.a.tunnel_v4));
        CHECK(ping(*t.a.ns, t.b.tunnel_v6, t.a.tunnel_v6));
    }
    t.b.cfg.addresses.push_back(pfx("10.98.2.1/32"));
    t.b.apply();
    t.a.cfg.device.peers[0].allowed_ips.push_back(pfx("10.98.2.0/24"));
    t.a.apply();
    CHECK(has_owned_route(*t.a.ns, t.a.ifname, "10.98.2.0/24"));
    CHECK(ping(*t.a.ns, "10.98.2.1", t.a.tunnel_v4));
    t.a.cfg.device.peers[0].allowed_ips.pop_back();
    t.a.apply();
    CHECK_FALSE(has_owned_route(*t.a.ns, t.a.ifname, "10.98.2.0/24"));
    CHECK(ping(*t.a.ns, t.b.tunnel_v6, t.a.tunnel_v6));

    wg_peer extra;
    extra.public_key = wg_key::generate_private().public_key();
    extra.endpoint = ep("127.0.0.9:5555");
    extra.allowed_ips = {pfx("10.97.0.0/24"), pfx("fd97::/64")};
    t.a.cfg.device.peers.push_back(extra);
    t.a.apply();
    CHECK(t.a.read().peers.size() == 2);
    t.a.cfg.device.peers.pop_back();
    auto r = t.a.rec->apply(t.a.cfg);
    REQUIRE(r.ok());
    CHECK(r->routes_removed == 2);
    CHECK(t.a.read().find_peer(extra.public_key) == nullptr);
    CHECK(wg_dump(*t.a.ns, t.a.ifname).peers.size() == 1);
    t.check_pings();
}

TEST_CASE("kernel: bad input is rejected before anything is applied") {
    if (!kernel_wg()) return;
    kernel_nodes t;
    auto before = t.a.read();
    auto stats = t.a.backend->stats();
    auto bad = t.a.cfg;
    wg_peer clash;
    clash.public_key = wg_key::generate_private().public_key();
    clash.allowed_ips = {pfx("10.99.2.0/24")};
    bad.device.peers.push_back(clash);
    bad.device.peers[0].endpoint = ep("127.0.0.2:41002");
    CHECK_FALSE(t.a.rec->apply(bad).ok());
    CHECK(t.a.backend->stats().messages_sent == stats.messages_sent);
    CHECK(t.a.read().same_config(before));
}

TEST_CASE("kernel: 1000 peers (split over many messages) set and read back identical") {
    if (!kernel_wg()) return;
    kernel_nodes t(/*max_message_size=*/4096);
    for (int i = 0; i < 1000; ++i) {
        wg_peer p;
        p.public_key = wg_key::generate_private().public_key();
        p.endpoint = wg_endpoint{ip_address::from_u128(AF_INET, 0xcb007100u + (i % 250)),
                                 static_cast<uint16_t>(20000 + i)};
        p.allowed_ips = {
            ip_prefix(ip_address::from_u128(AF_INET, 0x0a400000u + (u128(i) << 8)), 24),
            ip_prefix(ip_address::from_u128(AF_INET6, (u128(0xfd64) << 112) + (u128(i) << 64)),
                      64)};
        t.a.cfg.device.peers.push_back(p);
    }
    // One peer with more allowed-ips than fit in one message: continued over several.
    for (int j = 0; j < 300; ++j) {
        t.a.cfg.device.peers[0].allowed_ips.emplace_back(
            ip_address::from_u128(AF_INET, 0x0b000000u + (u128(j) << 8)), 24);
    }
    auto before = t.a.backend->stats();
    auto r = t.a.rec->apply(t.a.cfg);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.err().message));
    auto msgs = t.a.backend->stats().messages_sent - before.messages_sent;
    MESSAGE("1000 peers: " << msgs << " netlink messages, " << r->wg_bytes << " bytes");
    CHECK(msgs > 10);
    auto got = t.a.read();
    CHECK(got.peers.size() == 1001);
    CHECK(t.a.cfg.device.same_config(got));
    check_dump_matches(*t.a.ns, t.a.ifname, t.a.cfg.device);
    auto again = t.a.rec->apply(t.a.cfg);
    REQUIRE(again.ok());
    CHECK_FALSE(again->changed());
    CHECK(ping(*t.a.ns, t.b.tunnel_v4, t.a.tunnel_v4));
}

TEST_CASE("kernel: attach (meshctl) reads the device; down() deletes the link") {
    if (!kernel_wg()) return;
    kernel_nodes t;
    wg_backend_options o;
    o.ifname = t.a.ifname;
    o.netns_path = t.a.ns->path();
    auto reader = attach_wg_backend(o);
    REQUIRE(reader.ok());
    CHECK((*reader)->kind() == "kernel");
    auto d = (*reader)->get();
    REQUIRE(d.ok());
    CHECK(t.a.cfg.device.same_config(*d));
    REQUIRE(t.a.backend->down().ok());
    CHECK_FALSE(t.a.ns->nl().get_link(t.a.ifname).ok());
    CHECK(t.a.backend->down().ok());  // idempotent
}

// Without root nothing here can run: a CTest skip (77) with the reason, not a silent pass.
int main(int argc, char** argv) {
    if (geteuid() != 0) {
        std::printf("SKIP: wg_kernel_e2e needs root (network namespaces, WireGuard links)\n");
        return 77;
    }
    detect_host();
    std::printf("kernel WireGuard on this host: %s\n", g_host_why.c_str());
    std::fflush(stdout);
    doctest::Context ctx(argc, argv);
    int rc = ctx.run();
    if (ctx.shouldExit()) return rc;
    return finish_run(rc);
}
