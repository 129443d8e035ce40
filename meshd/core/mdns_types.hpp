// Plain types shared by the pure mDNS parts (mdns_responder, mdns_querier, mdns_engine): what an
// engine hands the socket adapter, the well-known names and addresses, and the small random
// source the RFC's jittered delays need (seeded by the caller: the core has no OS randomness).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/mdns_message.hpp"
#include "meshd/core/node_id.hpp"

namespace mw::meshd {

inline constexpr uint16_t mdns_port = 5353;
// A deadline that never comes (the querier's and responder's "nothing due").
inline constexpr uint64_t mdns_never = UINT64_MAX;
inline constexpr uint32_t mdns_host_ttl_s = 120;  // RFC 6762 §10: records naming a host (SRV too)
inline constexpr uint32_t mdns_other_ttl_s = 4500;  // 75 minutes: PTR, TXT
inline constexpr uint32_t mdns_legacy_ttl_s = 10;   // §6.7: at most 10 s in legacy unicast answers

// "_meshwire._udp.local" and "_services._dns-sd._udp.local".
const mdns_name& mdns_service_type();
const mdns_name& mdns_services_meta();
// 224.0.0.251:5353 / [ff02::fb]:5353.
wg_endpoint mdns_group(int family);
bool is_mdns_group(const ip_address& a) noexcept;

// One packet to send: to a multicast group (on the engine's interface) or unicast.
struct mdns_datagram {
    std::vector<uint8_t> bytes;
    wg_endpoint to;
};

// A meshd that answered on the LAN: "node `id` may be reachable at these control endpoints".
struct mdns_peer {
    std::string instance;
    node_id id;
    std::vector<wg_endpoint> endpoints;
    friend bool operator==(const mdns_peer&, const mdns_peer&) = default;
};

// splitmix64: the jitter of probes, responses and queries (RFC 6762 §5.2, §6, §8.1).
class mdns_rng {
public:
    explicit mdns_rng(uint64_t seed) : s_(seed) {}
    uint64_t next() noexcept {
        uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // Uniform in [lo, hi].
    uint64_t between(uint64_t lo, uint64_t hi) noexcept { return lo + next() % (hi - lo + 1); }

private:
    uint64_t s_;
};

}  // namespace mw::meshd
