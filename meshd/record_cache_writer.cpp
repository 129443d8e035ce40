#include "meshd/record_cache_writer.hpp"

namespace mw::meshd {

record_cache_writer::record_cache_writer(record_cache cache, boost::asio::io_context& home)
    : cache_(std::move(cache)), writer_(home) {}

void record_cache_writer::write(std::vector<cached_record> records, cache_clock at, done_fn done) {
    // cache_ outlives the writer's thread: writer_ is declared after it, so it stops first.
    writer_.post([this, records = std::move(records), at] { return cache_.save(records, at); },
                 std::move(done));
}

void record_cache_writer::stop() {
    writer_.stop();
}

}  // namespace mw::meshd
