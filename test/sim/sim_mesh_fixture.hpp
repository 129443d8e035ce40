// The six-node mesh most simulation tests start from, and helpers to read relay use off it
// (shared by sim_mesh_test.cpp and sim_security_test.cpp).
#pragma once

#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "test/sim/sim_net.hpp"

namespace mw::sim {

namespace {

// relay1, relay2 public; LAN 1 (cone) lan1a, lan1b; LAN 2 (symmetric) lan2a, lan2b.
// One-way uplink delays (relays to the core, LANs' NATs to the core) and the loss at every host.
struct std_links {
    double relay1_ms = 2, relay2_ms = 5, lan1_ms = 3, lan2_ms = 4;
    double loss = 0;
};

struct std_mesh {
    sim_net net;
    std::vector<std::string> names{"relay1", "relay2", "lan1a", "lan1b", "lan2a", "lan2b"};
    explicit std_mesh(uint64_t seed = 1, bool start = true, std_links l = {}) : net(seed) {
        net.add_public("relay1", l.relay1_ms).relay = true;
        net.add_public("relay2", l.relay2_ms).relay = true;
        int l1 = net.add_lan(false, l.lan1_ms);
        int l2 = net.add_lan(true, l.lan2_ms);
        net.add_lan_host(l1, "lan1a");
        net.add_lan_host(l1, "lan1b");
        net.add_lan_host(l2, "lan2a");
        net.add_lan_host(l2, "lan2b");
        for (auto& h : net.hosts()) h->loss = l.loss;
        if (start) {
            auto specs = net.relay_specs();
            for (auto& h : net.hosts()) net.start_core(*h, specs);
        }
    }
    bool all_know_all() {
        for (auto& a : names) {
            auto& h = net[a];
            if (!h.up || !h.core) continue;
            size_t alive = 0;
            for (auto& b : names) alive += b != a && net[b].up && net[b].core;
            if (h.core->peers().size() < alive) return false;
        }
        return true;
    }
    // No node has an active pair (the fresh pairs' active spell is over): from here a relayed
    // pair's data plane changes only on an active/idle turn.
    bool all_idle() {
        for (auto& h : net.hosts()) {
            if (h->core && h->core->active_pairs()) return false;
        }
        return true;
    }
    // Relayed pairs have a live end-to-end path (in-band RTT) on both sides.
    bool relayed_live(const std::string& a, const std::string& b) {
        auto pa = net.peer(a, b), pb = net.peer(b, a);
        return pa && pb && pa->path == meshd::path_kind::relay &&
               pb->path == meshd::path_kind::relay && pa->rtt_ms && pb->rtt_ms;
    }
};

// The pair's simulated WireGuard flows (sim_net::simulate_wireguard): rx grows on both ends
// within 2 s.
inline void check_wireguard_flows(sim_net& net, const std::string& a, const std::string& b) {
    uint64_t rx_a = net[a].wg_rx[b], rx_b = net[b].wg_rx[a];
    net.run_for(2000);
    CHECK(net[a].wg_rx[b] > rx_a);
    CHECK(net[b].wg_rx[a] > rx_b);
}

// The WireGuard keepalive `a`'s core wants for peer `b` (peer_dataplane::keepalive: true at the
// NAT rate, false the slow one); nullopt when `b` is not in its data plane.
inline std::optional<bool> wg_keepalive(sim_net& net, const std::string& a, const std::string& b) {
    for (const auto& d : net[a].core->dataplane()) {
        if (d.id == net[b].core->id()) return d.keepalive;
    }
    return std::nullopt;
}

inline bool is_direct(sim_net& n, const std::string& a, const std::string& b) {
    return n.path(a, b) == meshd::path_kind::direct && n.path(b, a) == meshd::path_kind::direct;
}

}  // namespace

namespace {
// Relayed pair-directions per relay name, over every node.
inline std::map<std::string, size_t> relay_load(sim_net& net) {
    std::map<std::string, size_t> load;
    for (auto& h : net.hosts()) {
        for (const auto& pv : h->core->peers()) {
            if (pv.path == meshd::path_kind::relay) ++load[pv.relay_name];
        }
    }
    return load;
}
inline size_t switches(sim_net& net) {
    size_t n = 0;
    for (auto& h : net.hosts()) {
        for (const auto& e : h->log) n += e.msg == "relay switched";
    }
    return n;
}
}  // namespace

}  // namespace mw::sim
