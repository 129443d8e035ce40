#include "meshd/io/recv_batch.hpp"

#include <cerrno>

namespace mw::meshd {

recv_batch::recv_batch(size_t count, size_t buffer_size, size_t headroom)
    : buffer_size_(buffer_size),
      headroom_(headroom),
      // Cache-line aligned strides so neighbouring datagrams never share a line.
      stride_((headroom + buffer_size + 63) & ~size_t(63)),
      storage_(count * stride_),
      msgs_(count),
      iovs_(count),
      names_(count) {}

int recv_batch::recv(int fd) noexcept {
    // The kernel overwrites msg_namelen, msg_flags and msg_len, so reset what it reads.
    for (size_t i = 0; i < msgs_.size(); ++i) {
        iovs_[i] = {data(i), buffer_size_};
        msghdr& h = msgs_[i].msg_hdr;
        h = msghdr{};
        h.msg_name = &names_[i];
        h.msg_namelen = sizeof(sockaddr_storage);
        h.msg_iov = &iovs_[i];
        h.msg_iovlen = 1;
        msgs_[i].msg_len = 0;
    }
    int n =
        ::recvmmsg(fd, msgs_.data(), static_cast<unsigned>(msgs_.size()), MSG_DONTWAIT, nullptr);
    if (n >= 0) return n;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
}

}  // namespace mw::meshd
