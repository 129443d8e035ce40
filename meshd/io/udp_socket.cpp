#include "meshd/io/udp_socket.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace mw::meshd {

result<unique_fd> open_udp_socket(const wg_endpoint& bind_to, int buffer_bytes) {
    if (!bind_to.address.valid()) {
        return error(errc::invalid_argument, "UDP socket: no bind address");
    }
    int family = bind_to.address.family();
    unique_fd fd(::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return error::from_errno(errno, "socket(" + bind_to.str() + ")");
    int v6only = 1;
    if (family == AF_INET6) {
        static const in6_addr any = IN6ADDR_ANY_INIT;
        v6only = std::memcmp(bind_to.address.data(), &any, 16) == 0 ? 0 : 1;
        if (::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) != 0) {
            return error::from_errno(errno, "IPV6_V6ONLY on " + bind_to.str());
        }
    }
    // Never fragment (issue 15): a fragmented tunnel packet is lost wherever fragments are
    // dropped, silently. With *_PMTUDISC_DO a datagram above the route's MTU (the device's, or a
    // path MTU the kernel learned from an ICMP "too big") fails with EMSGSIZE instead, which
    // send_batch counts. IP_MTU_DISCOVER also governs the v4-mapped side of a dual-stack socket.
    int pmtu_v4 = IP_PMTUDISC_DO;
    if (family == AF_INET || !v6only) {
        if (::setsockopt(fd.get(), IPPROTO_IP, IP_MTU_DISCOVER, &pmtu_v4, sizeof pmtu_v4) != 0) {
            return error::from_errno(errno, "IP_MTU_DISCOVER on " + bind_to.str());
        }
    }
    if (family == AF_INET6) {
        int pmtu_v6 = IPV6_PMTUDISC_DO, on = 1;
        if (::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu_v6, sizeof pmtu_v6) !=
                0 ||
            ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_DONTFRAG, &on, sizeof on) != 0) {
            return error::from_errno(errno, "IPV6_MTU_DISCOVER/IPV6_DONTFRAG on " + bind_to.str());
        }
    }
    // Best effort: a smaller buffer only means more drops under bursts.
    for (int opt : {SO_RCVBUF, SO_SNDBUF}) {
        int force = opt == SO_RCVBUF ? SO_RCVBUFFORCE : SO_SNDBUFFORCE;
        if (::setsockopt(fd.get(), SOL_SOCKET, force, &buffer_bytes, sizeof buffer_bytes) != 0) {
            (void)::setsockopt(fd.get(), SOL_SOCKET, opt, &buffer_bytes, sizeof buffer_bytes);
        }
    }
    sockaddr_storage ss;
    socklen_t len = bind_to.to_sockaddr(ss);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        return error::from_errno(errno, "bind UDP " + bind_to.str());
    }
    return fd;
}

result<wg_endpoint> local_endpoint(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        return error::from_errno(errno, "getsockname");
    }
    auto e = wg_endpoint::from_sockaddr(&ss, len);
    if (!e) return error(errc::unsupported, "getsockname: not an IP socket");
    return *e;
}

int socket_family(int fd) noexcept {
    int family = 0;
    socklen_t len = sizeof family;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) != 0) return 0;
    return family;
}

bool socket_dual_stack(int fd) noexcept {
    if (socket_family(fd) != AF_INET6) return false;
    int v6only = 1;
    socklen_t len = sizeof v6only;
    if (::getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len) != 0) return false;
    return v6only == 0;
}

}  // namespace mw::meshd
