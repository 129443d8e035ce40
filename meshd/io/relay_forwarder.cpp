#include "meshd/io/relay_forwarder.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "meshd/core/wire_codec.hpp"
#include "meshd/io/udp_socket.hpp"

namespace mw::meshd {

namespace {

// epoll user data for the stop eventfd; sockets use their index.
constexpr uint64_t stop_tag = ~uint64_t(0);
// Batches taken from one socket before looking at the others (and at the stop event): bounds how
// long a flooded socket can starve the rest.
constexpr int max_rounds_per_wakeup = 16;
// The loop wakes at least this often to sweep idle sessions.
constexpr int sweep_interval_ms = 1000;

}  // namespace

uint64_t relay_forwarder::now_ms() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1'000'000;
}

relay_forwarder::relay_forwarder(relay_forwarder_config config)
    : config_(std::move(config)), rx_(config_.batch, config_.buffer_size), table_(config_.limits) {
    control_idx_.reserve(config_.batch);
}

result<std::unique_ptr<relay_forwarder>> relay_forwarder::start(relay_forwarder_config config) {
    if (config.listen.empty()) return error(errc::invalid_argument, "relay: no listen address");
    if (config.batch == 0 || config.buffer_size <= relay_data_header_size) {
        return error(errc::invalid_argument, "relay: batch and buffer_size must be positive");
    }
    std::unique_ptr<relay_forwarder> f(new relay_forwarder(std::move(config)));

    f->epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!f->epoll_.valid()) return error::from_errno(errno, "relay: epoll_create1");
    f->stop_event_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!f->stop_event_.valid()) return error::from_errno(errno, "relay: eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = stop_tag;
    if (::epoll_ctl(f->epoll_.get(), EPOLL_CTL_ADD, f->stop_event_.get(), &ev) != 0) {
        return error::from_errno(errno, "relay: epoll_ctl");
    }

    for (const auto& ep : f->config_.listen) {
        socket_slot s;
        s.fd = MW_TRY(open_udp_socket(ep));
        s.family = socket_family(s.fd.get());
        s.dual_stack = socket_dual_stack(s.fd.get());
        s.out = std::make_unique<send_batch>(f->config_.batch, f->config_.gso);
        size_t idx = f->sockets_.size();
        ev.data.u64 = idx;
        if (::epoll_ctl(f->epoll_.get(), EPOLL_CTL_ADD, s.fd.get(), &ev) != 0) {
            return error::from_errno(errno, "relay: epoll_ctl");
        }
        if (s.family == AF_INET && f->v4_socket_ < 0) f->v4_socket_ = int(idx);
        if (s.family == AF_INET6 && f->v6_socket_ < 0) f->v6_socket_ = int(idx);
        f->sockets_.push_back(std::move(s));
    }
    // No plain v4 socket: v4 destinations go out through a dual-stack one, v4-mapped.
    if (f->v4_socket_ < 0) {
        for (size_t i = 0; i < f->sockets_.size(); ++i) {
            if (f->sockets_[i].dual_stack) {
                f->v4_socket_ = int(i);
                break;
            }
        }
    }
    f->thread_ = std::thread([p = f.get()] { p->run(); });
    return f;
}

relay_forwarder::~relay_forwarder() {
    stop();
}

void relay_forwarder::stop() {
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    // An eventfd write of 1 cannot fail short of a counter overflow; the loop exits on it.
    (void)!::write(stop_event_.get(), &one, sizeof one);
    thread_.join();
}

std::vector<wg_endpoint> relay_forwarder::local_endpoints() const {
    std::vector<wg_endpoint> out;
    for (const auto& s : sockets_) {
        auto e = local_endpoint(s.fd.get());
        out.push_back(e ? *e : wg_endpoint{});
    }
    return out;
}

int relay_forwarder::socket_for(const relay_addr& to) const noexcept {
    return to.is_v4() ? v4_socket_ : v6_socket_;
}

int relay_forwarder::socket_for(const relay_addr& to, uint16_t via) const noexcept {
    // The socket the destination's own frames arrive on: its NAT mapping is towards that
    // address. Until it has sent anything, the first socket of its family.
    if (via < sockets_.size()) {
        const socket_slot& s = sockets_[via];
        if (to.is_v4() ? (s.family == AF_INET || s.dual_stack) : s.family == AF_INET6) return via;
    }
    return socket_for(to);
}

status relay_forwarder::send_control(std::span<const uint8_t> datagram, const wg_endpoint& to) {
    relay_addr dst = relay_addr::from_endpoint(to);
    int s = socket_for(dst);
    if (s < 0) return error(errc::unsupported, "relay: no socket for " + to.str());
    sockaddr_storage ss;
    socklen_t len = dst.to_sockaddr(ss, sockets_[s].family);
    if (::sendto(sockets_[s].fd.get(), datagram.data(), datagram.size(), MSG_DONTWAIT,
                 reinterpret_cast<sockaddr*>(&ss), len) < 0) {
        return error::from_errno(errno, "relay: send to " + to.str());
    }
    return {};
}

relay_forwarder_stats relay_forwarder::stats() const {
    relay_forwarder_stats s;
    s.rx_packets = counters_.rx_packets.load(std::memory_order_relaxed);
    s.rx_bytes = counters_.rx_bytes.load(std::memory_order_relaxed);
    s.forwarded_packets = counters_.forwarded_packets.load(std::memory_order_relaxed);
    s.forwarded_bytes = counters_.forwarded_bytes.load(std::memory_order_relaxed);
    s.control_packets = counters_.control_packets.load(std::memory_order_relaxed);
    s.malformed = counters_.malformed.load(std::memory_order_relaxed);
    s.nat_keepalives = counters_.nat_keepalives.load(std::memory_order_relaxed);
    s.no_socket = counters_.no_socket.load(std::memory_order_relaxed);
    s.send_failed = counters_.send_failed.load(std::memory_order_relaxed);
    s.oversize = counters_.oversize.load(std::memory_order_relaxed);
    s.batches = counters_.batches.load(std::memory_order_relaxed);
    std::lock_guard lock(table_mutex_);
    s.table_drops = table_.drops();
    s.kept_evicted = table_.evicted_kept();
    s.table_refusals = table_.refusals();
    return s;
}

void relay_forwarder::run() noexcept {
    tid_ = pid_t(::syscall(SYS_gettid));
    epoll_event events[8];
    uint64_t last_sweep = now_ms();
    for (;;) {
        int n = ::epoll_wait(epoll_.get(), events, 8, sweep_interval_ms);
        if (n < 0 && errno != EINTR) return;  // only EBADF/EINVAL: a bug, not a runtime state
        for (int i = 0; i < n; ++i) {
            if (events[i].data.u64 == stop_tag) return;
            drain(size_t(events[i].data.u64));
        }
        uint64_t now = now_ms();
        if (now - last_sweep >= uint64_t(sweep_interval_ms)) {
            std::lock_guard lock(table_mutex_);
            table_.expire(now);
            last_sweep = now;
        }
    }
}

void relay_forwarder::drain(size_t socket) noexcept {
    const int fd = sockets_[socket].fd.get();
    for (int round = 0; round < max_rounds_per_wakeup; ++round) {
        int n = rx_.recv(fd);
        if (n <= 0) return;  // drained (errors other than EAGAIN: nothing to do but retry later)

        uint64_t rx_bytes = 0, malformed = 0, no_socket = 0, keepalives = 0;
        control_idx_.clear();
        {
            std::lock_guard lock(table_mutex_);
            const uint64_t now = now_ms();
            for (int i = 0; i < n; ++i) {
                auto d = rx_.datagram(size_t(i));
                rx_bytes += d.size();
                if (rx_.truncated(size_t(i))) {
                    ++malformed;
                    continue;
                }
                auto session = peek_relay_data_session(d);
                if (!session) {
                    const frame_kind k = classify(d);
                    if (k == frame_kind::control) {
                        control_idx_.push_back(uint32_t(i));
                    } else if (k == frame_kind::nat_keepalive) {
                        ++keepalives;  // it only kept a NAT mapping open: nothing to do
                    } else {
                        ++malformed;
                    }
                    continue;
                }
                auto from =
                    relay_addr::from_sockaddr(&rx_.from(size_t(i)), rx_.from_len(size_t(i)));
                if (!from) {
                    ++malformed;
                    continue;
                }
                uint16_t reply_via = relay_session_table::no_via;
                const relay_addr* to =
                    table_.route(*session, *from, d.size(), now, uint16_t(socket), &reply_via);
                if (!to) continue;  // counted by the table
                int out = socket_for(*to, reply_via);
                if (out < 0) {
                    ++no_socket;
                    continue;
                }
                // Capacity equals the receive batch, so add() cannot run out of room.
                sockets_[size_t(out)].out->add(d.data(), d.size(), *to,
                                               sockets_[size_t(out)].family);
            }
        }

        uint64_t fwd_packets = 0, fwd_bytes = 0, failed = 0, oversize = 0;
        for (auto& s : sockets_) {
            if (s.out->empty()) continue;
            auto r = s.out->flush(s.fd.get());
            fwd_packets += r.packets;
            fwd_bytes += r.bytes;
            failed += r.failed;
            oversize += r.oversize;
        }
        for (uint32_t i : control_idx_) {
            auto from = wg_endpoint::from_sockaddr(&rx_.from(i), rx_.from_len(i));
            if (config_.on_control && from) {
                config_.on_control(rx_.datagram(i), *from, uint16_t(socket));
            }
        }

        constexpr auto relaxed = std::memory_order_relaxed;
        counters_.rx_packets.fetch_add(uint64_t(n), relaxed);
        counters_.rx_bytes.fetch_add(rx_bytes, relaxed);
        counters_.forwarded_packets.fetch_add(fwd_packets, relaxed);
        counters_.forwarded_bytes.fetch_add(fwd_bytes, relaxed);
        counters_.control_packets.fetch_add(control_idx_.size(), relaxed);
        counters_.malformed.fetch_add(malformed, relaxed);
        counters_.nat_keepalives.fetch_add(keepalives, relaxed);
        counters_.no_socket.fetch_add(no_socket, relaxed);
        counters_.send_failed.fetch_add(failed, relaxed);
        counters_.oversize.fetch_add(oversize, relaxed);
        counters_.batches.fetch_add(1, relaxed);
        if (size_t(n) < rx_.capacity()) return;  // the socket is empty now
    }
}

}  // namespace mw::meshd
