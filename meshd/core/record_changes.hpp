// What differs between two records of one node, and why we signed ours again (issue 18): every
// re-sign of our record is a datagram to every node of the cluster, so the log says which fields
// moved (relays, relay_rtt_ms old->new, endpoints, ...) and a counter keeps the reason, with
// fixed label values (meshwire_record_resigns_total). The same description explains a record
// received with new content (debug): which nodes' records still change at idle, and how.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "meshd/core/node_id.hpp"
#include "meshd/core/peer_record.hpp"

namespace mw::meshd {

// Why we signed our record, the first that applies in this order.
enum class resign_reason : uint8_t {
    start,      // the first record of this run
    relays,     // the set of relays we are attached to changed
    content,    // endpoints, relay role, pod CIDRs, name or WireGuard port changed
    relay_rtt,  // only the RTTs we publish for our relays moved
    refresh,    // nothing changed: half the lifetime passed ("Record refresh")
    forced,     // nothing changed, asked to
};
inline constexpr size_t resign_reason_count = 6;
const char* to_string(resign_reason r) noexcept;

struct record_changes {
    bool relays = false;     // the relay IDs listed
    bool relay_rtt = false;  // the published RTTs (the IDs may be the same)
    bool endpoints = false;
    bool other = false;  // name, pod CIDRs, WireGuard port, flags
    bool any() const noexcept { return relays || relay_rtt || endpoints || other; }
};

// Content only: seq, lifetime and signature are not compared.
record_changes compare_records(const peer_record& before, const peer_record& after);

// The reason for signing `after` when `before` was our record (`first`: there was none).
resign_reason resign_reason_of(const record_changes& c, bool first, bool due);

// Log fields for what changed: "relays" ("a,b -> a,c"), "relay_rtt_ms" ("relay1 52->47
// relay2 3->5", the relays listed in both), "endpoints" ("x -> y"), "relay_role", "pod_cidrs",
// "wg_port", "name". `name_of` names a relay's node ID.
using change_fields = std::vector<std::pair<std::string, std::string>>;
void append_change_fields(change_fields& f, const peer_record& before, const peer_record& after,
                          const std::function<std::string(const node_id&)>& name_of);

}  // namespace mw::meshd
