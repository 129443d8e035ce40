// A WireGuard peer endpoint: an IPv4 or IPv6 address and a UDP port. Written "1.2.3.4:51820" or
// "[fd00::1]:51820" — the form both `wg` and the UAPI protocol use. Host names are rejected on
// purpose: resolving them is the caller's job, and a DNS lookup must never hide inside a reconcile.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/ip_address.hpp"
#include "common/result.hpp"

namespace mw {

struct wg_endpoint {
    ip_address address;
    uint16_t port = 0;

    static result<wg_endpoint> parse(std::string_view text);
    std::string str() const;

    // sockaddr_in / sockaddr_in6 as the kernel's WGPEER_A_ENDPOINT carries it.
    socklen_t to_sockaddr(sockaddr_storage& out) const;
    static std::optional<wg_endpoint> from_sockaddr(const void* data, size_t len);

    friend bool operator==(const wg_endpoint& a, const wg_endpoint& b) noexcept {
        return a.address == b.address && a.port == b.port;
    }
};

}  // namespace mw
