#include "common/wireguard/wg_endpoint.hpp"

#include <netinet/in.h>

#include <charconv>
#include <cstring>

namespace mw {

result<wg_endpoint> wg_endpoint::parse(std::string_view text) {
    auto bad = [&](const char* why) {
        return error(errc::invalid_argument,
                     "invalid endpoint \"" + std::string(text) + "\": " + why);
    };
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return bad("expected [IPv6]:port");
        }
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return bad("missing :port");
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) return bad("IPv6 addresses need [brackets]");
    }
    auto ip = ip_address::parse(host);
    if (!ip) return bad("not an IP address (host names are not resolved here)");
    if (text.front() == '[' && !ip->is_v6()) return bad("brackets are for IPv6 addresses");
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || p == 0 ||
        p > 65535) {
        return bad("port must be 1-65535");
    }
    return wg_endpoint{*ip, static_cast<uint16_t>(p)};
}

std::string wg_endpoint::str() const {
    if (address.is_v6()) return "[" + address.str() + "]:" + std::to_string(port);
    return address.str() + ":" + std::to_string(port);
}

socklen_t wg_endpoint::to_sockaddr(sockaddr_storage& out) const {
    std::memset(&out, 0, sizeof out);
    if (address.is_v4()) {
        auto* sin = reinterpret_cast<sockaddr_in*>(&out);
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        std::memcpy(&sin->sin_addr, address.data(), 4);
        return sizeof(sockaddr_in);
    }
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&out);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    std::memcpy(&sin6->sin6_addr, address.data(), 16);
    return sizeof(sockaddr_in6);
}

std::optional<wg_endpoint> wg_endpoint::from_sockaddr(const void* data, size_t len) {
    if (len < sizeof(sa_family_t)) return std::nullopt;
    sa_family_t family;
    std::memcpy(&family, data, sizeof family);
    if (family == AF_INET && len >= sizeof(sockaddr_in)) {
        sockaddr_in sin;
        std::memcpy(&sin, data, sizeof sin);
        return wg_endpoint{ip_address::v4(sin.sin_addr), ntohs(sin.sin_port)};
    }
    if (family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, data, sizeof sin6);
        return wg_endpoint{ip_address::v6(sin6.sin6_addr), ntohs(sin6.sin6_port)};
    }
    return std::nullopt;
}

}  // namespace mw
