// A UDP peer address in the one form the relay hot path compares: 16 address bytes (IPv4 as
// v4-mapped IPv6, ::ffff:a.b.c.d) and a port. One form for both families matters because a
// dual-stack socket reports IPv4 senders as v4-mapped while the control plane may name them as
// plain IPv4; normalising both to the same bytes makes "is this the bound source?" a 18-byte
// compare with no branches on family, and the struct is trivially copyable (no allocation).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>

#include "common/wireguard/wg_endpoint.hpp"

namespace mw::meshd {

struct relay_addr {
    std::array<uint8_t, 16> bytes{};
    uint16_t port = 0;  // host order

    bool is_v4() const noexcept {
        static constexpr uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        return std::memcmp(bytes.data(), prefix, 12) == 0;
    }
    bool valid() const noexcept { return port != 0; }

    // From a kernel sockaddr (what recvmmsg fills in); nullopt for other families / short lengths.
    static std::optional<relay_addr> from_sockaddr(const void* sa, size_t len) noexcept {
        if (len < sizeof(sa_family_t)) return std::nullopt;
        sa_family_t family;
        std::memcpy(&family, sa, sizeof family);
        relay_addr r;
        if (family == AF_INET && len >= sizeof(sockaddr_in)) {
            sockaddr_in sin;
            std::memcpy(&sin, sa, sizeof sin);
            r.bytes[10] = r.bytes[11] = 0xff;
            std::memcpy(r.bytes.data() + 12, &sin.sin_addr, 4);
            r.port = ntohs(sin.sin_port);
            return r;
        }
        if (family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
            sockaddr_in6 sin6;
            std::memcpy(&sin6, sa, sizeof sin6);
            std::memcpy(r.bytes.data(), &sin6.sin6_addr, 16);
            r.port = ntohs(sin6.sin6_port);
            return r;
        }
        return std::nullopt;
    }

    // For a socket of `socket_family`: AF_INET gets a sockaddr_in (only valid for is_v4()),
    // AF_INET6 a sockaddr_in6 (v4 addresses stay v4-mapped, for dual-stack sockets).
    socklen_t to_sockaddr(sockaddr_storage& out, int socket_family) const noexcept {
        if (socket_family == AF_INET) {
            sockaddr_in sin{};
            sin.sin_family = AF_INET;
            sin.sin_port = htons(port);
            std::memcpy(&sin.sin_addr, bytes.data() + 12, 4);
            std::memcpy(&out, &sin, sizeof sin);
            return sizeof sin;
        }
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(port);
        std::memcpy(&sin6.sin6_addr, bytes.data(), 16);
        std::memcpy(&out, &sin6, sizeof sin6);
        return sizeof sin6;
    }

    static relay_addr from_endpoint(const wg_endpoint& e) noexcept {
        sockaddr_storage ss;
        socklen_t len = e.to_sockaddr(ss);
        return from_sockaddr(&ss, len).value_or(relay_addr{});
    }
    wg_endpoint to_endpoint() const {
        sockaddr_storage ss;
        socklen_t len = to_sockaddr(ss, is_v4() ? AF_INET : AF_INET6);
        return wg_endpoint::from_sockaddr(&ss, len).value_or(wg_endpoint{});
    }

    friend bool operator==(const relay_addr& a, const relay_addr& b) noexcept {
        return a.port == b.port && a.bytes == b.bytes;
    }
};

}  // namespace mw::meshd
