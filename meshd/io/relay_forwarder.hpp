// The relay's data-plane hot path (DESIGN §5): RELAY_DATA frames in, the same bytes out to the
// other side of their session, nothing else forwarded.
//
//   epoll (sockets + stop eventfd)
//     -> recvmmsg up to `batch` datagrams into preallocated buffers
//     -> per datagram: peek the session id (wire_codec), relay_session_table::route()
//     -> sendmmsg the batch, each datagram from the buffer it arrived in, unchanged (the receiver
//        needs the session id to know which peer it is from); runs of same-size frames to one
//        destination go as one UDP GSO send (see send_batch)
//
// Non-RELAY_DATA datagrams that look like control messages (the relay shares UDP 51821 with the
// control protocol) are passed to `on_control`; that is the only copy the forwarder makes, and
// only for those. Everything else is counted and dropped.
//
// Threading: the loop runs on its own thread, not on the Asio io_context. It spends its life in
// recvmmsg/sendmmsg and should never wait behind control-plane handlers (sealing, signature
// checks, Kubernetes I/O), and a thread of its own gives the CPU figure meshctl and the benchmark
// report (RUSAGE_THREAD / /proc/self/task/<tid>). The table is shared with the control plane
// through one mutex taken once per batch (not per packet), only around the lookups, never around
// a syscall; session set-up is rare, so the lock is practically uncontended.
//
// Memory: batch × buffer_size bytes of receive buffers plus the fixed-size session table, all
// allocated in start(); the loop allocates nothing.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/relay_session_table.hpp"
#include "meshd/io/recv_batch.hpp"
#include "meshd/io/send_batch.hpp"

namespace mw::meshd {

struct relay_forwarder_config {
    // One socket per address. "[::]:51821" alone is one dual-stack socket for both families; a
    // specific v4 and a specific v6 address give two sockets. A frame leaves through the socket
    // its destination's own frames arrive on (so each node hears the relay from the address it
    // talks to), and before that side has sent anything through the first socket of its family
    // (a v4 socket first for v4, then a dual-stack one). On a multi-homed relay, list each
    // advertised address rather than a wildcard: a wildcard socket's source address is the
    // kernel's choice.
    std::vector<wg_endpoint> listen;
    size_t batch = 64;
    // Largest datagram forwarded; bigger ones arrive truncated and are dropped. WireGuard packets
    // are at most the underlay MTU; 2048 covers 1500-byte links with room to spare.
    size_t buffer_size = 2048;
    relay_table_limits limits;
    // Coalesce same-size frames to one destination into UDP GSO sends (see send_batch).
    bool gso = true;
    // Called on the forwarder thread with a control datagram, its source and the index (into
    // `listen`) of the socket it arrived on, which relay_session_table::bind() takes as `via`;
    // the span is valid only during the call (copy what you keep, e.g. into an Asio post).
    std::function<void(std::span<const uint8_t>, const wg_endpoint&, uint16_t socket)> on_control;
};

struct relay_forwarder_stats {
    uint64_t rx_packets = 0, rx_bytes = 0;
    uint64_t forwarded_packets = 0, forwarded_bytes = 0;
    uint64_t control_packets = 0;
    uint64_t malformed = 0;       // neither RELAY_DATA nor control, or a truncated datagram
    uint64_t nat_keepalives = 0;  // NAT_KEEPALIVEs from nodes (wire_codec.hpp): dropped, counted
    uint64_t no_socket = 0;       // destination family has no socket
    uint64_t send_failed = 0;     // kernel refused: socket buffer full or unreachable
    uint64_t oversize = 0;        // of send_failed: above the route's MTU (EMSGSIZE; DF is set)
    std::array<uint64_t, relay_drop_count> table_drops{};  // see relay_drop
    uint64_t kept_evicted = 0;  // idle kept sessions evicted for new ones (table full)
    std::array<uint64_t, relay_refusal_count> table_refusals{};  // see relay_refusal
    uint64_t batches = 0;  // recvmmsg calls that returned data (packets/batches = batching)
};

class relay_forwarder {
public:
    // Opens the sockets and starts the loop thread.
    static result<std::unique_ptr<relay_forwarder>> start(relay_forwarder_config config);
    ~relay_forwarder();
    relay_forwarder(const relay_forwarder&) = delete;
    relay_forwarder& operator=(const relay_forwarder&) = delete;

    // Stops the loop and joins it; idempotent. Sockets stay open until destruction.
    void stop();

    // The bound addresses, in config order (ephemeral ports resolved).
    std::vector<wg_endpoint> local_endpoints() const;

    // Runs f(table, now_ms) under the table lock: session set-up from the control plane.
    template <class F>
    auto with_table(F&& f) {
        std::lock_guard lock(table_mutex_);
        return f(table_, now_ms());
    }

    // Sends a control datagram from the socket that serves `to`'s family (thread-safe).
    status send_control(std::span<const uint8_t> datagram, const wg_endpoint& to);

    relay_forwarder_stats stats() const;
    pid_t thread_id() const noexcept { return tid_.load(); }

    // The clock the table sees (CLOCK_MONOTONIC, ms).
    static uint64_t now_ms() noexcept;

private:
    struct socket_slot {
        unique_fd fd;
        int family = 0;
        bool dual_stack = false;
        std::unique_ptr<send_batch> out;
    };

    explicit relay_forwarder(relay_forwarder_config config);
    void run() noexcept;
    void drain(size_t socket) noexcept;
    int socket_for(const relay_addr& to) const noexcept;
    int socket_for(const relay_addr& to, uint16_t via) const noexcept;

    relay_forwarder_config config_;
    std::vector<socket_slot> sockets_;
    int v4_socket_ = -1, v6_socket_ = -1;  // index into sockets_
    unique_fd epoll_, stop_event_;
    recv_batch rx_;
    std::vector<uint32_t> control_idx_;  // datagrams of the current batch for on_control

    mutable std::mutex table_mutex_;
    relay_session_table table_;

    // Written by the loop once per batch, read by stats() from any thread.
    struct counters {
        std::atomic<uint64_t> rx_packets{0}, rx_bytes{0}, forwarded_packets{0}, forwarded_bytes{0},
            control_packets{0}, malformed{0}, nat_keepalives{0}, no_socket{0}, send_failed{0},
            oversize{0}, batches{0};
    } counters_;

    std::atomic<pid_t> tid_{0};
    std::thread thread_;
};

}  // namespace mw::meshd
