// Preallocated send side of a sendmmsg() batch. add() only points an iovec at bytes the caller
// owns (a recv_batch buffer, forwarded as is) and writes the destination address into a slot
// reserved here; flush() hands the whole batch to the kernel in as few syscalls as it takes.
// Datagrams the kernel will not take right now (socket buffer full) are dropped and counted:
// queueing them would need memory proportional to the backlog, and UDP senders retransmit anyway
// (WireGuard carries TCP, which does).
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "meshd/core/relay_addr.hpp"

namespace mw::meshd {

class send_batch {
public:
    // With `gso`, consecutive datagrams to one destination of one size (the last may be shorter)
    // go to the kernel as one UDP GSO send (UDP_SEGMENT): one pass through the UDP/IP stack and
    // routing for up to 64 datagrams instead of one each; the receiver still gets separate
    // datagrams. If the kernel refuses GSO, the batch falls back to plain sends for good.
    explicit send_batch(size_t capacity, bool gso = false);
    send_batch(const send_batch&) = delete;
    send_batch& operator=(const send_batch&) = delete;

    // False when full (the caller flushes first). `socket_family` is the sending socket's family.
    bool add(const uint8_t* data, size_t len, const relay_addr& to, int socket_family) noexcept;
    size_t size() const noexcept { return count_; }
    bool empty() const noexcept { return count_ == 0; }
    bool full() const noexcept { return count_ == msgs_.size(); }

    struct outcome {
        uint64_t packets = 0, bytes = 0;  // accepted by the kernel
        uint64_t failed = 0;              // dropped: buffer full or a per-destination error
        uint64_t oversize = 0;  // of `failed`: EMSGSIZE, above the route's (path) MTU (DF is set)
    };
    // Sends everything added since the last flush on `fd` and empties the batch.
    outcome flush(int fd) noexcept;

private:
    outcome flush_plain(int fd) noexcept;
    outcome flush_range(int fd, size_t from, size_t to) noexcept;  // plain sends, count_ kept
    static void add_to(outcome& total, const outcome& part) noexcept;
    outcome flush_gso(int fd) noexcept;
    bool same_destination(size_t a, size_t b) const noexcept;

    bool gso_;
    std::vector<mmsghdr> msgs_;
    // GSO: one coalesced message per run of datagrams, its control buffer and segment count.
    std::vector<mmsghdr> gso_msgs_;
    std::vector<std::array<uint8_t, 32>> gso_cmsg_;
    std::vector<uint32_t> gso_first_;
    std::vector<iovec> iovs_;
    std::vector<sockaddr_storage> names_;
    size_t count_ = 0;
};

}  // namespace mw::meshd
