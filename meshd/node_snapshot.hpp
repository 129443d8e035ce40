// One read of the node's state, taken on the core's thread, that both the control API (meshctl
// status / peers / relays) and the Prometheus metrics render. Each count is computed once, here
// (peers by path, relays up, the relay service's table), so the two views cannot disagree.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/wireguard/wg_device.hpp"
#include "meshd/control_inbox.hpp"
#include "meshd/core/admission.hpp"
#include "meshd/core/control_channel.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd/dataplane_planner.hpp"
#include "meshd/io/relay_forwarder.hpp"
#include "meshd/io/relay_proxy.hpp"
#include "meshd/mdns_service_stats.hpp"
#include "meshd/meshd_config.hpp"
#include "meshd/record_cache.hpp"

namespace mw::meshd {

class mdns_service;

// Up for meshctl and the metrics: answering our probes, or ourselves.
bool relay_is_up(const relay_view& r) noexcept;

struct node_snapshot {
    uint64_t now_ms = 0;  // unix ms
    // This node.
    std::string name;
    node_id id;
    wg_key wg_public_key;
    std::vector<ip_prefix> pod_cidrs;
    std::string interface;
    unsigned mtu = 0;     // the WireGuard interface MTU meshd sets (0: the device default)
    std::string backend;  // "kernel" / "userspace"
    uint16_t wg_listen_port = 0, listen_port = 0;
    std::vector<wg_endpoint> endpoints;  // advertised
    relay_role_state role = relay_role_state::none;
    std::string role_reason;
    relay_role_cause role_cause = relay_role_cause::none;
    std::vector<wg_endpoint> verified;  // relay addresses dialled back
    int64_t uptime_s = 0;

    struct peer {
        peer_view view;
        // The endpoint WireGuard really uses (learned ones included), else what we configured.
        std::optional<wg_endpoint> endpoint;
        std::optional<wg_peer> device;  // as the device reports it (handshake, transfer)
    };
    std::vector<peer> peers;
    struct path_counts {
        size_t total = 0, direct = 0, relay = 0, none = 0;
    } paths;

    std::vector<relay_view> relays;
    size_t relays_up = 0;
    nat_view nat;  // the NAT in front of our control socket, per family (issue 13)

    // This node's relay service (while the forwarder owns the port).
    struct relay_service {
        size_t sessions = 0, nodes = 0;
        size_t max_sessions = 0, max_sessions_per_node = 0;  // relayService.* in the config
        relay_forwarder_stats stats;
    };
    std::optional<relay_service> service;
    // The relayed-peer side (local proxy sockets), absent while the forwarder owns the port.
    std::optional<relay_proxy_stats> proxy;

    control_counters control;
    // Cluster key fingerprints: the sealing key's first, then the accepted ones'; the retired
    // key's ("" when none): see psk_sealer.
    std::vector<std::string> key_fingerprints;
    std::string retired_key;
    // Our control traffic and its rate (issue 18), and the pairs probed as active now.
    control_traffic traffic;
    control_traffic_rate traffic_rate;
    size_t active_pairs = 0;
    admission_counters admission;
    control_inbox_stats inbox;  // control datagrams between the socket and the core (issue 17)
    uint64_t relay_selections = 0, relay_failovers = 0, stalls = 0;
    // Relays left because our WireGuard made no progress through them; sealed in-band probe
    // frames dropped (no pair for the session, wrong source, not opening).
    uint64_t relay_wg_stalls = 0, probe_frames_dropped = 0;
    pmtu_totals pmtu;  // path MTU searches (issue 15)
    // Our record signed again in this run, by reason (issue 18: each is a record to every node).
    std::array<uint64_t, resign_reason_count> record_resigns{};
    node_core::probe_loss_counts probe_losses;
    endpoint_refusal_counts endpoint_refusals{};
    size_t records = 0;
    // Peers by how their record reached us: index i counts the peers whose learned_via set has
    // bit 1 << i (a peer known through two sources counts under both).
    static constexpr size_t learned_via_bits = 8;
    static_assert(static_cast<unsigned>(learned_via::neighbour) == 1u << (learned_via_bits - 1),
                  "a new learned_via bit: count it here");
    std::array<size_t, learned_via_bits> peers_learned{};
    std::optional<record_cache_stats> cache;  // absent before the daemon set it up
    std::optional<mdns_service_stats> mdns;   // absent with mdns.enable false (or no socket)
    // Peers' pod CIDRs the route authority refused: reported so far, and refused now, by reason.
    std::array<uint64_t, cidr_refusal_count> cidrs_refused_total{}, cidrs_refused_now{};
};

// What the daemon knows besides the core.
struct snapshot_sources {
    const meshd_config& cfg;
    const node_core& core;
    const node_identity& identity;
    std::string_view backend;
    int64_t uptime_s = 0;
    uint64_t now_ms = 0;
    relay_forwarder* forwarder = nullptr;
    relay_proxy* proxy = nullptr;
    const std::optional<wg_device>& observed;  // the last device read
    const std::map<node_id, proxied_peer>& proxied;
    const control_inbox* inbox = nullptr;
    const mdns_service* mdns = nullptr;
    const record_cache_stats* cache = nullptr;
    unsigned mtu = 0;  // the WireGuard interface's (= node.json's), 0 when not set
};

node_snapshot take_snapshot(const snapshot_sources& s);

}  // namespace mw::meshd
