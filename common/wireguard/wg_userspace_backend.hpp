// Userspace WireGuard: runs `wireguard-go -f <ifname>` and configures it over its UAPI socket.
// A supervisor thread owns the process: it starts it (inside the configured network namespace),
// waits for the socket, and when it dies unexpectedly starts it again and re-applies the full
// state set so far, then calls the restart hook.
//
// Crash survival (issue 14 §3): wireguard-go runs in its own session (no PR_SET_PDEATHSIG), so a
// meshd killed with SIGKILL leaves the interface, its peers and the pod routes through it in
// place and direct pairs lose nothing. A clean stop (down(), meshd's SIGTERM/SIGINT path) still
// stops it. up() adopts a wireguard-go it finds serving the interface (socket answers, link
// exists): its pid comes from SO_PEERCRED on the UAPI socket, it is supervised through a pidfd
// (it is not our child), and the state it holds is taken as the state applied so far, so the
// reconciler's first full sync changes only what differs. One whose link is gone is stale and
// is stopped; a socket nobody answers on is removed.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "common/wireguard/wg_backend.hpp"

namespace mw {

// What up() does with what it finds at the interface's UAPI socket (pure, unit-tested).
enum class wg_existing_action {
    start,         // nothing serves the socket: start our own wireguard-go
    adopt,         // a wireguard-go serves the interface: supervise it, keep its state
    remove_stale,  // it answers but its interface is gone: stop it, remove the socket, start
    refuse,        // it answers but we cannot tell which process it is
};
struct wg_existing_probe {
    bool socket_answers = false;
    pid_t socket_pid = -1;  // SO_PEERCRED of the socket's server, -1 if unknown
    bool link_exists = false;
};
struct wg_existing_decision {
    wg_existing_action action = wg_existing_action::start;
    std::string reason;  // for the log
};
wg_existing_decision decide_existing(const wg_existing_probe& p);

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
    // True when up() adopted a wireguard-go a previous meshd started.
    bool adopted() const;

private:
    void supervise(bool adopted);
    // Blocks until the process behind pidfd_ exits; reaps it when it is our child.
    std::string wait_exit();
    void forget_process_locked();  // pid_ is gone: close its pidfd
    // Probes what serves socket_path() now and acts on it: adopt (pid_, pidfd_, applied_ set),
    // or stop a stale one. Returns whether it adopted.
    result<bool> take_over_existing();
    // Starts the child and waits for its socket; on failure the child is gone again.
    status start_child();
    // One UAPI request/answer on a fresh connection.
    result<std::string> transact(const std::string& request);
    status restore_state();
    void stop_child();

    mutable std::mutex mu_;  // pid_, stopping_, started_, start_result_, hook_
    std::condition_variable cv_;
    pid_t pid_ = -1;
    int pidfd_ = -1;  // pidfd of pid_ (child or adopted); owned by the supervisor
    bool adopted_ = false;
    bool child_ = false;  // pid_ is our child (reaped with waitpid)
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
