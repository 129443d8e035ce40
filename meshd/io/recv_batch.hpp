// Preallocated receive side of a recvmmsg() batch: `count` buffers of `buffer_size` bytes, each
// with `headroom` bytes reserved in front of where the datagram lands. The headroom is what lets
// relay_proxy prepend the RELAY_DATA header in place (no copy); the forwarder uses none. All
// memory is allocated once here; recv() only refills lengths and address sizes.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace mw::meshd {

class recv_batch {
public:
    recv_batch(size_t count, size_t buffer_size, size_t headroom = 0);
    recv_batch(const recv_batch&) = delete;
    recv_batch& operator=(const recv_batch&) = delete;

    // One non-blocking recvmmsg(): how many datagrams arrived (0 when none), or -errno.
    int recv(int fd) noexcept;

    size_t capacity() const noexcept { return msgs_.size(); }
    size_t buffer_size() const noexcept { return buffer_size_; }
    // Datagram i of the last recv(): its bytes (headroom bytes in front of data() are ours).
    uint8_t* data(size_t i) noexcept { return storage_.data() + i * stride_ + headroom_; }
    size_t size(size_t i) const noexcept { return msgs_[i].msg_len; }
    std::span<uint8_t> datagram(size_t i) noexcept { return {data(i), size(i)}; }
    // Larger than buffer_size: the kernel cut it (MSG_TRUNC); never forward such a datagram.
    bool truncated(size_t i) const noexcept { return msgs_[i].msg_hdr.msg_flags & MSG_TRUNC; }
    const sockaddr_storage& from(size_t i) const noexcept { return names_[i]; }
    socklen_t from_len(size_t i) const noexcept { return msgs_[i].msg_hdr.msg_namelen; }

private:
    size_t buffer_size_, headroom_, stride_;
    std::vector<uint8_t> storage_;
    std::vector<mmsghdr> msgs_;
    std::vector<iovec> iovs_;
    std::vector<sockaddr_storage> names_;
};

}  // namespace mw::meshd
