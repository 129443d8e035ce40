#include "common/nl_socket.hpp"

#include <linux/netlink.h>
#include <sys/socket.h>

#include <cerrno>

#include "common/nl_attr.hpp"

namespace mw::nl {

result<mnl_socket*> open_socket(int bus, const char* what) {
    mnl_socket* s = mnl_socket_open2(bus, SOCK_CLOEXEC);
    if (!s) return error::from_errno(errno, std::string("opening ") + what + " socket");
    int one = 1;
    // Extended acks give the kernel's reason for a refusal; capped acks keep error messages small.
    mnl_socket_setsockopt(s, NETLINK_EXT_ACK, &one, sizeof one);
    mnl_socket_setsockopt(s, NETLINK_CAP_ACK, &one, sizeof one);
    if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
        int e = errno;
        mnl_socket_close(s);
        return error::from_errno(e, std::string("binding ") + what + " socket");
    }
    return s;
}

std::string extack_text(const nlmsghdr* nlh) {
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return {};
    const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    // With NETLINK_CAP_ACK (NLM_F_CAPPED) only the request header is echoed before the TLVs.
    size_t off = sizeof(nlmsgerr);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) off += err->msg.nlmsg_len - sizeof(nlmsghdr);
    size_t hdr = MNL_NLMSG_HDRLEN + MNL_ALIGN(off);
    if (nlh->nlmsg_len <= hdr) return {};
    const auto* a = reinterpret_cast<const nlattr*>(reinterpret_cast<const char*>(nlh) + hdr);
    int len = static_cast<int>(nlh->nlmsg_len - hdr);
    for (; mnl_attr_ok(a, len); a = mnl_attr_next(a)) {
        if (mnl_attr_get_type(a) == NLMSGERR_ATTR_MSG) return attr_string(a);
    }
    return {};
}

}  // namespace mw::nl
