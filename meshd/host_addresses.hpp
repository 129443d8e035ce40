// This host's addresses, read through rtnetlink: what the node advertises in its record, and what
// the relay forwarder may bind to. Runs on the core's thread (a netlink dump of the host's links
// and addresses takes well under a millisecond).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/ip_address.hpp"
#include "common/wireguard/wg_endpoint.hpp"

namespace mw::meshd {

// Endpoints (address, `port`) to advertise: the global addresses of every up interface except
// loopback, our WireGuard interface `wg_interface`, other WireGuard and tun devices; never
// tentative, deprecated or DAD-failed addresses, nor IPv6 temporary (privacy) ones. At most
// peer_record::max_endpoints; the core puts a relay's advertised addresses in front of them.
std::vector<wg_endpoint> advertised_endpoints(const std::string& wg_interface, uint16_t port);

// Every address on the host (any scope, any interface); empty when rtnetlink cannot be read.
std::vector<ip_address> host_addresses();

}  // namespace mw::meshd
