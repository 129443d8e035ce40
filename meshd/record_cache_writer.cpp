#include "meshd/record_cache_writer.hpp"

namespace mw::meshd {

record_cache_writer::record_cache_writer(record_cache cache, boost::asio::io_context& home)
    : cache_(std::move(cache)), home_(home), thread_([this] { run(); }) {}

record_cache_writer::~record_cache_writer() {
    stop();
}

void record_cache_writer::write(std::vector<cached_record> records, cache_clock at, done_fn done) {
    {
        std::lock_guard lock(mu_);
        if (stopping_) return;
        waiting_ = job{std::move(records), at, std::move(done)};
    }
    cv_.notify_one();
}

void record_cache_writer::run() {
    for (;;) {
        std::optional<job> j;
        bool stopping = false;
        {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [this] { return waiting_ || stopping_; });
            j = std::move(waiting_);
            waiting_.reset();
            stopping = stopping_;
        }
        if (j) {
            auto s = cache_.save(j->records, j->at);
            if (!stopping && j->done) {
                boost::asio::post(home_, [done = std::move(j->done), s = std::move(s)]() mutable {
                    done(std::move(s));
                });
            }
        }
        if (stopping) {
            std::lock_guard lock(mu_);
            if (!waiting_) return;
        }
    }
}

void record_cache_writer::stop() {
    if (!thread_.joinable()) return;
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
}

}  // namespace mw::meshd
