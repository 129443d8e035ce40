// common/tunnel_mtu.hpp: the overhead every path may add, and the MTU that leaves room for it.
#include "common/tunnel_mtu.hpp"

#include <doctest/doctest.h>

#include "meshd/core/wire_codec.hpp"
#include "meshd/relay_path_mtu.hpp"

TEST_CASE("tunnel_mtu: WireGuard over IPv6 plus the relay header fit in the underlay") {
    // IPv6 40 + UDP 8 + WireGuard header 16 + tag 16.
    CHECK(mw::k_wireguard_overhead == 40 + 8 + 16 + 16);
    CHECK(mw::k_relay_header_overhead == mw::meshd::relay_data_header_size);
    CHECK(mw::k_tunnel_overhead == 92);
    CHECK(mw::tunnel_mtu_for(1500) == 1408);
    CHECK(mw::tunnel_mtu_for(1492) == 1400);  // PPPoE
    CHECK(mw::tunnel_mtu_for(9000) == 8908);
    // A full-size pod packet, relayed over IPv6, is exactly the underlay MTU.
    for (unsigned underlay : {1280u + 92u, 1400u, 1500u, 9000u}) {
        unsigned inner = mw::tunnel_mtu_for(underlay);
        CHECK(inner + 16 + 16 + mw::meshd::relay_data_header_size + 8 + 40 == underlay);
    }
    CHECK(mw::tunnel_mtu_for(mw::k_min_underlay_mtu) == 576);
}

TEST_CASE("relay_path_mtu: follows the kernel's route MTU, never above the base") {
    using mw::meshd::relay_path_mtu;
    auto lo = mw::ip_address::parse("127.0.0.1").value();
    auto lo_mtu = relay_path_mtu::route_mtu(lo);
    REQUIRE(lo_mtu.has_value());
    CHECK(*lo_mtu >= 1280u);  // loopback: 65536 by default
    relay_path_mtu r(1408);
    CHECK(r.update(0, {lo}, 0) == 1408);   // nothing refused: not even looked at
    CHECK(r.update(5, {lo}, 10) == 1408);  // refused frames, but the route carries 1500 + 92
    CHECK(r.mtu() == 1408);
}
