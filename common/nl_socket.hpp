// What every netlink user here needs from a libmnl socket: opening one with extended and capped
// acks, and reading the kernel's extended-ack text out of an NLMSG_ERROR. Shared by rtnetlink
// (common/rtnl) and WireGuard generic netlink (common/wireguard).
#pragma once

#include <libmnl/libmnl.h>

#include <string>

#include "common/result.hpp"

namespace mw::nl {

// A bound socket on `bus` (NETLINK_ROUTE, NETLINK_GENERIC) in the calling thread's namespace.
result<mnl_socket*> open_socket(int bus, const char* what);

// The kernel's NLMSGERR_ATTR_MSG, or "" when the error carries none.
std::string extack_text(const nlmsghdr* nlh);

}  // namespace mw::nl
