#include "common/wireguard/wg_kernel_backend.hpp"

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/wireguard.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>

#include "common/log.hpp"
#include "common/netns.hpp"
#include "common/nl_attr.hpp"
#include "common/nl_socket.hpp"
#include "common/rtnl.hpp"

namespace mw {

namespace {

constexpr size_t k_recv_size = 1 << 16;

result<mnl_socket*> open_genl() {
    return nl::open_socket(NETLINK_GENERIC, "generic netlink");
}

// Receives the answer to `seq`: data messages go to cb; ends at the ack, NLMSG_DONE or an error.
status receive(mnl_socket* s, uint32_t portid, uint32_t seq, const std::string& what,
               const std::function<status(const nlmsghdr*)>& cb, uint64_t& bytes) {
    std::vector<char> buf(k_recv_size);
    status cb_status;
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(s, buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return error::from_errno(errno, what + ": receiving netlink answer");
        }
        bytes += static_cast<uint64_t>(n);
        const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
        int len = static_cast<int>(n);
        // mnl_nlmsg_ok compares lengths as int; the unsigned bound keeps a bogus length in check.
        for (; mnl_nlmsg_ok(nlh, len) && nlh->nlmsg_len <= static_cast<unsigned>(len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_seq != seq || nlh->nlmsg_pid != portid) continue;
            if (nlh->nlmsg_type == NLMSG_ERROR) {
                const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
                if (err->error == 0) return cb_status;
                int e = -err->error;
                std::string msg = what + ": " + std::strerror(e);
                std::string ext = nl::extack_text(nlh);
                if (!ext.empty()) msg += " (kernel: " + ext + ")";
                return error(std::error_code(e, std::system_category()), msg);
            }
            if (nlh->nlmsg_type == NLMSG_DONE) return cb_status;
            if (cb && cb_status) cb_status = cb(nlh);
        }
    }
}

}  // namespace

wg_kernel_backend::wg_kernel_backend(wg_backend_options o) : wg_backend(std::move(o)) {
    seq_ = static_cast<uint32_t>(time(nullptr));
}

wg_kernel_backend::~wg_kernel_backend() {
    if (sock_) mnl_socket_close(sock_);
}

wg_backend_stats wg_kernel_backend::stats() const {
    std::lock_guard lk(stats_mu_);
    return stats_;
}

error wg_kernel_backend::no_module_error(const std::string& ifname, const std::string& detail) {
    return error(errc::unsupported,
                 "kernel WireGuard is not available for " + ifname + " (" + detail +
                     "); load the wireguard module or use the userspace backend "
                     "(wireguard.backend: userspace or auto, which runs wireguard-go)");
}

status wg_kernel_backend::ensure_socket() {
    if (sock_) return {};
    std::function<result<mnl_socket*>()> opener = [] { return open_genl(); };
    result<mnl_socket*> s = opts_.netns_path.empty() ? open_genl() : [&]() -> result<mnl_socket*> {
        auto ns = MW_TRY(netns::open(opts_.netns_path));
        return ns.run_value<mnl_socket*>(opener);
    }();
    if (!s) return std::move(s).err();
    mnl_socket* sock = *s;
    uint32_t portid = mnl_socket_get_portid(sock);

    // Resolve the family id of "wireguard" (dynamic, assigned when the module registers).
    char buf[256];
    std::memset(buf, 0, sizeof buf);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = GENL_ID_CTRL;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = ++seq_;
    auto* g = static_cast<genlmsghdr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(genlmsghdr)));
    g->cmd = CTRL_CMD_GETFAMILY;
    g->version = 1;
    mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, WG_GENL_NAME);
    if (mnl_socket_sendto(sock, nlh, nlh->nlmsg_len) < 0) {
        int e = errno;
        mnl_socket_close(sock);
        return error::from_errno(e, "resolving generic netlink family wireguard");
    }
    uint16_t id = 0;
    uint64_t bytes = 0;
    auto st = receive(
        sock, portid, nlh->nlmsg_seq, "CTRL_CMD_GETFAMILY wireguard",
        [&](const nlmsghdr* m) -> status {
            nl::for_each_attr(m, sizeof(genlmsghdr), [&](const nlattr* a) {
                if (mnl_attr_get_type(a) == CTRL_ATTR_FAMILY_ID &&
                    mnl_attr_get_payload_len(a) == 2) {
                    id = mnl_attr_get_u16(a);
                }
            });
            return {};
        },
        bytes);
    if (!st || id == 0) {
        mnl_socket_close(sock);
        if (!st && !st.err().is_errno(ENOENT)) return st;
        return no_module_error(opts_.ifname, "no generic netlink family \"wireguard\"");
    }
    sock_ = sock;
    portid_ = portid;
    family_id_ = id;
    return {};
}

status wg_kernel_backend::up() {
    MW_TRY_STATUS(validate_ifname(opts_.ifname));
    auto nl = MW_TRY(rtnl::open_at(opts_.netns_path));
    auto link = nl.get_link(opts_.ifname);
    if (link) {
        // Keep an existing device: a restarted meshd must not interrupt a working data path.
        if (link->kind != "wireguard") {
            return error(errc::already_exists, "interface " + opts_.ifname + " exists but is a \"" +
                                                   link->kind + "\" link, not wireguard");
        }
    } else if (!link.err().is_errno(ENODEV)) {
        return std::move(link).err();
    } else {
        auto st = nl.create_link(opts_.ifname, "wireguard");
        if (!st) {
            if (st.err().is_errno(EOPNOTSUPP) || st.err().is_errno(ENOENT)) {
                return no_module_error(opts_.ifname, st.err().message);
            }
            return st;
        }
        log::info("created kernel wireguard interface", {{"interface", opts_.ifname}});
    }
    std::lock_guard lk(mu_);
    return ensure_socket();
}

status wg_kernel_backend::down() {
    auto nl = MW_TRY(rtnl::open_at(opts_.netns_path));
    auto link = nl.get_link(opts_.ifname);
    if (!link) return link.err().is_errno(ENODEV) ? status{} : status(std::move(link).err());
    if (link->kind != "wireguard") {
        return error(errc::invalid_argument,
                     opts_.ifname + " is not a wireguard link; not deleting it");
    }
    return nl.delete_link(link->index);
}

status wg_kernel_backend::send_and_ack(const wg_genl::message& msg, const std::string& what) {
    std::vector<char> copy = msg;
    auto* nlh = reinterpret_cast<nlmsghdr*>(copy.data());
    nlh->nlmsg_seq = ++seq_;
    if (mnl_socket_sendto(sock_, copy.data(), copy.size()) < 0) {
        return error::from_errno(errno, what + ": sending netlink request");
    }
    uint64_t bytes = 0;
    auto st = receive(sock_, portid_, nlh->nlmsg_seq, what, nullptr, bytes);
    std::lock_guard lk(stats_mu_);
    ++stats_.messages_sent;
    stats_.bytes_sent += copy.size();
    stats_.bytes_received += bytes;
    return st;
}

result<wg_device> wg_kernel_backend::get() {
    std::lock_guard lk(mu_);
    MW_TRY_STATUS(ensure_socket());
    auto msg = wg_genl::encode_get(opts_.ifname, family_id_);
    auto* nlh = reinterpret_cast<nlmsghdr*>(msg.data());
    nlh->nlmsg_seq = ++seq_;
    std::string what = "WG_CMD_GET_DEVICE " + opts_.ifname;
    if (mnl_socket_sendto(sock_, msg.data(), msg.size()) < 0) {
        return error::from_errno(errno, what + ": sending netlink request");
    }
    wg_device dev;
    uint64_t bytes = 0;
    auto st = receive(
        sock_, portid_, nlh->nlmsg_seq, what,
        [&](const nlmsghdr* m) { return wg_genl::decode_get(m, dev); }, bytes);
    {
        std::lock_guard sl(stats_mu_);
        ++stats_.get_calls;
        ++stats_.messages_sent;
        stats_.bytes_sent += msg.size();
        stats_.bytes_received += bytes;
    }
    if (!st) return std::move(st).err();
    if (!dev.listen_port) dev.listen_port = 0;
    return dev;
}

status wg_kernel_backend::set(const wg_device_update& u) {
    if (u.empty()) return {};
    std::lock_guard lk(mu_);
    MW_TRY_STATUS(ensure_socket());
    auto msgs = MW_TRY(wg_genl::encode_set(u, opts_.ifname, family_id_, opts_.max_message_size));
    for (size_t i = 0; i < msgs.size(); ++i) {
        MW_TRY_STATUS(send_and_ack(msgs[i], "WG_CMD_SET_DEVICE " + opts_.ifname + " (message " +
                                                std::to_string(i + 1) + "/" +
                                                std::to_string(msgs.size()) + ")"));
    }
    std::lock_guard sl(stats_mu_);
    ++stats_.set_calls;
    return {};
}

}  // namespace mw
