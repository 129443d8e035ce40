// The reconcile diff: minimal updates, idempotence (second pass sends nothing), one-peer changes
// cost O(1), route ownership diff, and validation of bad input.
#include <doctest/doctest.h>

#include "common/wireguard/wg_reconciler.hpp"

using namespace mw;

namespace {

ip_prefix pfx(const char* s) {
    return *ip_prefix::parse(s);
}

wg_peer make_peer(int i) {
    wg_peer p;
    std::array<uint8_t, 32> b{};
    b[0] = static_cast<uint8_t>(i & 0xff);
    b[1] = static_cast<uint8_t>(i >> 8);
    b[31] = 1;
    p.public_key = wg_key(b);
    p.endpoint = wg_endpoint{ip_address::from_u128(AF_INET, 0xc0000200u + (i & 0xff)),
                             static_cast<uint16_t>(10000 + i)};
    p.allowed_ips = {ip_prefix(ip_address::from_u128(AF_INET, 0x0a000000u + (u128(i) << 8)), 24)};
    return p;
}

wg_device make_device(int n) {
    wg_device d;
    d.private_key = wg_key::generate_private();
    d.listen_port = 51820;
    for (int i = 0; i < n; ++i) d.peers.push_back(make_peer(i));
    return d;
}

// What the device holds after applying `u` on top of `observed`.
wg_device after(wg_device observed, const wg_device_update& u) {
    apply_update(observed, u);
    return observed;
}

}  // namespace

TEST_CASE("reconcile diff: from scratch, then idempotent") {
    wg_device want = make_device(1000);
    wg_device empty;
    auto u = wg_reconciler::diff(empty, want);
    CHECK(u.private_key == want.private_key);
    CHECK(u.listen_port == 51820);
    CHECK(u.peers.size() == 1000);
    wg_device dev = after(empty, u);
    CHECK(want.same_config(dev));
    // Second pass: nothing to do.
    auto again = wg_reconciler::diff(dev, want);
    CHECK(again.empty());
    CHECK(again.operation_count() == 0);
}

TEST_CASE("reconcile diff: one peer change is O(1)") {
    wg_device want = make_device(1000);
    wg_device dev = after(wg_device{}, wg_device_update::full(want));

    SUBCASE("endpoint") {
        want.peers[500].endpoint = *wg_endpoint::parse("[2001:db8::5]:7777");
        auto u = wg_reconciler::diff(dev, want);
        REQUIRE(u.peers.size() == 1);
        CHECK(u.peers[0].update_only);
        CHECK(u.peers[0].endpoint == want.peers[500].endpoint);
        CHECK_FALSE(u.peers[0].replace_allowed_ips);
        CHECK(u.operation_count() == 1);
        CHECK(want.same_config(after(dev, u)));
    }
    SUBCASE("allowed-ips replaced") {
        want.peers[7].allowed_ips = {pfx("10.200.0.0/24"), pfx("fd00:7::/64")};
        auto u = wg_reconciler::diff(dev, want);
        REQUIRE(u.peers.size() == 1);
        CHECK(u.peers[0].replace_allowed_ips);
        CHECK(u.peers[0].allowed_ips.size() == 2);
        CHECK(want.same_config(after(dev, u)));
    }
    SUBCASE("peer removed") {
        auto gone = want.peers[3].public_key;
        want.peers.erase(want.peers.begin() + 3);
        auto u = wg_reconciler::diff(dev, want);
        REQUIRE(u.peers.size() == 1);
        CHECK(u.peers[0].remove);
        CHECK(u.peers[0].public_key == gone);
        CHECK_FALSE(u.replace_peers);
        CHECK(want.same_config(after(dev, u)));
    }
    SUBCASE("peer added") {
        want.peers.push_back(make_peer(4000));
        auto u = wg_reconciler::diff(dev, want);
        REQUIRE(u.peers.size() == 1);
        CHECK_FALSE(u.peers[0].update_only);
        CHECK(want.same_config(after(dev, u)));
    }
    SUBCASE("psk and keepalive set, then cleared") {
        want.peers[9].preshared_key = wg_key::generate_private();
        want.peers[9].persistent_keepalive = 25;
        auto u = wg_reconciler::diff(dev, want);
        REQUIRE(u.peers.size() == 1);
        CHECK(u.operation_count() == 2);
        dev = after(dev, u);
        CHECK(want.same_config(dev));
        want.peers[9].preshared_key.reset();
        want.peers[9].persistent_keepalive = 0;
        u = wg_reconciler::diff(dev, want);
        REQUIRE(u.peers.size() == 1);
        CHECK(u.peers[0].preshared_key == wg_key{});  // zero key clears
        CHECK(u.peers[0].persistent_keepalive == 0);
        CHECK(want.same_config(after(dev, u)));
    }
}

TEST_CASE("reconcile diff: unset desired fields and roaming endpoints are left alone") {
    wg_device dev = after(wg_device{}, wg_device_update::full(make_device(3)));
    wg_device want;  // no key, port, fwmark
    for (const auto& p : dev.peers) {
        wg_peer q = p;
        q.endpoint.reset();  // endpoint learned by roaming stays
        q.allowed_ips = {q.allowed_ips[0]};
        want.peers.push_back(q);
    }
    // Allowed-ips given in a different order / with host bits are the same set.
    want.peers[0].allowed_ips = {ip_prefix(ip_address::from_u128(AF_INET, 0x0a000001u), 24)};
    CHECK(wg_reconciler::diff(dev, want).empty());
}

TEST_CASE("reconcile diff: route ownership") {
    auto d = wg_reconciler::diff_routes(
        {{pfx("10.0.0.0/24"), 0}, {pfx("10.0.1.0/24"), 0}, {pfx("fd00::/64"), 0}},
        {{pfx("10.0.1.0/24"), 0},
         {pfx("10.0.2.0/24"), 0},
         {pfx("fd00::/64"), 0},
         {pfx("fd01::/64"), 0}});
    REQUIRE(d.add.size() == 2);
    CHECK(d.add[0].str() == "10.0.2.0/24");
    CHECK(d.add[1].str() == "fd01::/64");
    REQUIRE(d.remove.size() == 1);
    CHECK(d.remove[0].str() == "10.0.0.0/24");
    CHECK(d.change.empty());
    auto same = wg_reconciler::diff_routes({{pfx("10.0.0.0/24"), 0}}, {{pfx("10.0.0.0/24"), 0}});
    CHECK(same.add.empty());
    CHECK(same.remove.empty());
    CHECK(same.change.empty());

    wg_device want = make_device(2);
    want.peers[1].allowed_ips.push_back(pfx("fd00:1::/64"));
    auto routes = wg_reconciler::wanted_routes(want);
    CHECK(routes.size() == 3);
}

TEST_CASE("reconcile diff: route MTU") {
    wg_device want = make_device(3);  // 10.0.0.0/24, 10.0.1.0/24, 10.0.2.0/24
    want.peers[2].allowed_ips.push_back(pfx("fd00:2::/64"));
    // Keys with host bits name their network prefix; a prefix no peer has is ignored.
    auto wanted = wg_reconciler::wanted_route_set(want, {{pfx("10.0.1.9/24"), 1380},
                                                         {pfx("fd00:2::/64"), 1300},
                                                         {pfx("10.9.0.0/16"), 1200},
                                                         {pfx("10.0.2.0/24"), 0}});
    REQUIRE(wanted.size() == 4);
    CHECK(wanted.at(pfx("10.0.0.0/24")) == 0);
    CHECK(wanted.at(pfx("10.0.1.0/24")) == 1380);
    CHECK(wanted.at(pfx("10.0.2.0/24")) == 0);
    CHECK(wanted.at(pfx("fd00:2::/64")) == 1300);
    CHECK_FALSE(wanted.count(pfx("10.9.0.0/16")));

    // Only the MTU differs: a change (replace in place), never a remove + add.
    wg_route_set owned = {{pfx("10.0.0.0/24"), 0},
                          {pfx("10.0.1.0/24"), 1420},
                          {pfx("10.0.2.0/24"), 1300},
                          {pfx("fd00:2::/64"), 1300}};
    auto d = wg_reconciler::diff_routes(owned, wanted);
    CHECK(d.add.empty());
    CHECK(d.remove.empty());
    REQUIRE(d.change.size() == 2);
    CHECK(d.change[0].str() == "10.0.1.0/24");  // 1420 -> 1380
    CHECK(d.change[1].str() == "10.0.2.0/24");  // 1300 -> none
    // A new prefix with an MTU is an add (it goes in with its MTU), not a change.
    owned.erase(pfx("fd00:2::/64"));
    d = wg_reconciler::diff_routes(owned, wanted);
    REQUIRE(d.add.size() == 1);
    CHECK(d.add[0].str() == "fd00:2::/64");
    CHECK(d.change.size() == 2);
    // Applied, nothing is left to do.
    CHECK(wg_reconciler::diff_routes(wanted, wanted).change.empty());
}

TEST_CASE("validate: bad input is rejected before anything is applied") {
    wg_device ok = make_device(2);
    CHECK(validate(ok).ok());

    auto dup = ok;
    dup.peers.push_back(dup.peers[0]);
    CHECK(validate(dup).err().is(errc::invalid_argument));

    auto zero = ok;
    zero.peers[0].public_key = wg_key{};
    CHECK_FALSE(validate(zero).ok());

    auto zero_priv = ok;
    zero_priv.private_key = wg_key{};
    CHECK_FALSE(validate(zero_priv).ok());

    auto clash = ok;  // one prefix, two peers
    clash.peers[1].allowed_ips.push_back(clash.peers[0].allowed_ips[0]);
    auto st = validate(clash);
    CHECK_FALSE(st.ok());
    CHECK(st.err().message.find("also claimed") != std::string::npos);

    auto bad_prefix = ok;
    bad_prefix.peers[0].allowed_ips.push_back(ip_prefix(*ip_address::parse("10.0.0.0"), 40));
    CHECK_FALSE(validate(bad_prefix).ok());

    auto bad_ep = ok;
    bad_ep.peers[0].endpoint = wg_endpoint{*ip_address::parse("10.0.0.1"), 0};
    CHECK_FALSE(validate(bad_ep).ok());

    CHECK_FALSE(validate_ifname("").ok());
    CHECK_FALSE(validate_ifname("a-very-long-name-x").ok());
    CHECK_FALSE(validate_ifname("a/b").ok());
    CHECK(validate_ifname("meshwire0").ok());
}

TEST_CASE("wg_endpoint: parsing") {
    CHECK(wg_endpoint::parse("1.2.3.4:51820")->str() == "1.2.3.4:51820");
    CHECK(wg_endpoint::parse("[fd00::1]:1")->str() == "[fd00::1]:1");
    const char* bad[] = {"1.2.3.4",
                         "1.2.3.4:0",
                         "1.2.3.4:65536",
                         "1.2.3.4:x",
                         "fd00::1:80",
                         "[fd00::1]",
                         "[fd00::1]80",
                         "[1.2.3.4]:80",
                         "example.com:80",
                         ":80",
                         "1.2.3.4:",
                         "300.1.1.1:80",
                         ""};
    for (const char* b : bad) {
        auto r = wg_endpoint::parse(b);
        CHECK_MESSAGE(!r.ok(), b);
        if (!r.ok()) CHECK(r.err().is(errc::invalid_argument));
    }
    sockaddr_storage ss;
    auto ep = *wg_endpoint::parse("[2001:db8::1]:443");
    auto len = ep.to_sockaddr(ss);
    CHECK(wg_endpoint::from_sockaddr(&ss, len) == ep);
}

TEST_CASE("apply_update: an allowed-ip moves to the peer that claims it last") {
    wg_device dev = after(wg_device{}, wg_device_update::full(make_device(2)));
    wg_device_update u;
    wg_peer_update pu;
    pu.public_key = dev.peers[1].public_key;
    pu.allowed_ips = {dev.peers[0].allowed_ips[0]};
    u.peers = {pu};
    auto after_u = after(dev, u);
    CHECK(after_u.find_peer(dev.peers[0].public_key)->allowed_ips.empty());
    CHECK(after_u.find_peer(dev.peers[1].public_key)->allowed_ips.size() == 2);
}
