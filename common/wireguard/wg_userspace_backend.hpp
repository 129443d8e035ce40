// Userspace WireGuard: runs `wireguard-go -f <ifname>` and configures it over its UAPI socket.
// A supervisor thread owns the child process: it starts it (inside the configured network
// namespace), waits for the socket, and when the child dies unexpectedly starts it again and
// re-applies the full state set so far, then calls the restart hook. The child is started from the
// supervisor thread with PR_SET_PDEATHSIG, so it dies with us even if we crash.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/wireguard/wg_backend.hpp"

namespace mw {

class wg_userspace_backend final : public wg_backend {
public:
    explicit wg_userspace_backend(wg_backend_options o);
    ~wg_userspace_backend() override;  // stops wireguard-go and removes its socket

    std::string_view kind() const override { return "userspace"; }
    status up() override;
    status down() override;
    result<wg_device> get() override;
    status set(const wg_device_update& u) override;
    wg_backend_stats stats() const override;
    void set_restart_hook(std::function<void()> hook) override;

    std::string socket_path() const { return opts_.socket_dir + "/" + opts_.ifname + ".sock"; }
    // The running wireguard-go's pid, or -1 (tests kill it to exercise supervision).
    pid_t pid() const;

private:
    void supervise();
    // Starts the child and waits for its socket; on failure the child is gone again.
    status start_child();
    // One UAPI request/answer on a fresh connection.
    result<std::string> transact(const std::string& request);
    status restore_state();
    void stop_child();

    mutable std::mutex mu_;  // pid_, stopping_, started_, start_result_, hook_
    std::condition_variable cv_;
    pid_t pid_ = -1;
    bool stopping_ = false;
    bool start_done_ = false;
    status start_result_;
    std::thread supervisor_;
    std::function<void()> hook_;

    std::mutex io_mu_;   // serializes UAPI requests and guards applied_/has_state_/stats_
    wg_device applied_;  // everything set so far: what a restarted wireguard-go gets back
    bool has_state_ = false;
    mutable std::mutex stats_mu_;
    wg_backend_stats stats_;
};

}  // namespace mw
