// The daemon's clocks, shared by meshd_runtime.cpp and the parts it wires (kube_wiring,
// record_cache_wiring) so that every call into node_core uses the same `now`.
#pragma once

#include <cstdint>

namespace mw::meshd {

// The node core's clock: CLOCK_BOOTTIME (never jumps, counts suspend, so a record's lifetime
// here is real elapsed time), plus 10^12 ms so that no core timestamp is near the 0 that some
// of its fields use for "never". Not the wall clock: nothing the core decides compares clocks
// between nodes any more (records' lifetimes count from receipt, replay protection uses
// epochs and counters), and a wall clock that is set or steps while we run (NTP arriving on a
// node that booted without a real-time clock) would expire every record at once or postpone
// our own record's refresh past its lifetime.
uint64_t core_ms();

// std::chrono::steady_clock in ms: the daemon's own intervals (inbox rate limits, cache writes).
uint64_t steady_ms();

// The wall clock in ms since the epoch: only what is shown (meshctl) or seeds the boot epoch.
uint64_t unix_ms();

}  // namespace mw::meshd
