// The reconciler against an in-memory backend: what it sends on the first apply, that repeated
// applies send nothing, that one change costs one operation without reading the device back, and
// that failures and full syncs re-read the device (drift is repaired).
#include <doctest/doctest.h>

#include "common/wireguard/wg_reconciler.hpp"
#include "common/wireguard/wg_uapi.hpp"

using namespace mw;

namespace {

class fake_backend final : public wg_backend {
public:
    fake_backend() : wg_backend(wg_backend_options{}) {}
    std::string_view kind() const override { return "fake"; }
    status up() override { return {}; }
    status down() override { return {}; }
    result<wg_device> get() override {
        ++st.get_calls;
        return dev;
    }
    status set(const wg_device_update& u) override {
        if (fail_next_set) {
            fail_next_set = false;
            return error::from_errno(EIO, "fake set");
        }
        ++st.set_calls;
        st.bytes_sent += wg_uapi::encode_set(u).size();
        apply_update(dev, u);
        return {};
    }
    wg_backend_stats stats() const override { return st; }
    void set_restart_hook(std::function<void()> h) override { hook = std::move(h); }

    wg_device dev;
    wg_backend_stats st;
    bool fail_next_set = false;
    std::function<void()> hook;
};

wg_interface_config make_config(int n) {
    wg_interface_config c;
    c.manage_link = false;
    c.device.private_key = wg_key::generate_private();
    c.device.listen_port = 51820;
    for (int i = 0; i < n; ++i) {
        wg_peer p;
        p.public_key = wg_key::generate_private().public_key();
        p.endpoint = wg_endpoint{ip_address::from_u128(AF_INET, 0xc0000200u + (i & 0xff)), 51820};
        p.allowed_ips = {
            ip_prefix(ip_address::from_u128(AF_INET, 0x0a000000u + (u128(i) << 8)), 24)};
        c.device.peers.push_back(p);
    }
    return c;
}

}  // namespace

TEST_CASE("reconciler: first apply reads and sets; same state again sends nothing") {
    fake_backend be;
    wg_reconciler rec(be);
    auto cfg = make_config(1000);
    auto r = rec.apply(cfg);
    REQUIRE(r.ok());
    CHECK(r->full_sync);
    CHECK(be.st.get_calls == 1);
    CHECK(be.st.set_calls == 1);
    CHECK(cfg.device.same_config(be.dev));

    auto again = rec.apply(cfg);
    REQUIRE(again.ok());
    CHECK_FALSE(again->changed());
    CHECK_FALSE(again->full_sync);
    CHECK(be.st.get_calls == 1);
    CHECK(be.st.set_calls == 1);
}

TEST_CASE("reconciler: one peer change is one operation and O(1) bytes, without a read-back") {
    fake_backend be;
    wg_reconciler rec(be);
    auto cfg = make_config(1000);
    REQUIRE(rec.apply(cfg).ok());
    auto bytes0 = be.st.bytes_sent;
    cfg.device.peers[123].endpoint = *wg_endpoint::parse("198.51.100.1:1");
    auto r = rec.apply(cfg);
    REQUIRE(r.ok());
    CHECK(r->wg_operations == 1);
    CHECK(r->wg_bytes < 200);
    CHECK(be.st.bytes_sent - bytes0 == r->wg_bytes);
    CHECK(be.st.get_calls == 1);  // still only the first read
    CHECK(cfg.device.same_config(be.dev));
}

TEST_CASE("reconciler: drift is repaired by a full sync; a failed set forces one") {
    fake_backend be;
    wg_reconciler rec(be);
    auto cfg = make_config(10);
    REQUIRE(rec.apply(cfg).ok());
    // Someone removes a peer behind our back: invisible between full syncs ...
    be.dev.peers.erase(be.dev.peers.begin());
    auto quiet = rec.apply(cfg);
    REQUIRE(quiet.ok());
    CHECK_FALSE(quiet->changed());
    // ... and repaired by the next full one.
    auto full = rec.apply(cfg, wg_sync::full);
    REQUIRE(full.ok());
    CHECK(full->wg_operations > 0);
    CHECK(cfg.device.same_config(be.dev));

    cfg.device.peers[1].persistent_keepalive = 10;
    be.fail_next_set = true;
    CHECK_FALSE(rec.apply(cfg).ok());
    auto gets = be.st.get_calls;
    auto retry = rec.apply(cfg);
    REQUIRE(retry.ok());
    CHECK(retry->full_sync);
    CHECK(be.st.get_calls == gets + 1);
    CHECK(cfg.device.same_config(be.dev));
}

TEST_CASE("reconciler: a zero sync interval reads back every time") {
    fake_backend be;
    wg_reconciler rec(be, std::chrono::seconds(0));
    auto cfg = make_config(3);
    REQUIRE(rec.apply(cfg).ok());
    REQUIRE(rec.apply(cfg).ok());
    CHECK(be.st.get_calls == 2);
    CHECK(be.st.set_calls == 1);
}

TEST_CASE("reconciler: bad input sends nothing; the restart hook is released on destruction") {
    fake_backend be;
    {
        wg_reconciler rec(be);
        REQUIRE(be.hook);
        auto cfg = make_config(2);
        cfg.device.peers[1].allowed_ips = cfg.device.peers[0].allowed_ips;
        CHECK_FALSE(rec.apply(cfg).ok());
        CHECK(be.st.get_calls == 0);
        CHECK(be.st.set_calls == 0);
        be.hook();  // no link management configured: a no-op, and no crash
    }
    CHECK_FALSE(be.hook);
}

TEST_CASE("reconciler: a route MTU the kernel would clamp is refused before anything is sent") {
    fake_backend be;
    wg_reconciler rec(be);
    auto cfg = make_config(2);
    cfg.route_mtu[cfg.device.peers[0].allowed_ips[0]] = k_max_route_mtu + 1;
    auto r = rec.apply(cfg);
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().is(errc::invalid_argument));
    CHECK(r.err().message.find("route MTU 65521") != std::string::npos);
    CHECK(be.st.get_calls == 0);
    CHECK(be.st.set_calls == 0);
    cfg.route_mtu.begin()->second = k_max_route_mtu;
    CHECK(rec.apply(cfg).ok());
}

TEST_CASE("reconciler: keep_other_peers leaves the device's unlisted peers, then they go") {
    // A restarted meshd on a kept or adopted device: its core has found 1 of 3 peers so far.
    fake_backend be;
    auto before = make_config(3);
    be.dev = before.device;  // what the device carried before the crash
    wg_reconciler rec(be);
    auto now = before;
    now.device.peers.resize(1);
    now.device.peers[0].persistent_keepalive = 25;  // a real change to the found one
    now.keep_other_peers = true;
    auto r = rec.apply(now);
    REQUIRE(r.ok());
    CHECK(r->wg_operations == 1);  // the keepalive; no removal
    REQUIRE(be.dev.peers.size() == 3);
    // Between full syncs as well.
    r = rec.apply(now);
    REQUIRE(r.ok());
    CHECK_FALSE(r->changed());
    CHECK(be.dev.peers.size() == 3);
    // The window ends: peers nobody found again are removed.
    now.keep_other_peers = false;
    r = rec.apply(now);
    REQUIRE(r.ok());
    CHECK(r->wg_operations == 2);
    CHECK(be.dev.peers.size() == 1);
}
