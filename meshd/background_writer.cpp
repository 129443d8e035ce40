#include "meshd/background_writer.hpp"

namespace mw::meshd {

background_writer::background_writer(boost::asio::io_context& home)
    : home_(home), thread_([this] { run(); }) {}

background_writer::~background_writer() {
    stop();
}

void background_writer::post(work_fn work, done_fn done) {
    {
        std::lock_guard lock(mu_);
        if (stopping_) return;
        waiting_ = job{std::move(work), std::move(done)};
    }
    cv_.notify_one();
}

uint64_t background_writer::runs() const {
    std::lock_guard lock(mu_);
    return runs_;
}

bool background_writer::stopping() const {
    std::lock_guard lock(mu_);
    return stopping_;
}

void background_writer::run() {
    for (;;) {
        std::optional<job> j;
        {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [this] { return waiting_ || stopping_; });
            if (!waiting_) return;  // stopping, nothing left
            j = std::move(waiting_);
            waiting_.reset();
        }
        auto s = j->work();
        std::lock_guard lock(mu_);
        ++runs_;
        // Checked after the write: stop() may have been called while it ran, and a caller that
        // stops wants no callback from then on (the daemon's io_context is about to stop; the
        // record cache's key change starts over with a new writer).
        if (!stopping_ && j->done) {
            boost::asio::post(home_, [done = std::move(j->done), s = std::move(s)]() mutable {
                done(std::move(s));
            });
        }
    }
}

void background_writer::stop() {
    if (!thread_.joinable()) return;
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
}

}  // namespace mw::meshd
