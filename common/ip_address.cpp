#include "common/ip_address.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace mw {

ip_address ip_address::v4(const in_addr& a) {
    ip_address r;
    r.family_ = AF_INET;
    std::memcpy(r.bytes_.data(), &a, 4);
    return r;
}

ip_address ip_address::v6(const in6_addr& a) {
    ip_address r;
    r.family_ = AF_INET6;
    std::memcpy(r.bytes_.data(), &a, 16);
    return r;
}

std::optional<ip_address> ip_address::from_bytes(int family, const void* data, size_t len) {
    if (family == AF_INET && len == 4) {
        in_addr a;
        std::memcpy(&a, data, 4);
        return v4(a);
    }
    if (family == AF_INET6 && len == 16) {
        in6_addr a;
        std::memcpy(&a, data, 16);
        return v6(a);
    }
    return std::nullopt;
}

result<ip_address> ip_address::parse(std::string_view text) {
    if (text.empty() || text.size() > INET6_ADDRSTRLEN) {
        return error(errc::parse_error, "invalid IP address \"" + std::string(text) + "\"");
    }
    std::string s(text);
    in_addr a4;
    if (inet_pton(AF_INET, s.c_str(), &a4) == 1) return v4(a4);
    in6_addr a6;
    if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) return v6(a6);
    return error(errc::parse_error, "invalid IP address \"" + s + "\"");
}

ip_address ip_address::from_u128(int family, u128 v) {
    ip_address r;
    r.family_ = family;
    int n = family == AF_INET ? 4 : 16;
    for (int i = n - 1; i >= 0; --i) {
        r.bytes_[i] = static_cast<uint8_t>(v & 0xff);
        v >>= 8;
    }
    return r;
}

u128 ip_address::to_u128() const noexcept {
    u128 v = 0;
    for (size_t i = 0; i < byte_len(); ++i) v = (v << 8) | bytes_[i];
    return v;
}

bool ip_address::is_private() const noexcept {
    const uint8_t* b = bytes_.data();
    auto v4_private = [](const uint8_t* a) {
        return a[0] == 10 || a[0] == 127 || a[0] == 0 || (a[0] == 172 && (a[1] & 0xf0) == 16) ||
               (a[0] == 192 && a[1] == 168) || (a[0] == 169 && a[1] == 254) ||
               (a[0] == 100 && (a[1] & 0xc0) == 64);
    };
    if (is_v4()) return v4_private(b);
    if (!is_v6()) return true;
    static constexpr uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::equal(mapped, mapped + 12, b)) return v4_private(b + 12);
    bool zero_prefix = std::all_of(b, b + 15, [](uint8_t x) { return x == 0; });
    if (zero_prefix && b[15] <= 1) return true;  // :: and ::1
    return (b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0xc0) == 0x80);
}

std::string ip_address::str() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (!valid() || !inet_ntop(family_, bytes_.data(), buf, sizeof buf)) return "<invalid>";
    return buf;
}

result<ip_prefix> ip_prefix::parse(std::string_view text, bool allow_bare) {
    auto slash = text.find('/');
    std::string_view addr_part = slash == std::string_view::npos ? text : text.substr(0, slash);
    auto addr = ip_address::parse(addr_part);
    if (!addr) {
        return error(errc::parse_error, "invalid CIDR \"" + std::string(text) + "\": bad address");
    }
    if (slash == std::string_view::npos) {
        if (!allow_bare) {
            return error(errc::parse_error,
                         "invalid CIDR \"" + std::string(text) + "\": missing /prefix-length");
        }
        return ip_prefix(*addr, addr->bits());
    }
    std::string_view len_part = text.substr(slash + 1);
    int len = -1;
    auto [p, ec] = std::from_chars(len_part.data(), len_part.data() + len_part.size(), len);
    if (ec != std::errc() || p != len_part.data() + len_part.size() || len_part.empty() ||
        len < 0 || len > addr->bits()) {
        return error(errc::parse_error, "invalid CIDR \"" + std::string(text) +
                                            "\": prefix length must be 0.." +
                                            std::to_string(addr->bits()));
    }
    return ip_prefix(*addr, len);
}

static u128 host_mask(int bits, int len) {
    int host = bits - len;
    if (host >= 128) return ~u128(0);
    return (u128(1) << host) - 1;
}

ip_prefix ip_prefix::network() const {
    return {first(), len_};
}

ip_address ip_prefix::first() const {
    return ip_address::from_u128(family(), addr_.to_u128() & ~host_mask(addr_.bits(), len_));
}

ip_address ip_prefix::last() const {
    return ip_address::from_u128(family(), addr_.to_u128() | host_mask(addr_.bits(), len_));
}

bool ip_prefix::contains(const ip_address& a) const {
    if (a.family() != family()) return false;
    u128 m = ~host_mask(addr_.bits(), len_);
    return (a.to_u128() & m) == (addr_.to_u128() & m);
}

u128 ip_prefix::size() const {
    int host = addr_.bits() - len_;
    if (host >= 127) return u128(1) << 127;
    return u128(1) << host;
}

std::string ip_prefix::str() const {
    return addr_.str() + "/" + std::to_string(len_);
}

}  // namespace mw
