// LAN islands on the simulator, shared by sim_anti_entropy_test and the anti-entropy benchmark
// (test/bench/mesh/ae_bench.cpp): mDNS offers as the daemon makes them, membership traffic by
// message type, and signed records of nodes that do not run.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "test/sim/sim_net.hpp"

namespace mw::sim {

// What the daemon does with an mDNS answer from `to` (daemon::on_mdns_peer): its control
// endpoint offered to `from` as a path candidate for its node ID and as a rendezvous.
inline void mdns_offer(sim_net& net, sim_host& from, sim_host& to) {
    auto ep = to.ep(sim_net::port);
    from.core->offer_endpoint(to.core->id(), ep, meshd::learned_via::mdns, net.now());
    from.core->offer_endpoint(std::nullopt, ep, meshd::learned_via::mdns, net.now());
    from.deadline = net.now();
}

// Bytes and datagrams sent, by control message type (the type byte is in the clear).
struct wire_meter {
    std::map<uint8_t, uint64_t> bytes, msgs;
    void attach(sim_net& net) {
        net.on_send = [this](const sim_host&, const wg_endpoint&, const std::vector<uint8_t>& d) {
            if (d.size() < 4) return;
            bytes[d[3]] += d.size();
            ++msgs[d[3]];
        };
    }
    void reset() {
        bytes.clear();
        msgs.clear();
    }
    // Membership traffic: HELLO, RECORDS and the anti-entropy messages (AE_DIGEST, AE_SUMMARY,
    // AE_WANT).
    uint64_t membership_bytes() {
        return bytes[0x01] + bytes[0x02] + bytes[0x0b] + bytes[0x0c] + bytes[0x0d];
    }
    uint64_t membership_msgs() {
        return msgs[0x01] + msgs[0x02] + msgs[0x0b] + msgs[0x0c] + msgs[0x0d];
    }
};

// Signed records of `n` nodes that do not run (another site's), at addresses the simulation
// does not route (10.99/16: no LAN 99), so probes to them are lost.
inline std::vector<meshd::peer_record> far_records(size_t n, uint32_t lifetime_ms = 3'600'000) {
    std::vector<meshd::peer_record> v;
    v.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        meshd::identity_seed seed{};
        seed.fill(0x3c);
        for (size_t b = 0; b < 8; ++b) seed[b] = uint8_t((i + 1) >> (8 * b));
        auto id = meshd::node_identity::from_seed(seed);
        meshd::peer_record r;
        r.name = "far-" + std::to_string(i);
        r.pod_cidrs = {ip_prefix::parse("10." + std::to_string(252 + i / 65536) + "." +
                                        std::to_string(i / 256 % 256) + "." +
                                        std::to_string(i % 256) + "/32")
                           .value()};
        r.endpoints = {wg_endpoint::parse("10.99." + std::to_string(i / 250 % 250) + "." +
                                          std::to_string(1 + i % 250) + ":51821")
                           .value()};
        r.seq = 1;
        r.lifetime_ms = lifetime_ms;
        if (!r.sign(id)) throw std::runtime_error("cannot sign a far record");
        v.push_back(std::move(r));
    }
    return v;
}

}  // namespace mw::sim
