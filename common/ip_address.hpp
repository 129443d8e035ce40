// IPv4/IPv6 addresses and prefixes as plain values (no sockets, no allocation beyond parsing).
// Arithmetic is done on 128-bit integers so that IPAM can walk v4 and v6 ranges the same way.
#pragma once

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mw {

using u128 = unsigned __int128;

class ip_address {
public:
    ip_address() = default;
    static ip_address v4(const in_addr& a);
    static ip_address v6(const in6_addr& a);
    // From raw network-order bytes (4 or 16).
    static std::optional<ip_address> from_bytes(int family, const void* data, size_t len);
    static result<ip_address> parse(std::string_view text);
    // From a host-order integer of the given family (v4 uses the low 32 bits).
    static ip_address from_u128(int family, u128 v);

    int family() const noexcept { return family_; }
    bool is_v4() const noexcept { return family_ == AF_INET; }
    bool is_v6() const noexcept { return family_ == AF_INET6; }
    bool valid() const noexcept { return family_ != 0; }
    int bits() const noexcept { return is_v4() ? 32 : 128; }
    size_t byte_len() const noexcept { return is_v4() ? 4 : 16; }
    const uint8_t* data() const noexcept { return bytes_.data(); }

    u128 to_u128() const noexcept;
    std::string str() const;
    // Not reachable from other networks by design: RFC 1918, shared (CGNAT) 100.64/10, loopback,
    // link-local, "this network" 0/8, unspecified, IPv6 ULA fc00::/7, and IPv4-mapped forms of
    // these. Documentation and benchmarking ranges count as public (test networks use them so).
    bool is_private() const noexcept;

    friend bool operator==(const ip_address& a, const ip_address& b) noexcept {
        return a.family_ == b.family_ && a.bytes_ == b.bytes_;
    }
    friend bool operator<(const ip_address& a, const ip_address& b) noexcept {
        return a.family_ != b.family_ ? a.family_ < b.family_ : a.bytes_ < b.bytes_;
    }

private:
    int family_ = 0;
    std::array<uint8_t, 16> bytes_{};
};

class ip_prefix {
public:
    ip_prefix() = default;
    ip_prefix(ip_address addr, int len) : addr_(addr), len_(len) {}
    // "10.0.0.0/24", "fd00::/64"; a bare address is a host prefix (/32, /128) only when
    // allow_bare is true. Host bits set are kept (use network() to clear them).
    static result<ip_prefix> parse(std::string_view text, bool allow_bare = false);

    const ip_address& address() const noexcept { return addr_; }
    int length() const noexcept { return len_; }
    int family() const noexcept { return addr_.family(); }
    bool is_v4() const noexcept { return addr_.is_v4(); }

    ip_prefix network() const;  // host bits cleared
    ip_address first() const;   // network address
    ip_address last() const;    // all host bits set (v4 broadcast)
    bool contains(const ip_address& a) const;
    bool is_host() const noexcept { return len_ == addr_.bits(); }
    u128 size() const;        // number of addresses, saturating at 2^127 for huge v6
    std::string str() const;  // "addr/len"

    friend bool operator==(const ip_prefix& a, const ip_prefix& b) noexcept {
        return a.addr_ == b.addr_ && a.len_ == b.len_;
    }
    // By address, then by length (the order WireGuard's allowed-ips lists are kept in).
    friend bool operator<(const ip_prefix& a, const ip_prefix& b) noexcept {
        if (a.addr_ == b.addr_) return a.len_ < b.len_;
        return a.addr_ < b.addr_;
    }

private:
    ip_address addr_;
    int len_ = 0;
};

}  // namespace mw
