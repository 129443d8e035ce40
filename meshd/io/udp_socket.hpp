// Non-blocking UDP sockets for the relay hot path (relay_forwarder, relay_proxy). Free functions:
// the sockets themselves are plain unique_fds owned by those classes.
#pragma once

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "common/wireguard/wg_endpoint.hpp"

namespace mw::meshd {

// A non-blocking, close-on-exec UDP socket bound to `bind_to` (port 0 = ephemeral). An IPv6
// wildcard ([::]) is dual-stack, so one socket serves both families; any other v6 address is
// v6-only. Socket buffers are raised (SO_RCVBUFFORCE when privileged, else up to rmem_max) so a
// burst arriving while the loop is busy with the previous batch is queued, not dropped.
// Don't-fragment is set for both families (IP_PMTUDISC_DO, IPV6_PMTUDISC_DO + IPV6_DONTFRAG): a
// datagram above the route's MTU fails with EMSGSIZE (send_batch counts it) instead of leaving
// as IP fragments.
result<unique_fd> open_udp_socket(const wg_endpoint& bind_to, int buffer_bytes = 4 << 20);

// The address a socket is bound to (after an ephemeral bind: the port the kernel chose).
result<wg_endpoint> local_endpoint(int fd);

// AF_INET or AF_INET6; whether an AF_INET6 socket also carries IPv4 (v4-mapped).
int socket_family(int fd) noexcept;
bool socket_dual_stack(int fd) noexcept;

}  // namespace mw::meshd
