// How the NAT in front of this node maps its control socket (issue 13), judged per address
// family from what the relays report: each PONG carries our address as that relay saw it (its
// `observed` field, relay_directory's reflexive address per relay address).
//
// - none: a relay saw one of our own advertised endpoints (no NAT on this family, or a 1:1 NAT
//   that keeps the port: reachable unsolicited as advertised).
// - endpoint_independent: relays at two or more addresses saw the same address and port (RFC
//   4787 "endpoint-independent mapping", a cone NAT): a peer can reach the mapping that a relay
//   reported, so hole punching can work.
// - endpoint_dependent: they saw different ones (address- or address-and-port-dependent mapping,
//   a symmetric NAT): each destination gets its own mapping, which a peer cannot predict.
// - single_observer: behind a NAT, but one relay address answered: its mapping behaviour is
//   unknown.
// - unknown: no relay answered on this family.
// Only the latest report of each relay address that answers now counts, and not one that another
// relay's differing report has outdated: a report last confirmed before another relay started
// seeing us elsewhere predates a change of our mapping (a NAT reboot, a new uplink) and is left
// out until its relay answers again (an idle relay is probed every 2 minutes). RFC 5780's filtering
// tests (does the NAT let a third address in?) need a relay that answers from another address,
// which the protocol has not; filtering is what the punch itself finds out.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/ip_address.hpp"
#include "common/wireguard/wg_endpoint.hpp"

namespace mw::meshd {

enum class nat_mapping : uint8_t {
    unknown,
    none,
    endpoint_independent,
    endpoint_dependent,
    single_observer,
};
const char* to_string(nat_mapping m) noexcept;
inline constexpr size_t nat_mapping_count = 5;

// One relay address that answers: where it is, where it saw us, since when it says so (its
// first PONG with that address) and when it last did.
struct nat_observation {
    ip_address observer;
    wg_endpoint seen;
    uint64_t since_ms = 0;
    uint64_t last_ms = 0;
};

struct nat_family_view {
    nat_mapping mapping = nat_mapping::unknown;
    // The address the relays saw (the first observer's when they differ).
    std::optional<wg_endpoint> reflexive;
    size_t observers = 0;         // distinct relay addresses of the family that reported
    bool port_preserved = false;  // the reflexive port is our own (a port-preserving NAT)
};

struct nat_view {
    nat_family_view ipv4, ipv6;
};

// Judges one family's observations (others are ignored) against our advertised endpoints and
// the control port the reports are about.
nat_family_view classify_nat(std::span<const nat_observation> obs, bool v6,
                             std::span<const wg_endpoint> own, uint16_t local_port);
nat_view classify_nat(std::span<const nat_observation> obs, std::span<const wg_endpoint> own,
                      uint16_t local_port);

}  // namespace mw::meshd
