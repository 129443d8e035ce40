// The one entry for discovery sources (DESIGN §6): relays, dht.bootstrap, and later mDNS, the
// on-disk cache, the DHT and the Kubernetes API all tell the core what they found through this,
// and never touch paths or relays directly. node_core implements it.
//
// Two kinds of news:
//   "here is a signed record, learned via S"             -> offer_record
//   "node X may answer at control endpoint A, learned via S" -> offer_endpoint
// An endpoint with a node ID becomes a path candidate for that node (probed beside the addresses
// its record lists). One without (a configured address, "a meshd may be here") becomes a
// rendezvous while no relayNodes are configured: asked for the cluster's records with HELLO, and
// a relay if its record says it serves — what dht.bootstrap addresses are.
#pragma once

#include <cstdint>
#include <optional>

#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/core_types.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/peer_record.hpp"
#include "meshd/core/record_store.hpp"

namespace mw::meshd {

class discovery_sink {
public:
    virtual ~discovery_sink() = default;
    // Verified and stored (newest seq wins). Errors: record_store::put's; errc::invalid_argument
    // for our own record. `max_remaining_ms`: what is left of the record's lifetime when the
    // source knows it is less than the signed lifetime (the on-disk cache: its first receipt was
    // before a restart); the record then expires after the smaller of the two.
    virtual result<put_outcome> offer_record(const peer_record& rec, learned_via via,
                                             uint64_t now_ms,
                                             uint64_t max_remaining_ms = UINT64_MAX) = 0;
    virtual void offer_endpoint(const std::optional<node_id>& id, const wg_endpoint& ep,
                                learned_via via, uint64_t now_ms) = 0;
    // A source takes back everything it offered (it offers its current set again after).
    virtual void withdraw_endpoints(learned_via via, uint64_t now_ms) = 0;
};

}  // namespace mw::meshd
