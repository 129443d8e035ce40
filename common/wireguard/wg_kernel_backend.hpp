// Kernel WireGuard: the link is created with rtnetlink (kind "wireguard"), the device is
// configured with the WireGuard generic-netlink family. Both sockets are opened inside the
// configured network namespace (on a helper thread) and then used from the caller's thread.
#pragma once

#include <libmnl/libmnl.h>

#include <mutex>

#include "common/wireguard/wg_backend.hpp"
#include "common/wireguard/wg_genl.hpp"

namespace mw {

class wg_kernel_backend final : public wg_backend {
public:
    explicit wg_kernel_backend(wg_backend_options o);
    ~wg_kernel_backend() override;

    std::string_view kind() const override { return "kernel"; }
    status up() override;
    status down() override;
    result<wg_device> get() override;
    status set(const wg_device_update& u) override;
    wg_backend_stats stats() const override;
    // The kernel device is never re-created behind the caller's back: no hook to call.
    void set_restart_hook(std::function<void()> /*hook*/) override {}

    // The error for a kernel without WireGuard, naming the userspace fallback.
    static error no_module_error(const std::string& ifname, const std::string& detail);

private:
    status ensure_socket();
    status send_and_ack(const wg_genl::message& msg, const std::string& what);

    std::mutex mu_;
    mnl_socket* sock_ = nullptr;
    uint32_t portid_ = 0;
    uint32_t seq_ = 0;
    uint16_t family_id_ = 0;
    mutable std::mutex stats_mu_;
    wg_backend_stats stats_;
};

}  // namespace mw
