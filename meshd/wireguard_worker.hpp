// Runs every WireGuard call (the reconciler's apply, the device read for meshctl) on its own
// thread and posts the results back to the core's io_context. A UAPI request to wireguard-go may
// block for up to its 30 s timeout (a stopped or overloaded process), and a netlink call to the
// kernel for a while under load: on the core's thread that stalled the 100 ms relay probes and
// the control socket with it.
//
// Ordering: calls run one at a time in the order they were made. Applies are coalesced: an apply
// made while another waits replaces the waiting one (the reconciler drives the device towards a
// desired state, so only the latest state matters and none is applied twice); its callback is then
// dropped. The one running is never abandoned. Private keys are wiped after use.
#pragma once

#include <boost/asio.hpp>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>

#include "common/result.hpp"
#include "common/wireguard/wg_backend.hpp"
#include "common/wireguard/wg_reconciler.hpp"

namespace mw::meshd {

class wireguard_worker {
public:
    using apply_fn = std::function<void(result<wg_reconcile_report>)>;
    using get_fn = std::function<void(result<wg_device>)>;

    // `home`: where callbacks run (the core's io_context). The backend must be up.
    wireguard_worker(std::unique_ptr<wg_backend> backend, boost::asio::io_context& home);
    ~wireguard_worker();
    wireguard_worker(const wireguard_worker&) = delete;
    wireguard_worker& operator=(const wireguard_worker&) = delete;

    void apply(wg_interface_config desired, apply_fn done);
    void get(get_fn done);
    // Waits for the call in progress, drops the queued ones and joins the thread. Afterwards
    // backend() may be used from the caller's thread (e.g. down()).
    void stop();

    std::string_view kind() const { return backend_->kind(); }
    wg_backend& backend() noexcept { return *backend_; }

private:
    void run_apply();

    std::unique_ptr<wg_backend> backend_;
    std::unique_ptr<wg_reconciler> reconciler_;
    boost::asio::io_context& home_;
    boost::asio::io_context io_;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    std::mutex mu_;
    struct apply_job {
        wg_interface_config desired;
        apply_fn done;
    };
    std::optional<apply_job> waiting_;  // under mu_
    bool apply_queued_ = false;         // under mu_: run_apply is posted and has not started
    std::thread thread_;
};

}  // namespace mw::meshd
