#include "meshd/daemon_clock.hpp"

#include <time.h>

#include <chrono>

namespace mw::meshd {

uint64_t core_ms() {
    timespec ts{};
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return 1'000'000'000'000ull + uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1'000'000;
}

uint64_t steady_ms() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
}

uint64_t unix_ms() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
}

}  // namespace mw::meshd
