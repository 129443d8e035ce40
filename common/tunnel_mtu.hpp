// What meshwire adds around a pod packet, and the MTU that leaves room for it on every path.
// One source for the CNI plugin's pod MTU, meshd's WireGuard interface MTU and node.json
// (docs/architecture.md "MTU").
#pragma once

#include <optional>

#include "common/rtnl.hpp"

namespace mw {

// WireGuard data packet over IPv6: IPv6 header 40 + UDP 8 + WireGuard type/receiver/counter 16 +
// Poly1305 tag 16. Over IPv4 it is 60; the IPv6 figure covers both underlays.
inline constexpr unsigned k_wireguard_overhead = 80;
// A relayed WireGuard packet carries the relay data header too (meshd/core/wire_codec.hpp
// relay_data_header_size; a static_assert there keeps the two equal).
inline constexpr unsigned k_relay_header_overhead = 12;
// One MTU for every path, direct or relayed: a peer's path may change at any moment (failover to a
// relay takes < 400 ms), and the pod's MTU cannot follow that fast. 12 bytes is < 1 % of a packet.
inline constexpr unsigned k_tunnel_overhead = k_wireguard_overhead + k_relay_header_overhead;
// Underlay MTU assumed when the host has no default route.
inline constexpr unsigned k_default_underlay_mtu = 1500;
// Smallest underlay MTU we derive from (576 inside the tunnel, the plugin's lower bound); a default
// route device below it is ignored.
inline constexpr unsigned k_min_underlay_mtu = 576 + k_tunnel_overhead;

// The pod (and WireGuard interface) MTU for an underlay MTU.
constexpr unsigned tunnel_mtu_for(unsigned underlay_mtu) {
    return underlay_mtu - k_tunnel_overhead;
}

// MTU of the device of the main table's first default route (IPv4 first, then IPv6), if any
// whose MTU is at least k_min_underlay_mtu.
std::optional<unsigned> default_route_mtu(rtnl& nl);

// tunnel_mtu_for(default_route_mtu), or for k_default_underlay_mtu when there is none.
unsigned default_tunnel_mtu(rtnl& nl);

}  // namespace mw
