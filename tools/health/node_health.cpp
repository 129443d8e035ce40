#include "tools/health/node_health.hpp"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.hpp"
#include "meshctl/control_client.hpp"
#include "meshctl/meshctl_format.hpp"

namespace mw::tools {

namespace {

// IFF_UP of `ifname` by SIOCGIFFLAGS: works without any capability, in the probe's namespace
// (the DaemonSet runs on the host network, where meshd's interface is).
result<bool> interface_up(const std::string& ifname) {
    unique_fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) return error::from_errno(errno, "socket");
    ifreq req{};
    if (ifname.size() >= sizeof req.ifr_name)
        return error(errc::invalid_argument, "interface name too long: " + ifname);
    std::memcpy(req.ifr_name, ifname.c_str(), ifname.size());
    if (::ioctl(s.get(), SIOCGIFFLAGS, &req) != 0)
        return error::from_errno(errno, "WireGuard interface " + ifname);
    return (req.ifr_flags & IFF_UP) != 0;
}

// wireguard-go serves its UAPI on <dir>/<ifname>.sock while it runs.
status uapi_answers(const std::string& path) {
    unique_fd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) return error::from_errno(errno, "socket");
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path) return error(errc::invalid_argument, "path too long");
    std::memcpy(a.sun_path, path.c_str(), path.size());
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        return error::from_errno(errno, "wireguard-go UAPI socket " + path);
    return {};
}

}  // namespace

result<node_health_report> node_health::check() const {
    std::string line = meshctl::build_request("status", "", 0).dump() + "\n";
    auto answer = meshctl::exchange(opts_.socket, line, opts_.timeout);
    if (!answer) return answer.err().wrap("meshd not answering");
    auto resp = meshctl::parse_response(*answer);
    if (!resp) return resp.err().wrap("meshd answered garbage");
    if (!resp->ok) return error(errc::protocol_error, "meshd: " + resp->error);
    const auto& node = resp->result.value("node", nlohmann::json::object());
    node_health_report r;
    r.interface = node.value("interface", "");
    r.backend = node.value("backend", "");
    if (r.interface.empty())
        return error(errc::protocol_error, "meshd's status names no WireGuard interface");
    auto up = interface_up(r.interface);
    if (!up) return up.err();
    if (!*up) return error(errc::state_mismatch, "WireGuard interface " + r.interface + " is down");
    if (r.backend == "userspace")
        MW_TRY_STATUS(uapi_answers(opts_.wg_socket_dir + "/" + r.interface + ".sock"));
    return r;
}

}  // namespace mw::tools
