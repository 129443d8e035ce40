// A per-destination send budget: at most `rate_per_s` datagrams per second to one IP address,
// with bursts up to `burst` (a token bucket per address). It bounds what records can make a node
// send to one address however many records name it (issue 17: fake records listing a victim).
// It covers the datagrams a record can aim -- direct and relay probes (PINGs outside a relay
// session) and dial-back probes -- not answers to a datagram's source or messages to a relay
// we are attached to (those are bounded by what we were sent, and by the relay's sessions).
//
// The default (16/s, burst 32) is above what one destination gets from an honest node: relay
// probes every fast_ping_interval (100 ms: 10/s, faster on a lossy link but then exempt while
// the relay answers), direct probes once a second per peer address (the address in use of an
// active pair on a lossy link up to ~7/s, peer_paths::direct_loss), a few dial-back probes and
// meshctl pings. Bounded memory: at most `max_tracked` addresses; when full,
// the one idle longest is forgotten (it starts again with a full bucket).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>

#include "common/ip_address.hpp"

namespace mw::meshd {

class send_budget {
public:
    static constexpr double default_rate_per_s = 16;
    static constexpr double default_burst = 32;
    static constexpr size_t default_max_tracked = 4096;

    explicit send_budget(double rate_per_s = default_rate_per_s, double burst = default_burst,
                         size_t max_tracked = default_max_tracked);

    // Takes one datagram's token for `dst`; false when its budget is spent (do not send).
    bool take(const ip_address& dst, uint64_t now_ms);
    size_t tracked() const noexcept { return buckets_.size(); }

private:
    struct bucket {
        double tokens = 0;
        uint64_t last_ms = 0;
    };
    double rate_per_s_, burst_;
    size_t max_tracked_;
    std::map<ip_address, bucket> buckets_;
};

}  // namespace mw::meshd
