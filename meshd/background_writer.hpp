// Runs file writes on a thread of their own and posts each outcome back to the core's
// io_context. The core's thread drives the 100 ms relay probes; a write there (even a small
// rename without fsync: the record cache fsyncs, the relay role file does not) can block on a
// loaded or slow disk for milliseconds to seconds (the same reason wireguard_worker keeps UAPI
// calls off it).
//
// Latest wins: a write asked for while another waits replaces the waiting one, whose callback is
// then dropped (each writer owns one file, and a file's latest state is the only one worth
// writing). The running write is never abandoned. stop() runs what is waiting (the shutdown
// write) and joins; callbacks of writes finished after stop() was called are not posted.
#pragma once

#include <boost/asio.hpp>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "common/result.hpp"

namespace mw::meshd {

class background_writer {
public:
    using work_fn = std::function<status()>;      // runs on the writer's thread
    using done_fn = std::function<void(status)>;  // runs on `home`

    explicit background_writer(boost::asio::io_context& home);
    ~background_writer();
    background_writer(const background_writer&) = delete;
    background_writer& operator=(const background_writer&) = delete;

    // Ignored once stop() was called.
    void post(work_fn work, done_fn done);
    void stop();

    // Tests: writes run so far (a replaced one never ran), and whether stop() was called.
    uint64_t runs() const;
    bool stopping() const;

private:
    void run();

    boost::asio::io_context& home_;
    struct job {
        work_fn work;
        done_fn done;
    };
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::optional<job> waiting_;  // under mu_
    bool stopping_ = false;       // under mu_
    uint64_t runs_ = 0;           // under mu_
    std::thread thread_;
};

}  // namespace mw::meshd
