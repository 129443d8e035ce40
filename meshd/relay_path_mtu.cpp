#include "meshd/relay_path_mtu.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "common/tunnel_mtu.hpp"
#include "common/unique_fd.hpp"
#include "common/wireguard/wg_endpoint.hpp"

namespace mw::meshd {

std::optional<unsigned> relay_path_mtu::route_mtu(const ip_address& dst) {
    int family = dst.family();
    unique_fd fd(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return std::nullopt;
    sockaddr_storage ss;
    socklen_t len = wg_endpoint{dst, 51821}.to_sockaddr(ss);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return std::nullopt;
    int mtu = 0;
    socklen_t ml = sizeof mtu;
    int rc = family == AF_INET6 ? ::getsockopt(fd.get(), IPPROTO_IPV6, IPV6_MTU, &mtu, &ml)
                                : ::getsockopt(fd.get(), IPPROTO_IP, IP_MTU, &mtu, &ml);
    if (rc != 0 || mtu <= 0) return std::nullopt;
    return static_cast<unsigned>(mtu);
}

unsigned relay_path_mtu::update(uint64_t oversize, const std::vector<ip_address>& relays,
                                uint64_t now_ms) {
    bool grew = oversize > oversize_;
    oversize_ = oversize;
    if (!grew && !(mtu_ < base_ && now_ms >= checked_ms_ + recheck_ms)) return mtu_;
    checked_ms_ = now_ms;
    unsigned want = base_;
    for (const auto& a : relays) {
        auto m = route_mtu(a);
        if (!m || *m < k_min_underlay_mtu) continue;
        want = std::min(want, tunnel_mtu_for(*m));
    }
    mtu_ = want;
    return mtu_;
}

}  // namespace mw::meshd
