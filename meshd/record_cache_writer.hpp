// Writes the record cache (record_cache.hpp) on its own thread and posts each outcome back to
// the core's io_context: a save is an fsync (and a directory fsync), which on a loaded or slow
// disk takes from milliseconds to seconds, and on the core's thread it would delay the 100 ms
// relay probes (the same reason wireguard_worker keeps UAPI calls off it).
//
// Latest wins: a write asked for while another waits replaces the waiting one (the cache holds
// the store's current state; an older state is never worth writing), whose callback is then
// dropped. The one running is never abandoned. stop() writes what is waiting (the shutdown
// write) and joins.
#pragma once

#include <boost/asio.hpp>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "meshd/record_cache.hpp"

namespace mw::meshd {

class record_cache_writer {
public:
    using done_fn = std::function<void(status)>;

    // `home`: where callbacks run (the core's io_context).
    record_cache_writer(record_cache cache, boost::asio::io_context& home);
    ~record_cache_writer();
    record_cache_writer(const record_cache_writer&) = delete;
    record_cache_writer& operator=(const record_cache_writer&) = delete;

    void write(std::vector<cached_record> records, cache_clock at, done_fn done);
    // Finishes the running write and the waiting one, then joins the thread. Callbacks of
    // writes finished here are not posted (the caller is stopping).
    void stop();

    const record_cache& cache() const noexcept { return cache_; }

private:
    void run();

    record_cache cache_;
    boost::asio::io_context& home_;
    struct job {
        std::vector<cached_record> records;
        cache_clock at;
        done_fn done;
    };
    std::mutex mu_;
    std::condition_variable cv_;
    std::optional<job> waiting_;  // under mu_
    bool stopping_ = false;       // under mu_
    std::thread thread_;
};

}  // namespace mw::meshd
