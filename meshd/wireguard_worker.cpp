#include "meshd/wireguard_worker.hpp"

namespace mw::meshd {

namespace asio = boost::asio;

wireguard_worker::wireguard_worker(std::unique_ptr<wg_backend> backend, asio::io_context& home)
    : backend_(std::move(backend)),
      reconciler_(std::make_unique<wg_reconciler>(*backend_)),
      home_(home),
      work_(asio::make_work_guard(io_)),
      thread_([this] { io_.run(); }) {}

wireguard_worker::~wireguard_worker() {
    stop();
}

void wireguard_worker::apply(wg_interface_config desired, apply_fn done) {
    std::lock_guard lock(mu_);
    if (waiting_ && waiting_->desired.device.private_key)
        waiting_->desired.device.private_key->wipe();
    waiting_ = apply_job{std::move(desired), std::move(done)};
    if (apply_queued_) return;  // the queued run takes the newest state
    apply_queued_ = true;
    asio::post(io_, [this] { run_apply(); });
}

void wireguard_worker::run_apply() {
    std::optional<apply_job> job;
    {
        std::lock_guard lock(mu_);
        apply_queued_ = false;
        job = std::move(waiting_);
        waiting_.reset();
    }
    if (!job) return;
    auto rep = reconciler_->apply(job->desired);
    if (job->desired.device.private_key) job->desired.device.private_key->wipe();
    asio::post(home_, [done = std::move(job->done), rep = std::move(rep)]() mutable {
        done(std::move(rep));
    });
}

void wireguard_worker::get(get_fn done) {
    asio::post(io_, [this, done = std::move(done)]() mutable {
        auto d = backend_->get();
        asio::post(home_,
                   [done = std::move(done), d = std::move(d)]() mutable { done(std::move(d)); });
    });
}

void wireguard_worker::stop() {
    if (!thread_.joinable()) return;
    work_.reset();
    io_.stop();  // queued calls are dropped; the running one finishes first
    thread_.join();
    std::lock_guard lock(mu_);
    if (waiting_ && waiting_->desired.device.private_key)
        waiting_->desired.device.private_key->wipe();
    waiting_.reset();
}

}  // namespace mw::meshd
