// Interim path MTU for relayed paths (issue 15), until the per-peer probing of path_mtu is wired:
// when the relay uplink refuses frames for their size (meshd's sockets set don't-fragment, so
// the kernel answers EMSGSIZE once an ICMP "too big" from a smaller hop taught it the path MTU),
// the WireGuard interface MTU goes down to what the smallest relay path carries, so that a pod's
// full-size packet gets an ICMP "too big" from its own node (its stack then sends smaller ones)
// instead of vanishing in the tunnel. It goes back up when the kernel's path MTU does (a learned
// path MTU expires after 10 minutes). Whole interface, not per peer: coarse, but every relayed
// peer may be moved to any relay within a second.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/ip_address.hpp"

namespace mw::meshd {

class relay_path_mtu {
public:
    // `base`: the interface MTU meshd started with (never exceeded).
    explicit relay_path_mtu(unsigned base) : base_(base), mtu_(base) {}

    // `oversize`: the relay proxy's cumulative oversize drops; `relays`: every relay address we
    // may send to. Looks at the kernel's path MTUs when oversize grew, or every `recheck_ms`
    // while lowered. Returns the interface MTU to use now.
    unsigned update(uint64_t oversize, const std::vector<ip_address>& relays, uint64_t now_ms);
    unsigned mtu() const noexcept { return mtu_; }

    // The kernel's MTU towards `dst` (a learned path MTU included): IP_MTU / IPV6_MTU of a UDP
    // socket connected to it.
    static std::optional<unsigned> route_mtu(const ip_address& dst);

    static constexpr uint64_t recheck_ms = 30000;

private:
    unsigned base_, mtu_;
    uint64_t oversize_ = 0;
    uint64_t checked_ms_ = 0;
};

}  // namespace mw::meshd
