// One interface over the two ways a WireGuard device is driven: the kernel module (rtnetlink +
// WireGuard generic netlink) and wireguard-go (supervised process + UAPI socket). meshd and
// meshctl only see this class; the reconciler computes what to change and calls set().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "common/wireguard/wg_device.hpp"
#include "common/wireguard/wg_update.hpp"

namespace mw {

struct wg_backend_options {
    std::string ifname = "meshwire0";
    // Network namespace the interface lives in ("" = the caller's). Only the I/O threads switch.
    std::string netns_path;

    // Userspace backend.
    std::string wireguard_go = "wireguard-go";  // looked up in PATH
    std::string socket_dir = "/var/run/wireguard";
    std::chrono::milliseconds start_timeout{10000};  // process start until its socket answers
    std::chrono::milliseconds io_timeout{30000};     // one UAPI request
    std::string go_log_level = "error";              // wireguard-go's LOG_LEVEL

    // Kernel backend: upper bound of one WG_CMD_SET_DEVICE message; larger peer sets are split.
    size_t max_message_size = 32768;
};

// What a backend has done, for tests and benchmarks (reconcile cost is proven by these).
struct wg_backend_stats {
    uint64_t set_calls = 0;  // set() calls that reached the device
    uint64_t get_calls = 0;
    uint64_t messages_sent = 0;  // netlink messages / UAPI requests
    uint64_t bytes_sent = 0;     // bytes written to the socket (netlink or UAPI text)
    uint64_t bytes_received = 0;
    uint64_t restarts = 0;  // userspace: wireguard-go restarts after it died
};

class wg_backend {
public:
    virtual ~wg_backend() = default;
    virtual std::string_view kind() const = 0;  // "kernel" or "userspace"
    const std::string& ifname() const { return opts_.ifname; }
    const wg_backend_options& options() const { return opts_; }

    // Makes the device exist (idempotent: an existing device of the right kind is kept, so a
    // restarted meshd never tears down a working data path).
    virtual status up() = 0;
    // Removes the device (kernel: deletes the link; userspace: stops wireguard-go cleanly).
    virtual status down() = 0;
    virtual result<wg_device> get() = 0;
    // Applies one update. Callers validate first; the backend only encodes and sends.
    virtual status set(const wg_device_update& u) = 0;
    virtual wg_backend_stats stats() const = 0;
    // Called (from a backend thread, without backend locks held) after the device had to be
    // re-created behind the caller's back and its WireGuard state was restored — e.g. after
    // wireguard-go died. The link is new then, so link-level state (up, addresses, routes) must
    // be re-applied by the hook's owner. By value: a backend keeps it (moves it in).
    virtual void set_restart_hook(std::function<void()> hook) = 0;

protected:
    explicit wg_backend(wg_backend_options o) : opts_(std::move(o)) {}
    wg_backend_options opts_;
};

// True when the kernel here can create WireGuard links (module loaded or built in).
// `why` says how that was decided, for the log.
bool kernel_wireguard_available(const std::string& netns_path, std::string* why);

// For readers of an interface someone else drives (meshctl): a backend of the kind the existing
// interface is — userspace when its UAPI socket exists, kernel when it is a wireguard link — on
// which get() works without up(). Never creates or stops anything.
result<std::unique_ptr<wg_backend>> attach_wg_backend(const wg_backend_options& opts);

// backend: "auto" | "kernel" | "userspace". auto picks the kernel when the module is available
// and logs which backend it chose and why.
result<std::unique_ptr<wg_backend>> make_wg_backend(std::string_view kind,
                                                    const wg_backend_options& opts);

}  // namespace mw
