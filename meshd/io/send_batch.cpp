#include "meshd/io/send_batch.hpp"

#include <cerrno>

namespace mw::meshd {

send_batch::send_batch(size_t capacity) : msgs_(capacity), iovs_(capacity), names_(capacity) {}

bool send_batch::add(const uint8_t* data, size_t len, const relay_addr& to,
                     int socket_family) noexcept {
    if (count_ == msgs_.size()) return false;
    iovs_[count_] = {const_cast<uint8_t*>(data), len};
    msghdr& h = msgs_[count_].msg_hdr;
    h = msghdr{};
    h.msg_namelen = to.to_sockaddr(names_[count_], socket_family);
    h.msg_name = &names_[count_];
    h.msg_iov = &iovs_[count_];
    h.msg_iovlen = 1;
    ++count_;
    return true;
}

send_batch::outcome send_batch::flush(int fd) noexcept {
    outcome out;
    size_t off = 0;
    while (off < count_) {
        int n =
            ::sendmmsg(fd, msgs_.data() + off, static_cast<unsigned>(count_ - off), MSG_DONTWAIT);
        if (n > 0) {
            for (size_t i = off; i < off + size_t(n); ++i) out.bytes += iovs_[i].iov_len;
            out.packets += n;
            off += n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            // The socket buffer is full: the rest of this batch would block. Drop it.
            out.failed += count_ - off;
            break;
        }
        // sendmmsg reports an error only for the first datagram (e.g. EINVAL for an address the
        // socket cannot reach, ENETUNREACH): drop that one, keep sending the others.
        ++out.failed;
        ++off;
    }
    count_ = 0;
    return out;
}

}  // namespace mw::meshd
