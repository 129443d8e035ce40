// Which endpoints a record may make us send to (issue 17, "No amplification"). Any PSK holder can
// sign a record listing any addresses; without this, one fake record listing a victim's port range
// made every node probe it (960 datagrams in 20 s from six nodes) for the record's lifetime.
//
// The rules, for every endpoint taken from a record, an offer (discovery_sink::offer_endpoint) or
// a request (a DIALBACK_REQUEST's target) -- not for configured addresses (relayNodes,
// dht.bootstrap: the operator's) and not for the source of a datagram we answer:
//   - the address must be unicast and routable to another host: not unspecified (0.0.0.0/8, ::),
//     loopback (127/8, ::1), link-local (169.254/16, fe80::/10; they need an interface scope a
//     record cannot carry), multicast (224/4, ff00::/8), limited broadcast (255.255.255.255) or
//     reserved (240/4); IPv4-mapped IPv6 forms are judged as their IPv4 address. Private and
//     public addresses are both fine (LAN paths use private ones).
//   - the port must be the cluster's control port (`listenPort`): every meshd listens there, and
//     relays were always reached on it. A node configured with another listenPort is not probed
//     directly; it cannot use relays either (it reaches them on its own port).
// A refused endpoint is counted by reason (meshwire_endpoints_refused_total{reason}) and logged
// once per reason; the rest of the record is used as usual.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "common/ip_address.hpp"
#include "common/wireguard/wg_endpoint.hpp"

namespace mw::meshd {

enum class endpoint_refusal : uint8_t {
    none,
    unspecified,
    loopback,
    link_local,
    multicast,
    broadcast,
    reserved,
    port,    // not the cluster's control port
    budget,  // the destination's send budget was spent (send_budget)
};
inline constexpr size_t endpoint_refusal_count = 9;
// Fixed metric label values: "none", "unspecified", "loopback", "link_local", "multicast",
// "broadcast", "reserved", "port", "budget".
const char* to_string(endpoint_refusal r) noexcept;

using endpoint_refusal_counts = std::array<uint64_t, endpoint_refusal_count>;

class endpoint_filter {
public:
    // The address rules alone.
    static endpoint_refusal classify(const ip_address& a) noexcept;
    // The address rules, then the port rule.
    static endpoint_refusal check(const wg_endpoint& ep, uint16_t cluster_port) noexcept;
};

}  // namespace mw::meshd
