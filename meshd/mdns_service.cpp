#include "meshd/mdns_service.hpp"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/log.hpp"
#include "meshd/daemon_clock.hpp"

namespace mw::meshd {

namespace {

namespace asio = boost::asio;

constexpr auto k_rescan_debounce = std::chrono::milliseconds(200);
constexpr auto k_rescan_period = std::chrono::seconds(30);

std::string join(const std::vector<ip_address>& a) {
    std::string s;
    for (const auto& x : a) s += (s.empty() ? "" : ",") + x.str();
    return s;
}

status sockopt(int fd, int level, int name, const void* v, socklen_t len, const char* what) {
    if (::setsockopt(fd, level, name, v, len) != 0) return error::from_errno(errno, what);
    return {};
}

status sockopt_int(int fd, int level, int name, int v, const char* what) {
    return sockopt(fd, level, name, &v, sizeof v, what);
}

// Adds an engine's counters to t (stats() and add_totals() share this rule).
void sum_into(mdns_service_stats& t, const mdns_engine& e) {
    const auto& r = e.responder().stats();
    const auto& c = e.stats();
    t.announcements += r.announcements;
    t.answers += r.answers;
    t.legacy_answers += r.legacy_answers;
    t.conflicts += r.conflicts;
    t.queries += e.querier().queries_sent();
    t.received += c.received;
    t.sent += c.sent;
    t.malformed += c.malformed;
    t.ignored += c.ignored;
    t.own_looped += c.own_looped;
    t.peers_found += c.peers_found;
}

}  // namespace

mdns_service::mdns_service(asio::io_context& io, mdns_service_config cfg, found_fn found)
    : io_(io),
      cfg_(std::move(cfg)),
      found_(std::move(found)),
      sock4_(io),
      sock6_(io),
      netlink_(io),
      timer_(io),
      rescan_timer_(io) {}

mdns_service::~mdns_service() {
    // Goodbyes are sent (and allocated) by stop(), which the daemon calls on its way out; here
    // only what cannot fail.
    close_sockets();
}

result<std::unique_ptr<mdns_service>> mdns_service::start(asio::io_context& io,
                                                          mdns_service_config cfg, found_fn found) {
    std::unique_ptr<mdns_service> s(new mdns_service(io, std::move(cfg), std::move(found)));
    if (auto st = s->open_sockets(); !st) return st.err();
    s->open_netlink();
    s->rescan();
    return s;
}

status mdns_service::open_sockets() {
    // IPv4: required.
    {
        int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return error::from_errno(errno, "mdns: socket(AF_INET)");
        auto fail = [&](status s) {
            ::close(fd);
            return s;
        };
        for (int opt : {SO_REUSEADDR, SO_REUSEPORT})
            if (auto s = sockopt_int(fd, SOL_SOCKET, opt, 1, "mdns: SO_REUSEADDR/PORT"); !s)
                return fail(s);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(mdns_port);
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
            return fail(error::from_errno(errno, "mdns: bind 0.0.0.0:5353"));
        for (auto [level, name, v, what] :
             {std::tuple{IPPROTO_IP, IP_PKTINFO, 1, "IP_PKTINFO"},
              std::tuple{IPPROTO_IP, IP_MULTICAST_LOOP, 1, "IP_MULTICAST_LOOP"},
              std::tuple{IPPROTO_IP, IP_MULTICAST_TTL, 255, "IP_MULTICAST_TTL"},
              std::tuple{IPPROTO_IP, IP_TTL, 255, "IP_TTL"}})
            if (auto s = sockopt_int(fd, level, name, v, what); !s) return fail(s);
        sock4_.assign(asio::ip::udp::v4(), fd);
    }
    // IPv6: optional.
    int fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0;
    if (ok) {
        for (int opt : {SO_REUSEADDR, SO_REUSEPORT})
            ok = ok && sockopt_int(fd, SOL_SOCKET, opt, 1, "");
        ok = ok && sockopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "");
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(mdns_port);
        a.sin6_addr = in6addr_any;
        ok = ok && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        ok = ok && sockopt_int(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1, "");
        ok = ok && sockopt_int(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 1, "");
        ok = ok && sockopt_int(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255, "");
        ok = ok && sockopt_int(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 255, "");
    }
    if (ok) {
        sock6_.assign(asio::ip::udp::v6(), fd);
    } else {
        int err = errno;
        if (fd >= 0) ::close(fd);
        log::warn("mdns runs on IPv4 only: cannot open [::]:5353", {{"error", std::strerror(err)}});
    }
    wait_socket(AF_INET);
    if (sock6_.is_open()) wait_socket(AF_INET6);
    return {};
}

void mdns_service::open_netlink() {
    int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) {
        log::warn("mdns cannot watch links; re-reading them every 30 s",
                  {{"error", std::strerror(errno)}});
        return;
    }
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        log::warn("mdns cannot watch links; re-reading them every 30 s",
                  {{"error", std::strerror(errno)}});
        ::close(fd);
        return;
    }
    netlink_.assign(fd);
    wait_netlink();
}

void mdns_service::wait_netlink() {
    netlink_.async_wait(
        asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
            if (ec || stopped_) return;
            // Drain: the content does not matter, only that something changed
            // (ENOBUFS, a lost notification, too: re-read everything).
            std::array<char, 8192> buf;
            while (::recv(netlink_.native_handle(), buf.data(), buf.size(), 0) > 0 ||
                   errno == ENOBUFS) {
            }
            schedule_rescan(k_rescan_debounce);
            wait_netlink();
        });
}

void mdns_service::schedule_rescan(std::chrono::milliseconds after) {
    // A quick re-read already queued is not pushed back by later notifications (a steady stream
    // of changes must not starve it); arming one replaces the periodic re-read.
    if (rescan_pending_) return;
    rescan_pending_ = after == k_rescan_debounce;
    rescan_timer_.expires_after(after);
    rescan_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (ec || stopped_) return;
        rescan_pending_ = false;
        rescan();
    });
}

void mdns_service::rescan() {
    if (stopped_) return;
    uint64_t now = steady_ms();
    auto want = host_mdns_links(cfg_.policy);
    // Gone (or no longer selected) links: goodbyes, leave the groups.
    for (auto it = links_.begin(); it != links_.end();) {
        bool keep = std::any_of(want.begin(), want.end(), [&](const mdns_link& l) {
            return l.index == it->first && l.name == it->second.link.name &&
                   l.v4 == it->second.link.v4 && l.v6 == it->second.link.v6;
        });
        if (keep) {
            ++it;
            continue;
        }
        log::info("mdns interface removed", {{"interface", it->second.link.name}});
        stop_link(it->second, now);
        it = links_.erase(it);
    }
    for (const auto& l : want) {
        auto it = links_.find(l.index);
        if (it == links_.end()) {
            start_link(l, now);
            continue;
        }
        if (it->second.link.advertised != l.advertised) {
            log::info("mdns addresses changed; announcing again",
                      {{"interface", l.name}, {"addresses", join(l.advertised)}});
            it->second.link = l;
            it->second.engine->set_addresses(l.advertised, now);
            flush(it->second);
        }
    }
    arm_timer();
    schedule_rescan(k_rescan_period);
}

void mdns_service::membership(int family, int ifindex, bool join) {
    if (family == AF_INET) {
        ip_mreqn m{};
        inet_pton(AF_INET, "224.0.0.251", &m.imr_multiaddr);
        m.imr_ifindex = ifindex;
        int opt = join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP;
        if (auto s = sockopt(sock4_.native_handle(), IPPROTO_IP, opt, &m, sizeof m,
                             "mdns: joining 224.0.0.251");
            !s && join)
            log::warn("mdns cannot join its group",
                      {{"interface", std::to_string(ifindex)}, {"error", s.err().message}});
    } else {
        ipv6_mreq m{};
        inet_pton(AF_INET6, "ff02::fb", &m.ipv6mr_multiaddr);
        m.ipv6mr_interface = static_cast<unsigned>(ifindex);
        int opt = join ? IPV6_ADD_MEMBERSHIP : IPV6_DROP_MEMBERSHIP;
        if (auto s = sockopt(sock6_.native_handle(), IPPROTO_IPV6, opt, &m, sizeof m,
                             "mdns: joining ff02::fb");
            !s && join)
            log::warn("mdns cannot join its group",
                      {{"interface", std::to_string(ifindex)}, {"error", s.err().message}});
    }
}

void mdns_service::start_link(const mdns_link& l, uint64_t now) {
    mdns_engine_config ec;
    ec.service = cfg_.service;
    ec.self = cfg_.self;
    if (l.v4) ec.families.push_back(AF_INET);
    if (l.v6 && sock6_.is_open()) ec.families.push_back(AF_INET6);
    if (ec.families.empty()) return;
    // The jitter's seed: OS randomness (the engine itself has none).
    ec.seed = uint64_t(randombytes_random()) << 32 | randombytes_random();
    for (int f : ec.families) membership(f, l.index, true);
    link_state s{l, std::make_unique<mdns_engine>(std::move(ec))};
    s.engine->start(l.advertised, now);
    log::info("mdns interface added", {{"interface", l.name},
                                       {"addresses", join(l.advertised)},
                                       {"instance", cfg_.service.instance}});
    auto& ref = links_.emplace(l.index, std::move(s)).first->second;
    flush(ref);
}

void mdns_service::stop_link(link_state& s, uint64_t now) {
    s.engine->stop(now);
    flush(s);
    add_totals(*s.engine);
    for (int f : {AF_INET, AF_INET6}) {
        if ((f == AF_INET && s.link.v4) || (f == AF_INET6 && s.link.v6 && sock6_.is_open()))
            membership(f, s.link.index, false);
    }
}

void mdns_service::add_totals(const mdns_engine& e) {
    sum_into(totals_, e);
}

void mdns_service::flush(link_state& s) {
    for (auto& d : s.engine->take_output()) {
        bool v6 = d.to.address.is_v6();
        auto& sock = v6 ? sock6_ : sock4_;
        if (!sock.is_open()) continue;
        int fd = sock.native_handle();
        if (is_mdns_group(d.to.address)) {
            // Out of this engine's interface (single-threaded: set per send).
            if (v6) {
                unsigned idx = static_cast<unsigned>(s.link.index);
                ::setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof idx);
            } else {
                ip_mreqn m{};
                m.imr_ifindex = s.link.index;
                ::setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &m, sizeof m);
            }
        }
        sockaddr_storage ss{};
        socklen_t len = d.to.to_sockaddr(ss);
        if (v6) {
            // A link-local or multicast destination needs this interface as its scope.
            auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
            if (IN6_IS_ADDR_LINKLOCAL(&a6->sin6_addr) || IN6_IS_ADDR_MC_LINKLOCAL(&a6->sin6_addr))
                a6->sin6_scope_id = static_cast<uint32_t>(s.link.index);
        }
        if (::sendto(fd, d.bytes.data(), d.bytes.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) <
            0) {
            ++totals_.send_errors;
            log::debug("mdns send failed", {{"interface", s.link.name},
                                            {"endpoint", d.to.str()},
                                            {"error", std::strerror(errno)}});
        }
    }
    for (const auto& p : s.engine->take_found()) {
        std::string eps;
        for (const auto& e : p.endpoints) eps += (eps.empty() ? "" : ",") + e.str();
        log::info("mdns found a node", {{"peer", p.instance},
                                        {"node_id", p.id.short_hex()},
                                        {"endpoint", eps},
                                        {"interface", s.link.name}});
        if (found_) found_(p);
    }
}

void mdns_service::wait_socket(int family) {
    auto& sock = family == AF_INET6 ? sock6_ : sock4_;
    sock.async_wait(asio::ip::udp::socket::wait_read,
                    [this, family](const boost::system::error_code& ec) {
                        if (ec || stopped_) return;
                        receive(family);
                        wait_socket(family);
                    });
}

void mdns_service::receive(int family) {
    auto& sock = family == AF_INET6 ? sock6_ : sock4_;
    std::array<uint8_t, mdns_message::max_size + 1> buf;
    alignas(cmsghdr) std::array<char, 256> control;
    uint64_t now = steady_ms();
    // A bounded batch per wakeup: the rest waits for the next one (other handlers get a turn).
    for (int n = 0; n < 64; ++n) {
        sockaddr_storage from{};
        iovec iov{buf.data(), buf.size()};
        msghdr mh{};
        mh.msg_name = &from;
        mh.msg_namelen = sizeof from;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control.data();
        mh.msg_controllen = control.size();
        ssize_t got = ::recvmsg(sock.native_handle(), &mh, 0);
        if (got < 0) break;
        int ifindex = 0;
        for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                in_pktinfo pi;
                std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
                ifindex = pi.ipi_ifindex;
            } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
                in6_pktinfo pi;
                std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
                ifindex = static_cast<int>(pi.ipi6_ifindex);
            }
        }
        auto it = links_.find(ifindex);
        if (it == links_.end()) continue;  // not an interface we run on
        auto src = wg_endpoint::from_sockaddr(&from, mh.msg_namelen);
        if (!src) continue;
        // Sent by this host's engine on another interface (two interfaces on one LAN): ours.
        std::span<const uint8_t> bytes(buf.data(), static_cast<size_t>(got));
        bool other_engine =
            src->port == mdns_port &&
            std::any_of(links_.begin(), links_.end(), [&](const auto& kv) {
                return kv.first != ifindex && kv.second.engine->sent_recently(bytes, now);
            });
        if (other_engine) {
            ++totals_.own_looped;
            continue;
        }
        // Over 9000 bytes (the buffer holds one more to tell): handed over as is, the parser
        // refuses and counts it.
        auto malformed = it->second.engine->stats().malformed;
        it->second.engine->on_datagram(bytes, *src, now);
        // At debug level, at most one line a second: anyone on the LAN can send these.
        if (it->second.engine->stats().malformed != malformed && now >= next_malformed_log_) {
            next_malformed_log_ = now + 1000;
            log::debug("mdns packet dropped as malformed",
                       {{"interface", it->second.link.name},
                        {"endpoint", src->str()},
                        {"error", it->second.engine->last_malformed()}});
        }
        flush(it->second);
    }
    arm_timer();
}

void mdns_service::arm_timer() {
    uint64_t next = UINT64_MAX;
    for (const auto& [i, s] : links_) next = std::min(next, s.engine->next_deadline());
    if (next >= armed_) return;
    armed_ = next;
    if (next == UINT64_MAX) return;
    uint64_t now = steady_ms();
    timer_.expires_after(std::chrono::milliseconds(next > now ? next - now : 0));
    timer_.async_wait([this](const boost::system::error_code& ec) {
        if (ec || stopped_) return;
        armed_ = UINT64_MAX;
        on_timer();
    });
}

void mdns_service::on_timer() {
    uint64_t now = steady_ms();
    for (auto& [i, s] : links_) {
        if (s.engine->next_deadline() <= now) s.engine->on_timer(now);
        flush(s);
    }
    arm_timer();
}

void mdns_service::stop() {
    if (stopped_) return;
    uint64_t now = steady_ms();
    for (auto& [i, s] : links_) stop_link(s, now);
    links_.clear();
    stopped_ = true;
    close_sockets();
}

void mdns_service::close_sockets() noexcept {
    boost::system::error_code ec;
    timer_.cancel(ec);
    rescan_timer_.cancel(ec);
    sock4_.close(ec);
    sock6_.close(ec);
    netlink_.close(ec);
}

mdns_service_stats mdns_service::stats() const {
    mdns_service_stats s = totals_;
    for (const auto& [i, l] : links_) {
        sum_into(s, *l.engine);
        s.interfaces.push_back(l.link.name);
        s.instance = l.engine->responder().instance();
    }
    if (s.instance.empty()) s.instance = cfg_.service.instance;
    return s;
}

}  // namespace mw::meshd
