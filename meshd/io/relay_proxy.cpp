#include "meshd/io/relay_proxy.hpp"

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "meshd/core/probe_frame.hpp"
#include "meshd/core/wire_codec.hpp"
#include "meshd/daemon_clock.hpp"
#include "meshd/io/udp_socket.hpp"

namespace mw::meshd {

namespace {

constexpr uint64_t proxy_stop_tag = ~uint64_t(0);
constexpr uint64_t proxy_uplink_tag = ~uint64_t(0) - 1;
constexpr int proxy_rounds_per_wakeup = 16;

uint64_t peer_tag(uint32_t slot, uint32_t generation) {
    return uint64_t(generation) << 32 | slot;
}

// WireGuard's message type: a little-endian 32-bit word whose upper three bytes are zero, and
// each handshake message has a fixed size.
bool is_wg_message(const uint8_t* d, size_t size, uint8_t type, size_t want_size) {
    return size == want_size && d[0] == type && d[1] == 0 && d[2] == 0 && d[3] == 0;
}

}  // namespace

relay_proxy::relay_proxy(relay_proxy_config config)
    : config_(std::move(config)),
      peers_(config_.max_peers),
      index_(config_.max_peers),
      aliases_(2 * config_.max_peers),
      alias_index_(2 * config_.max_peers),
      rx_(config_.batch, config_.buffer_size, relay_data_header_size),
      tx_(config_.batch, /*gso=*/true),
      slot_of_(config_.batch),
      control_idx_() {
    control_idx_.reserve(config_.batch);
    control_session_.reserve(config_.batch);
    wake_sessions_.reserve(config_.batch);
    free_.reserve(config_.max_peers);
    for (size_t i = config_.max_peers; i > 0; --i) free_.push_back(uint32_t(i - 1));
    free_aliases_.reserve(aliases_.size());
    for (size_t i = aliases_.size(); i > 0; --i) free_aliases_.push_back(uint32_t(i - 1));
}

result<std::unique_ptr<relay_proxy>> relay_proxy::start(relay_proxy_config config) {
    if (config.batch == 0 || config.buffer_size <= relay_data_header_size) {
        return error(errc::invalid_argument, "relay proxy: batch and buffer_size must be positive");
    }
    std::unique_ptr<relay_proxy> p(new relay_proxy(std::move(config)));
    p->uplink_ = MW_TRY(open_udp_socket(p->config_.uplink));
    p->uplink_family_ = socket_family(p->uplink_.get());
    p->uplink_dual_stack_ = socket_dual_stack(p->uplink_.get());
    p->epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!p->epoll_.valid()) return error::from_errno(errno, "relay proxy: epoll_create1");
    p->stop_event_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!p->stop_event_.valid()) return error::from_errno(errno, "relay proxy: eventfd");
    for (auto [fd, tag] : {std::pair{p->stop_event_.get(), proxy_stop_tag},
                           std::pair{p->uplink_.get(), proxy_uplink_tag}}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tag;
        if (::epoll_ctl(p->epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
            return error::from_errno(errno, "relay proxy: epoll_ctl");
        }
    }
    p->thread_ = std::thread([raw = p.get()] { raw->run(); });
    return p;
}

relay_proxy::~relay_proxy() {
    stop();
}

void relay_proxy::stop() {
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    (void)!::write(stop_event_.get(), &one, sizeof one);
    thread_.join();
}

wg_endpoint relay_proxy::uplink_endpoint() const {
    auto e = local_endpoint(uplink_.get());
    return e ? *e : wg_endpoint{};
}

result<wg_endpoint> relay_proxy::add_peer(uint64_t session_id, const wg_endpoint& relay,
                                          const wg_endpoint& wg, uint32_t probe_index) {
    relay_addr r = relay_addr::from_endpoint(relay);
    relay_addr w = relay_addr::from_endpoint(wg);
    if (!r.valid() || !w.valid()) {
        return error(errc::invalid_argument, "relay proxy: relay and WireGuard need address:port");
    }
    // 0 means "not in a session" to on_control.
    if (session_id == 0) return error(errc::invalid_argument, "relay proxy: session id 0");
    if (r.is_v4() ? !(uplink_family_ == AF_INET || uplink_dual_stack_)
                  : uplink_family_ != AF_INET6) {
        return error(errc::unsupported, "relay proxy: uplink " + uplink_endpoint().str() +
                                            " cannot reach " + relay.str());
    }
    // The peer socket lives on loopback in WireGuard's family, and is connected to WireGuard's
    // port: the kernel then delivers only what WireGuard sends (the loop checks again anyway).
    wg_endpoint loopback{*ip_address::parse(w.is_v4() ? "127.0.0.1" : "::1"), 0};
    unique_fd fd = MW_TRY(open_udp_socket(loopback, 1 << 20));
    sockaddr_storage ss;
    socklen_t len = wg.to_sockaddr(ss);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        return error::from_errno(errno, "relay proxy: connect to WireGuard at " + wg.str());
    }
    wg_endpoint local = MW_TRY(local_endpoint(fd.get()));

    std::lock_guard lock(mutex_);
    if (index_.find(session_id) != fixed_u64_map::none ||
        alias_index_.find(session_id) != fixed_u64_map::none) {
        return error(errc::already_exists, "relay proxy: session already has a peer");
    }
    if (free_.empty()) return error(errc::exhausted, "relay proxy: peer table full");
    uint32_t slot = free_.back();
    peer_slot& p = peers_[slot];
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = peer_tag(slot, p.generation);
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) {
        return error::from_errno(errno, "relay proxy: epoll_ctl");
    }
    free_.pop_back();
    p.used = true;
    p.session_id = session_id;
    p.relay = r;
    p.wg = w;
    p.family = w.is_v4() ? AF_INET : AF_INET6;
    p.fd = std::move(fd);
    p.probe_index = probe_index;
    p.last_data_ms = 0;
    p.init_sent_ms = 0;
    p.init_in_ms = 0;
    p.init_in_session = 0;
    (void)index_.insert(session_id, slot);  // sized like peers_: cannot fail
    return local;
}

status relay_proxy::retarget_peer(uint64_t old_session_id, uint64_t new_session_id,
                                  const wg_endpoint& relay) {
    relay_addr r = relay_addr::from_endpoint(relay);
    if (!r.valid()) return error(errc::invalid_argument, "relay proxy: relay needs address:port");
    if (new_session_id == 0) return error(errc::invalid_argument, "relay proxy: session id 0");
    std::unique_lock lock(mutex_);
    uint32_t slot = index_.find(old_session_id);
    if (slot == fixed_u64_map::none) return error(errc::not_found, "relay proxy: no such session");
    if (new_session_id != old_session_id && index_.find(new_session_id) != fixed_u64_map::none) {
        return error(errc::already_exists, "relay proxy: new session already has a peer");
    }
    // Promoting this peer's warm standby: it stops being an alias.
    if (uint32_t a = alias_index_.find(new_session_id); a != fixed_u64_map::none) {
        if (aliases_[a].peer != slot) {
            return error(errc::already_exists, "relay proxy: new session belongs to another peer");
        }
        erase_alias(a);
    }
    index_.erase(old_session_id);
    (void)index_.insert(new_session_id, slot);
    peer_slot& p = peers_[slot];
    const bool moved = new_session_id != old_session_id || !(p.relay == r);
    p.session_id = new_session_id;
    p.relay = r;
    // WireGuard's initiation went through the old session within REKEY_TIMEOUT and nothing
    // answered it: most likely lost with the relay we leave. The copy goes through the new one
    // now rather than WireGuard's own retry 5 s later (see the header).
    if (!moved || !p.init_sent_ms || steady_ms() > p.init_sent_ms + rekey_timeout_ms) {
        return {};
    }
    uint8_t frame[relay_data_header_size + wg_initiation_size];
    write_relay_data_header(new_session_id, frame);
    std::copy(p.init.begin(), p.init.end(), frame + relay_data_header_size);
    lock.unlock();
    sockaddr_storage ss;
    socklen_t len = r.to_sockaddr(ss, uplink_family_);
    if (::sendto(uplink_.get(), frame, sizeof frame, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&ss),
                 len) < 0) {
        counters_.send_failed.fetch_add(1, std::memory_order_relaxed);
    } else {
        counters_.init_resent.fetch_add(1, std::memory_order_relaxed);
        counters_.to_relay_packets.fetch_add(1, std::memory_order_relaxed);
        counters_.to_relay_bytes.fetch_add(sizeof frame, std::memory_order_relaxed);
    }
    return {};
}

bool relay_proxy::remove_peer(uint64_t session_id) {
    std::lock_guard lock(mutex_);
    uint32_t slot = index_.find(session_id);
    if (slot == fixed_u64_map::none) return false;
    peer_slot& p = peers_[slot];
    (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, p.fd.get(), nullptr);
    p.fd.reset();
    p.used = false;
    ++p.generation;  // an event already fetched for the old socket no longer matches
    index_.erase(session_id);
    free_.push_back(slot);
    for (uint32_t a = 0; a < aliases_.size(); ++a) {
        if (aliases_[a].used && aliases_[a].peer == slot) erase_alias(a);
    }
    return true;
}

void relay_proxy::erase_alias(uint32_t a) noexcept {
    alias_index_.erase(aliases_[a].session_id);
    aliases_[a].used = false;
    free_aliases_.push_back(a);
}

status relay_proxy::add_alias(uint64_t peer_session, uint64_t alias_session,
                              const wg_endpoint& relay) {
    relay_addr r = relay_addr::from_endpoint(relay);
    if (!r.valid()) return error(errc::invalid_argument, "relay proxy: relay needs address:port");
    if (alias_session == 0) return error(errc::invalid_argument, "relay proxy: session id 0");
    std::lock_guard lock(mutex_);
    uint32_t slot = index_.find(peer_session);
    if (slot == fixed_u64_map::none) return error(errc::not_found, "relay proxy: no such session");
    if (uint32_t a = alias_index_.find(alias_session); a != fixed_u64_map::none) {
        if (aliases_[a].peer != slot) {
            return error(errc::already_exists, "relay proxy: session belongs to another peer");
        }
        aliases_[a].relay = r;  // the relay moved to another address of its own
        return {};
    }
    if (index_.find(alias_session) != fixed_u64_map::none) {
        return error(errc::already_exists, "relay proxy: session already has a peer");
    }
    if (free_aliases_.empty()) return error(errc::exhausted, "relay proxy: alias table full");
    uint32_t a = free_aliases_.back();
    free_aliases_.pop_back();
    aliases_[a] = alias_slot{true, alias_session, slot, r};
    (void)alias_index_.insert(alias_session, a);
    return {};
}

bool relay_proxy::remove_alias(uint64_t alias_session) {
    std::lock_guard lock(mutex_);
    uint32_t a = alias_index_.find(alias_session);
    if (a == fixed_u64_map::none) return false;
    erase_alias(a);
    return true;
}

bool relay_proxy::lookup(uint64_t session, uint32_t& slot, relay_addr& relay) const noexcept {
    slot = index_.find(session);
    if (slot != fixed_u64_map::none) {
        relay = peers_[slot].relay;
        return true;
    }
    uint32_t a = alias_index_.find(session);
    if (a == fixed_u64_map::none) return false;
    slot = aliases_[a].peer;
    relay = aliases_[a].relay;
    return true;
}

status relay_proxy::send_control(std::span<const uint8_t> datagram, const wg_endpoint& to) {
    relay_addr dst = relay_addr::from_endpoint(to);
    sockaddr_storage ss;
    socklen_t len = dst.to_sockaddr(ss, uplink_family_);
    if (::sendto(uplink_.get(), datagram.data(), datagram.size(), MSG_DONTWAIT,
                 reinterpret_cast<sockaddr*>(&ss), len) < 0) {
        return error::from_errno(errno, "relay proxy: send to " + to.str());
    }
    return {};
}

status relay_proxy::send_in_session(uint64_t session_id, std::span<const uint8_t> datagram) {
    if (datagram.empty() || datagram.size() > max_relay_payload) {
        return error(errc::invalid_argument, "relay proxy: in-band datagram size out of range");
    }
    relay_addr relay;
    {
        std::lock_guard lock(mutex_);
        uint32_t slot;
        if (!lookup(session_id, slot, relay)) {
            return error(errc::not_found, "relay proxy: no peer for the session");
        }
    }
    // Header and datagram as two iovecs: no copy, and no use of the loop thread's buffers. The
    // loop's own sendmmsg on the uplink may run at the same time; datagram sends are atomic.
    uint8_t header[relay_data_header_size];
    write_relay_data_header(session_id, header);
    iovec iov[2] = {{header, sizeof header},
                    {const_cast<uint8_t*>(datagram.data()), datagram.size()}};
    sockaddr_storage ss;
    msghdr msg{};
    msg.msg_name = &ss;
    msg.msg_namelen = relay.to_sockaddr(ss, uplink_family_);
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    if (::sendmsg(uplink_.get(), &msg, MSG_DONTWAIT) < 0) {
        return error::from_errno(
            errno, "relay proxy: in-band send for session " + std::to_string(session_id));
    }
    return {};
}

relay_proxy_stats relay_proxy::stats() const {
    constexpr auto relaxed = std::memory_order_relaxed;
    relay_proxy_stats s;
    s.to_relay_packets = counters_.to_relay_packets.load(relaxed);
    s.to_relay_bytes = counters_.to_relay_bytes.load(relaxed);
    s.to_wg_packets = counters_.to_wg_packets.load(relaxed);
    s.to_wg_bytes = counters_.to_wg_bytes.load(relaxed);
    s.control_packets = counters_.control_packets.load(relaxed);
    s.inband_control_packets = counters_.inband_control_packets.load(relaxed);
    s.unknown_session = counters_.unknown_session.load(relaxed);
    s.wrong_source = counters_.wrong_source.load(relaxed);
    s.foreign_local = counters_.foreign_local.load(relaxed);
    s.malformed = counters_.malformed.load(relaxed);
    s.nat_keepalives = counters_.nat_keepalives.load(relaxed);
    s.send_failed = counters_.send_failed.load(relaxed);
    s.oversize = counters_.oversize.load(relaxed);
    s.init_resent = counters_.init_resent.load(relaxed);
    s.response_via_initiation_session = counters_.response_via_initiation_session.load(relaxed);
    return s;
}

void relay_proxy::run() noexcept {
    tid_ = pid_t(::syscall(SYS_gettid));
    epoll_event events[16];
    for (;;) {
        int n = ::epoll_wait(epoll_.get(), events, 16, -1);
        if (n < 0 && errno != EINTR) return;
        for (int i = 0; i < n; ++i) {
            uint64_t tag = events[i].data.u64;
            if (tag == proxy_stop_tag) return;
            if (tag == proxy_uplink_tag) {
                drain_uplink();
                continue;
            }
            std::lock_guard lock(mutex_);
            uint32_t slot = uint32_t(tag);
            if (slot < peers_.size() && peers_[slot].used &&
                peers_[slot].generation == uint32_t(tag >> 32)) {
                drain_peer(slot);
            }
        }
    }
}

// relay -> WireGuard.
void relay_proxy::drain_uplink() noexcept {
    constexpr auto relaxed = std::memory_order_relaxed;
    constexpr uint32_t none = fixed_u64_map::none;
    for (int round = 0; round < proxy_rounds_per_wakeup; ++round) {
        int n = rx_.recv(uplink_.get());
        if (n <= 0) return;
        uint64_t malformed = 0, unknown = 0, wrong = 0, sent = 0, bytes = 0, failed = 0;
        uint64_t inband = 0, keepalives = 0;
        control_idx_.clear();
        control_session_.clear();
        wake_sessions_.clear();
        const uint64_t now = steady_ms();
        {
            std::lock_guard lock(mutex_);
            for (int i = 0; i < n; ++i) {
                slot_of_[size_t(i)] = none;
                auto d = rx_.datagram(size_t(i));
                if (rx_.truncated(size_t(i))) {
                    ++malformed;
                    continue;
                }
                auto session = peek_relay_data_session(d);
                if (!session) {
                    const frame_kind k = classify(d);
                    if (k == frame_kind::control) {
                        control_idx_.push_back(uint32_t(i));
                        control_session_.push_back(0);
                    } else if (k == frame_kind::nat_keepalive) {
                        ++keepalives;  // nodes send them to relays; harmless here: counted
                    } else {
                        ++malformed;
                    }
                    continue;
                }
                uint32_t slot;
                relay_addr expected;
                if (!lookup(*session, slot, expected)) {
                    // An in-band probe in a session we do not know (yet) still goes to the core:
                    // it is how the core learns that the peer sends through a relay that we
                    // dropped from the pair's warm set (say after a cut), and takes that
                    // session back. The core checks its source against the relay's addresses.
                    // Liveness probes only (96 bytes): padded ones (path MTU) are for a session
                    // we use, and WireGuard data of any size would otherwise reach the core.
                    auto payload = d.subspan(relay_data_header_size);
                    if ((payload.size() == probe_frame_size && peek_probe_index(payload)) ||
                        classify(payload) == frame_kind::control) {
                        control_idx_.push_back(uint32_t(i));
                        control_session_.push_back(*session);
                        ++inband;
                    } else {
                        ++unknown;
                    }
                    continue;
                }
                auto from =
                    relay_addr::from_sockaddr(&rx_.from(size_t(i)), rx_.from_len(size_t(i)));
                if (!from || !(*from == expected)) {
                    ++wrong;
                    continue;
                }
                // An in-band control datagram (a probe of this path) is for the node core, not
                // for WireGuard. Checked only after the source, so nobody but the session's relay
                // can inject one as coming through the session.
                auto payload = d.subspan(relay_data_header_size);
                uint32_t probe_index = peers_[slot].probe_index;
                auto index = probe_index ? peek_probe_index(payload) : std::nullopt;
                if ((index && *index == probe_index) || classify(payload) == frame_kind::control) {
                    control_idx_.push_back(uint32_t(i));
                    control_session_.push_back(*session);
                    ++inband;
                    continue;
                }
                slot_of_[size_t(i)] = slot;
                // Handshakes of a pair that may have been idle (see the header).
                peer_slot& p = peers_[slot];
                const uint8_t* w = payload.data();
                if (is_wg_message(w, payload.size(), 2, wg_response_size)) {
                    p.init_sent_ms = 0;  // answered: no copy to send again
                } else if (is_wg_message(w, payload.size(), 1, wg_initiation_size)) {
                    if (!p.init_in_ms || now >= p.init_in_ms + config_.wake_quiet_ms) {
                        wake_sessions_.push_back(p.session_id);
                    }
                    p.init_in_ms = now;
                    p.init_in_session = *session;
                }
            }
            // One sendmmsg per peer socket in this batch: frames for the same peer are gathered
            // (batches usually carry few distinct peers, so the quadratic scan is short).
            for (int i = 0; i < n; ++i) {
                uint32_t slot = slot_of_[size_t(i)];
                if (slot == none) continue;
                const peer_slot& p = peers_[slot];
                for (int j = i; j < n; ++j) {
                    if (slot_of_[size_t(j)] != slot) continue;
                    tx_.add(rx_.data(size_t(j)) + relay_data_header_size,
                            rx_.size(size_t(j)) - relay_data_header_size, p.wg, p.family);
                    slot_of_[size_t(j)] = none;
                }
                auto r = tx_.flush(p.fd.get());
                sent += r.packets;
                bytes += r.bytes;
                failed += r.failed;
            }
        }
        // Outside the lock: the callbacks may call send_in_session or add_peer.
        if (config_.on_wake) {
            for (uint64_t session : wake_sessions_) config_.on_wake(session);
        }
        for (size_t k = 0; k < control_idx_.size(); ++k) {
            uint32_t i = control_idx_[k];
            uint64_t session = control_session_[k];
            auto from = wg_endpoint::from_sockaddr(&rx_.from(i), rx_.from_len(i));
            if (!config_.on_control || !from) continue;
            auto d = rx_.datagram(i);
            config_.on_control(session ? d.subspan(relay_data_header_size) : d, *from, session);
        }
        counters_.to_wg_packets.fetch_add(sent, relaxed);
        counters_.to_wg_bytes.fetch_add(bytes, relaxed);
        counters_.send_failed.fetch_add(failed, relaxed);
        counters_.malformed.fetch_add(malformed, relaxed);
        counters_.nat_keepalives.fetch_add(keepalives, relaxed);
        counters_.unknown_session.fetch_add(unknown, relaxed);
        counters_.wrong_source.fetch_add(wrong, relaxed);
        counters_.control_packets.fetch_add(control_idx_.size() - inband, relaxed);
        counters_.inband_control_packets.fetch_add(inband, relaxed);
        if (size_t(n) < rx_.capacity()) return;
    }
}

// WireGuard -> relay. Called with mutex_ held.
void relay_proxy::drain_peer(uint32_t slot) noexcept {
    constexpr auto relaxed = std::memory_order_relaxed;
    peer_slot& p = peers_[slot];
    // A WireGuard transport packet larger than a keepalive, or a handshake initiation (on_wake).
    bool data = false;
    for (int round = 0; round < proxy_rounds_per_wakeup; ++round) {
        int n = rx_.recv(p.fd.get());
        if (n <= 0) return;
        const uint64_t now = steady_ms();
        uint64_t foreign = 0, malformed = 0, via_init = 0;
        for (int i = 0; i < n; ++i) {
            if (rx_.truncated(size_t(i)) || rx_.size(size_t(i)) == 0 ||
                rx_.size(size_t(i)) > max_relay_payload) {
                ++malformed;
                continue;
            }
            auto from = relay_addr::from_sockaddr(&rx_.from(size_t(i)), rx_.from_len(size_t(i)));
            if (!from || !(*from == p.wg)) {
                ++foreign;
                continue;
            }
            const uint8_t* w = rx_.data(size_t(i));
            const size_t size = rx_.size(size_t(i));
            // Type 4 (transport data), longer than a keepalive's 32 bytes: data.
            data |= size > 32 && w[0] == 4;
            uint64_t session = p.session_id;
            const relay_addr* to = &p.relay;
            if (is_wg_message(w, size, 1, wg_initiation_size)) {
                // Kept for a failover before it is answered (retarget_peer).
                std::copy(w, w + size, p.init.begin());
                p.init_sent_ms = now;
                data = true;
            } else if (is_wg_message(w, size, 2, wg_response_size) && p.init_in_ms &&
                       now <= p.init_in_ms + rekey_timeout_ms &&
                       p.init_in_session != p.session_id) {
                // The answer to an initiation that came in on a standby session goes back
                // through it, if it is still this peer's.
                uint32_t a = alias_index_.find(p.init_in_session);
                if (a != fixed_u64_map::none && aliases_[a].peer == slot) {
                    session = p.init_in_session;
                    to = &aliases_[a].relay;
                    ++via_init;
                }
            }
            // The headroom in front of the packet takes the header: no copy.
            uint8_t* frame = rx_.data(size_t(i)) - relay_data_header_size;
            write_relay_data_header(session, frame);
            tx_.add(frame, size + relay_data_header_size, *to, uplink_family_);
        }
        auto r = tx_.flush(uplink_.get());
        counters_.to_relay_packets.fetch_add(r.packets, relaxed);
        counters_.to_relay_bytes.fetch_add(r.bytes, relaxed);
        counters_.send_failed.fetch_add(r.failed, relaxed);
        counters_.oversize.fetch_add(r.oversize, relaxed);
        counters_.foreign_local.fetch_add(foreign, relaxed);
        counters_.malformed.fetch_add(malformed, relaxed);
        counters_.response_via_initiation_session.fetch_add(via_init, relaxed);
        if (data && config_.on_wake) {
            if (!p.last_data_ms || now >= p.last_data_ms + config_.wake_quiet_ms) {
                config_.on_wake(p.session_id);
            }
            p.last_data_ms = now;
            data = false;
        }
        if (size_t(n) < rx_.capacity()) return;
    }
}

}  // namespace mw::meshd
