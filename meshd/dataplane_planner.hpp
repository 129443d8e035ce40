// The data-plane planner: turns the core's desired data plane (one peer_dataplane per remote node)
// into WireGuard peers and relay_proxy operations, keeping what must survive between applies. Pure:
// no sockets, no clock (`now` is passed in), no WireGuard calls, so every rule below is unit-tested
// (test/unit/meshd_dataplane_planner_test.cpp).
//
// Rules (each one fixed a stall seen in the e2e suite; see git log faff364, 648b5aa, a892593):
//   - A peer is configured only once it has a path: WireGuard would try a handshake without an
//     endpoint, fail, and wait REKEY_TIMEOUT (5 s) before trying the real one.
//   - Except a peer seeded from the on-disk record cache (seed(); record_cache.hpp): at start,
//     before it has a path, it is installed at once with its last direct WireGuard endpoint
//     (or, without one, its record's first address at its WireGuard port) and without
//     keepalive, so that a node restarted with no uplink has its peers and pod routes back at
//     once and nothing is torn down (a kernel device kept across the restart) because relays
//     are unreachable. A LAN neighbour usually answers at that endpoint; a wrong one costs only
//     what the rule above avoids, and only if pod traffic tried a handshake meanwhile: the first
//     handshake on the real path may wait up to REKEY_TIMEOUT. WireGuard roaming corrects the
//     endpoint when the peer talks to us, and the real path replaces it when there is one. From
//     then on the peer is a kept peer like any other; the seed goes with its first path or its
//     record.
//   - A peer that had a path and loses it (path none) keeps its last WireGuard configuration and
//     its proxy socket until its record goes: removing it dropped its session keys while the other
//     end kept sending with them, a 15 s stall until that end re-handshaked. Its allowed-ips follow
//     the record's pod CIDRs.
//   - Persistent keepalive is switched on 3 s after the peer first got a path on the end with the
//     lower node ID, 5 s on the other: both ends decide at the same moment, and handshakes that
//     crossed within milliseconds stalled a session for 15-30 s. At 25 s only where a NAT mapping
//     needs it (issue 18): on a relayed path through the proxy every 55 s while the pair is
//     active (peer_dataplane::active; a fresh path is, so its first handshake still happens)
//     and none while it is idle (its packets leave from the control socket, whose mapping to
//     the relay meshd's relay probes keep; see keepalive_relayed_s), every 120 s on a direct
//     path the core found NAT-free (peer_dataplane::keepalive; keepalive_nat_free_s). Both
//     kernel WireGuard and wireguard-go send a keepalive at once when it goes from 0 to on, and
//     stop at the next expiry when it goes to 0; the peer is written only on those turns.
//   - Relayed peers get a relay_proxy socket whose loopback address is their WireGuard endpoint;
//     a relay change is one retarget (the endpoint never changes); warm standby sessions are
//     aliases. A peer that leaves the relay path keeps its socket for 60 s (WireGuard on a learned
//     direct path sends to it until the peer's first packet arrives); a peer whose record is gone
//     loses it at once.
//   - When the proxy goes (this node took the relay role), kept peers lose their proxy endpoint but
//     keep their keys; WireGuard learns the endpoint from the peer's first packet (roaming).
//   - The plan always passes the device's validate(): an allowed-ip two peers want stays with the
//     peer that has it configured already, else the first in node ID order; a peer with an
//     all-zero or repeated key is left out. Before, one such peer made every apply fail.
//
// One apply is three steps, because the proxy picks a relayed peer's local socket:
//   1. proxy_ops(): what to do to the relay proxy (const);
//   2. the caller runs them in order (skipping the alias operations of a peer whose add or
//      retarget failed) and reports each outcome with proxy_done();
//   3. wireguard(): the WireGuard peers; it updates the kept state.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/wireguard/wg_device.hpp"
#include "meshd/core/node_core.hpp"

namespace mw::meshd {

struct dataplane_timing {
    uint16_t keepalive_s = 25;
    // A direct path with no NAT between (peer_dataplane::keepalive false): no mapping to keep,
    // but the end that only receives must still send now and then, so that traffic into a
    // direct path that died silently wakes it (tx without rx) and it moves to the relay the
    // sender moved to (the relay forwards only sessions both ends asked for).
    uint16_t keepalive_nat_free_s = 120;
    // A relayed path through the proxy, while the pair is active (peer_dataplane::active): no
    // mapping to keep (its packets leave from the control socket, whose mapping the relay
    // probes keep); it keeps the session keys valid while traffic comes and goes (keys expire
    // 180 s after a handshake, a keepalive rekeys one older than 120 s). Idle: none (issue 18;
    // it was 55 s at idle too, ~320 B a minute per pair and end, all through the relay). A pair
    // idle for minutes then starts with a handshake, which the relay proxy makes survive a
    // relay that died meanwhile: the initiation wakes the pair at both ends, is sent again
    // through the relay it fails over to, and the response goes back through the session the
    // initiation came in on (relay_proxy.hpp). Before that, the answer went through the dead
    // relay: no packet for up to 28.5 s (bench_idle).
    uint16_t keepalive_relayed_s = 55;
    uint64_t keepalive_first_ms = 3000;   // after the path, on the end with the lower node ID
    uint64_t keepalive_second_ms = 5000;  // on the other end
    uint64_t proxy_linger_ms = 60'000;
};

// A relayed peer's socket in the relay proxy.
struct proxied_peer {
    uint64_t session_id = 0;
    wg_endpoint relay;
    wg_endpoint local;           // the peer's WireGuard endpoint (loopback)
    uint64_t linger_until = 0;   // non-zero: not on a relay path any more
    std::set<uint64_t> aliases;  // warm standby sessions registered with the proxy
};

struct proxy_op {
    enum class kind : uint8_t { add_peer, retarget_peer, add_alias, remove_alias, remove_peer };
    kind op = kind::add_peer;
    node_id peer;
    std::string name;          // for log lines
    uint64_t session_id = 0;   // add_peer: the session; retarget: the old one; alias: the peer's
    uint64_t other_id = 0;     // retarget: the new session; add/remove_alias: the alias
    wg_endpoint relay;         // add_peer, retarget_peer, add_alias
    uint32_t probe_index = 0;  // add_peer: the pair's sealed-probe receiver index (fixed per pair)

    friend bool operator==(const proxy_op&, const proxy_op&) = default;
};
const char* to_string(proxy_op::kind k) noexcept;

struct wireguard_plan {
    std::vector<wg_peer> peers;
    // What the plan left out so that the device accepts the rest (validate() in wg_device.hpp):
    // a peer's allowed-ip another peer already has (the route authority lets none through; this
    // is the last line, so one bad peer can never make the whole apply fail and freeze every
    // other peer's updates). One line each, for the log.
    std::vector<std::string> dropped;
    // Some peer's keepalive is still to be switched on: plan again within a poll.
    bool keepalive_pending = false;
};

class dataplane_planner {
public:
    explicit dataplane_planner(node_id self, dataplane_timing t = {}) : self_(self), t_(t) {}

    // Step 1. `proxy_up`: the relay proxy runs (not while this node serves as a relay).
    std::vector<proxy_op> proxy_ops(const std::vector<peer_dataplane>& desired, bool proxy_up,
                                    uint64_t now) const;
    // Step 2: the outcome of one operation; `local` is add_peer's socket.
    void proxy_done(const proxy_op& op, bool ok, const wg_endpoint& local = {});
    // Step 3.
    wireguard_plan wireguard(const std::vector<peer_dataplane>& desired, bool proxy_up,
                             uint64_t now);

    // The relay proxy stopped (its sockets are gone): kept peers keep their keys, not the
    // endpoint.
    void proxy_gone();

    // The peer's record came from the on-disk cache: install it before it has a path, with
    // `endpoint` (nullopt: none; WireGuard learns it when the peer talks to us). See the rules.
    void seed(const node_id& peer, std::optional<wg_endpoint> endpoint);
    size_t seeds() const noexcept { return seeds_.size(); }

    // A proxy socket waits for its linger time: plan again within a poll.
    bool lingering() const;
    const std::map<node_id, proxied_peer>& proxied() const noexcept { return proxied_; }
    // What each peer was last configured with (the kept state).
    const std::map<node_id, wg_peer>& last_peers() const noexcept { return last_peer_; }

private:
    // Whether the peer's proxy socket stays in use by this plan (`last` is the kept state before
    // the plan).
    bool on_relay(const peer_dataplane& dp, bool proxy_up) const;
    // Leaves out what validate() would refuse (see the rules above); uses the kept state.
    void make_valid(std::vector<std::pair<node_id, wg_peer>>& planned,
                    std::vector<std::string>& dropped) const;

    node_id self_;
    dataplane_timing t_;
    // When each peer first got a path (keepalive staging). Never forgotten, as before the split:
    // a peer that comes back keeps keepalive on at once.
    std::map<node_id, uint64_t> path_since_;
    std::map<node_id, wg_peer> last_peer_;
    std::map<node_id, proxied_peer> proxied_;
    struct seed_entry {
        std::optional<wg_endpoint> endpoint;
        bool planned = false;  // was in a desired state (its record is gone when it leaves it)
    };
    std::map<node_id, seed_entry> seeds_;  // seed(), until a path or no record
};

}  // namespace mw::meshd
