// Where control datagrams wait between the socket threads (relay forwarder, relay proxy) and the
// core's thread: a bounded queue behind per-source token buckets (issue 17). Before, each
// datagram was copied into its own posted handler before the AEAD check: an unauthenticated
// 313 kpps flood grew meshd's RSS from 9.6 to ~60 MB and kept the core's thread busy.
//
// push() (socket thread) admits a datagram only if its source's bucket pays (source_buckets: the
// sender's address for plain control, the address and session for in-band control; newcomers
// pay a shared bucket first), and only if the queue has room; every drop is counted by reason.
// The queue is a ring of `capacity` fixed buffers of max_inbox_datagram bytes, allocated once:
// memory_bound() is what the inbox can ever hold, whatever arrives. push() says when the
// consumer must be woken (the queue went from idle to non-empty), so one posted handler drains
// many datagrams. pop() (core's thread) takes them in arrival order.
//
// Thread-safe (one mutex, held for a bucket decision and one copy).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/probe_frame.hpp"
#include "meshd/core/source_buckets.hpp"
#include "meshd/core/wire_codec.hpp"

namespace mw::meshd {

// The largest datagram queued: a control datagram, or an in-band probe padded to measure a path
// MTU (probe_frame.hpp; up to 1500 inner bytes: 1,532).
constexpr size_t max_inbox_datagram =
    std::max(max_control_datagram, probe_overhead + probe_max_plaintext_size);

struct control_inbox_config {
    size_t capacity = 1024;  // datagrams waiting for the core, at most
    // Per source: honest peers send a few datagrams per second each (PINGs, fast relay probes at
    // 10/s, HELLOs); a NAT hides many behind one address. Sources not in the table share the
    // newcomers' bucket.
    source_bucket_config buckets{.rate = 2000,
                                 .burst = 4000,
                                 .shared_rate = 1000,
                                 .shared_burst = 2000,
                                 .period_ms = 1000,
                                 .max_sources = 4096,
                                 .idle_ms = 10'000};
};

struct control_inbox_stats {
    uint64_t queued = 0;          // admitted to the queue
    uint64_t rate_limited = 0;    // a source over its rate
    uint64_t shared_limited = 0;  // a new source while the newcomers' bucket was empty
    uint64_t queue_full = 0;      // the core is behind: the queue is full
    uint64_t oversize = 0;        // larger than a control datagram can be
    size_t depth = 0, high_water = 0;
};

class control_inbox {
public:
    explicit control_inbox(const control_inbox_config& cfg = {});

    struct item {
        std::vector<uint8_t> bytes;
        wg_endpoint from;
        uint64_t session_id = 0;
        uint16_t via = 0;
    };
    enum class push_result : uint8_t {
        queued_wake,  // queued; the consumer is idle and must be woken
        queued,       // queued; a wakeup is already pending
        dropped,      // counted in stats()
    };
    push_result push(std::span<const uint8_t> datagram, const wg_endpoint& from,
                     uint64_t session_id, uint16_t via, uint64_t now_ms);
    // The oldest datagram, moved into `out` (its buffer is reused). False when empty; then the
    // next push wakes the consumer again.
    bool pop(item& out);

    control_inbox_stats stats() const;
    static size_t memory_bound(const control_inbox_config& cfg) noexcept;

private:
    struct slot {
        std::array<uint8_t, max_inbox_datagram> bytes;
        size_t size = 0;
        wg_endpoint from;
        uint64_t session_id = 0;
        uint16_t via = 0;
    };
    mutable std::mutex mutex_;
    source_buckets buckets_;
    std::vector<slot> ring_;
    size_t head_ = 0, count_ = 0;
    bool wake_pending_ = false;
    control_inbox_stats stats_;
};

}  // namespace mw::meshd
