#include "meshd/io/send_batch.hpp"

#include <netinet/udp.h>

#include <cerrno>
#include <cstring>

namespace mw::meshd {

namespace {

// The kernel's limits for one GSO send: UDP_MAX_SEGMENTS (64 on older kernels) and one IP
// datagram's worth of payload.
constexpr size_t max_gso_segments = 64;
constexpr size_t max_gso_bytes = 65000;

}  // namespace

send_batch::send_batch(size_t capacity, bool gso)
    : gso_(gso),
      msgs_(capacity),
      gso_msgs_(gso ? capacity : 0),
      gso_cmsg_(gso ? capacity : 0),
      gso_first_(gso ? capacity + 1 : 0),
      iovs_(capacity),
      names_(capacity) {}

void send_batch::add_to(outcome& total, const outcome& part) noexcept {
    total.packets += part.packets;
    total.bytes += part.bytes;
    total.failed += part.failed;
    total.oversize += part.oversize;
}

bool send_batch::same_destination(size_t a, size_t b) const noexcept {
    const msghdr& x = msgs_[a].msg_hdr;
    const msghdr& y = msgs_[b].msg_hdr;
    return x.msg_namelen == y.msg_namelen &&
           std::memcmp(x.msg_name, y.msg_name, x.msg_namelen) == 0;
}

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
    if (gso_ && count_ > 1) return flush_gso(fd);
    return flush_plain(fd);
}

send_batch::outcome send_batch::flush_gso(int fd) noexcept {
    // Runs: [gso_first_[m], gso_first_[m + 1]) share a destination and a segment size.
    size_t runs = 0;
    for (size_t i = 0; i < count_;) {
        const size_t seg = iovs_[i].iov_len;
        size_t bytes = seg, j = i + 1;
        while (j < count_ && j - i < max_gso_segments && iovs_[j].iov_len <= seg &&
               bytes + iovs_[j].iov_len <= max_gso_bytes && same_destination(i, j)) {
            bytes += iovs_[j].iov_len;
            if (iovs_[j++].iov_len < seg) break;  // only the last segment may be shorter
        }
        msghdr& h = gso_msgs_[runs].msg_hdr;
        h = msgs_[i].msg_hdr;
        h.msg_iov = &iovs_[i];
        h.msg_iovlen = j - i;
        if (j - i > 1) {
            auto& buf = gso_cmsg_[runs];
            buf.fill(0);
            h.msg_control = buf.data();
            h.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
            cmsghdr* c = CMSG_FIRSTHDR(&h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t gso_size = uint16_t(seg);
            std::memcpy(CMSG_DATA(c), &gso_size, sizeof gso_size);
        }
        gso_first_[runs++] = uint32_t(i);
        i = j;
    }
    gso_first_[runs] = uint32_t(count_);

    outcome out;
    size_t off = 0;
    while (off < runs) {
        int n =
            ::sendmmsg(fd, gso_msgs_.data() + off, static_cast<unsigned>(runs - off), MSG_DONTWAIT);
        if (n > 0) {
            for (size_t r = off; r < off + size_t(n); ++r) {
                for (size_t k = gso_first_[r]; k < gso_first_[r + 1]; ++k) {
                    out.bytes += iovs_[k].iov_len;
                }
                out.packets += gso_first_[r + 1] - gso_first_[r];
            }
            off += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            out.failed += count_ - gso_first_[off];
            break;
        }
        const size_t first = gso_first_[off], last = gso_first_[off + 1];
        if (n < 0 && last - first > 1) {
            if (errno == EIO || errno == EOPNOTSUPP || errno == ENOPROTOOPT) {
                // This kernel or route cannot do UDP GSO (e.g. no checksum offload, xfrm):
                // send the rest one datagram at a time and never try GSO again here.
                gso_ = false;
                add_to(out, flush_range(fd, first, count_));
                break;
            }
            // Anything else (EMSGSIZE when the segment size exceeds the route's MTU, where a
            // plain send would fragment; EINVAL): send this run plainly, which also reports a
            // genuinely bad destination per datagram. GSO stays on for other runs.
            add_to(out, flush_range(fd, first, last));
            ++off;
            continue;
        }
        // A per-destination error (e.g. unreachable): drop that run, keep going.
        out.failed += gso_first_[off + 1] - gso_first_[off];
        ++off;
    }
    count_ = 0;
    return out;
}

send_batch::outcome send_batch::flush_plain(int fd) noexcept {
    outcome out = flush_range(fd, 0, count_);
    count_ = 0;
    return out;
}

send_batch::outcome send_batch::flush_range(int fd, size_t from, size_t to) noexcept {
    outcome out;
    size_t off = from;
    while (off < to) {
        int n = ::sendmmsg(fd, msgs_.data() + off, static_cast<unsigned>(to - off), MSG_DONTWAIT);
        if (n > 0) {
            for (size_t i = off; i < off + size_t(n); ++i) out.bytes += iovs_[i].iov_len;
            out.packets += n;
            off += n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            // The socket buffer is full: the rest of this batch would block. Drop it.
            out.failed += to - off;
            break;
        }
        // sendmmsg reports an error only for the first datagram (e.g. EINVAL for an address the
        // socket cannot reach, ENETUNREACH; EMSGSIZE above the MTU, never fragmented): drop that
        // one, keep sending the others.
        if (n < 0 && errno == EMSGSIZE) ++out.oversize;
        ++out.failed;
        ++off;
    }
    return out;
}

}  // namespace mw::meshd
