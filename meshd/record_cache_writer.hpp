// Writes the record cache (record_cache.hpp) on a background_writer: a save is an fsync (and a
// directory fsync), kept off the core's thread. Latest wins (the cache holds the store's current
// state; an older state is never worth writing); stop() writes what is waiting and joins.
#pragma once

#include <boost/asio.hpp>
#include <functional>
#include <vector>

#include "meshd/background_writer.hpp"
#include "meshd/record_cache.hpp"

namespace mw::meshd {

class record_cache_writer {
public:
    using done_fn = std::function<void(status)>;

    // `home`: where callbacks run (the core's io_context).
    record_cache_writer(record_cache cache, boost::asio::io_context& home);
    record_cache_writer(const record_cache_writer&) = delete;
    record_cache_writer& operator=(const record_cache_writer&) = delete;

    void write(std::vector<cached_record> records, cache_clock at, done_fn done);
    // Finishes the running write and the waiting one, then joins the thread. Callbacks of
    // writes finished here are not posted (the caller is stopping).
    void stop();

    const record_cache& cache() const noexcept { return cache_; }

private:
    record_cache cache_;
    background_writer writer_;
};

}  // namespace mw::meshd
