// An idle cluster on the simulated network and what each node sends, by kind (issue 18): shared
// by sim_idle_test.cpp (bounds) and test/bench/mesh/core_idle_bench.cpp (the growth curve).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "test/sim/sim_net.hpp"

namespace mw::sim {

// What a host sent, by the datagram's type byte (RELAY_DATA sent by a relay: forwarded).
struct sent_counts {
    // PING, PONG, COOKIE_REPLY, dial-back, in-band probe frames: liveness
    uint64_t probe_packets = 0, probe_bytes = 0;
    // NAT_KEEPALIVE (4 bytes, unanswered): a NATed node's mapping to its used relays
    uint64_t keepalive_packets = 0, keepalive_bytes = 0;
    // RELAY_SESSION_REQUEST / ACCEPT / REJECT / KEPT: relayed pairs' sessions
    uint64_t session_packets = 0, session_bytes = 0;
    // HELLO, RECORDS: membership (record refresh is not adaptive liveness's; reported only)
    uint64_t member_packets = 0, member_bytes = 0;
    // AE_DIGEST, AE_SUMMARY, AE_WANT: anti-entropy rounds with LAN neighbours (RECORDS they
    // bring count as membership)
    uint64_t ae_packets = 0, ae_bytes = 0;
    uint64_t forwarded_packets = 0, forwarded_bytes = 0;  // a relay forwarding RELAY_DATA
};

// Counts every datagram the hosts send (sim_net::on_send) and take in (sim_net::on_deliver) while
// it lives, by kind (the same kinds both ways: RELAY_DATA a relay takes in is to be forwarded).
class send_meter {
public:
    explicit send_meter(sim_net& net) : net_(net) {
        net.on_send = [this](const sim_host& src, const wg_endpoint&,
                             const std::vector<uint8_t>& b) { add(counts_[src.name], src, b); };
        net.on_deliver = [this](const sim_host& dst, const std::vector<uint8_t>& b) {
            add(received_[dst.name], dst, b);
        };
    }
    ~send_meter() {
        net_.on_send = nullptr;
        net_.on_deliver = nullptr;
    }
    send_meter(const send_meter&) = delete;
    send_meter& operator=(const send_meter&) = delete;
    const sent_counts& of(const std::string& name) { return counts_[name]; }
    const sent_counts& received(const std::string& name) { return received_[name]; }

private:
    static void add(sent_counts& c, const sim_host& host, const std::vector<uint8_t>& b) {
        const uint8_t type = b.size() >= 4 && b[0] == 'M' && b[1] == 'W' ? b[3] : 0;
        if (type == 0x80 && host.relay) {
            ++c.forwarded_packets, c.forwarded_bytes += b.size();
        } else if (type == 0x81) {
            ++c.keepalive_packets, c.keepalive_bytes += b.size();
        } else if (type == 0x01 || type == 0x02) {
            ++c.member_packets, c.member_bytes += b.size();
        } else if (type >= 0x0b && type <= 0x0d) {
            ++c.ae_packets, c.ae_bytes += b.size();
        } else if ((type >= 0x05 && type <= 0x07) || type == 0x0e) {
            ++c.session_packets, c.session_bytes += b.size();
        } else {
            ++c.probe_packets, c.probe_bytes += b.size();
        }
    }
    sim_net& net_;
    std::map<std::string, sent_counts> counts_, received_;
};

// Bytes a minute by kind (sent_counts' kinds).
struct kind_rates {
    double probe = 0, keepalive = 0, session = 0, member = 0, ae = 0, forwarded = 0;
    double total() const { return probe + keepalive + session + member + ae + forwarded; }
    void add(const sent_counts& c, double scale) {
        probe += double(c.probe_bytes) * scale, keepalive += double(c.keepalive_bytes) * scale;
        session += double(c.session_bytes) * scale, member += double(c.member_bytes) * scale;
        ae += double(c.ae_bytes) * scale, forwarded += double(c.forwarded_bytes) * scale;
    }
};

// Per minute of an idle cluster: a LAN node's mean (and max) and the relays' mean.
struct idle_figures {
    size_t nodes = 0, relays = 0;
    // Bytes a minute by kind, sent and taken in: a LAN node's mean, a relay's mean; the busiest
    // relay's totals (relays are not equally used: the rendezvous hash spreads pairs unevenly).
    kind_rates lan_sent, lan_recv, relay_sent, relay_recv;
    double relay_sent_max = 0, relay_recv_max = 0;
    size_t relay_sessions_max = 0;  // sessions in the fullest relay's table at the end
    bool converged = false;         // every node knew every other within the limit
    bool counts_match = true;       // each LAN core's own tx count (traffic()) = what left its host
    double lan_probe_bytes = 0, lan_probe_packets = 0, lan_probe_max_bytes = 0;
    double lan_keepalive_packets = 0, relay_keepalive_packets = 0;
    double lan_session_bytes = 0, lan_session_packets = 0, lan_member_bytes = 0;
    double lan_ae_bytes = 0, lan_ae_packets = 0;
    double lan_rx_packets = 0, lan_rx_bytes = 0;  // datagrams the core took in (all kinds)
    double lan_member_packets = 0;
    double lan_resigns = 0;    // records a LAN node signed in the window (its own re-signs)
    double relayed_pairs = 0;  // per LAN node
    // Per LAN node: direct peers whose WireGuard keepalive is the NAT rate
    // (peer_dataplane::keepalive) and those found NAT-free (the slow rate); idle relayed peers
    // get none (dataplane_planner.hpp).
    double direct_nat_keepalive = 0, direct_nat_free = 0;
    double relay_probe_bytes = 0, relay_forwarded_bytes = 0, relay_member_bytes = 0;
    double relay_member_packets = 0;
    double resigns = 0;  // records signed in the window, every node (relays included)
    size_t active_pairs = 0, pairs_without_path = 0;
};

// Three public relays and `lans` LANs of `per_lan` nodes behind NATs (cone and symmetric in turn:
// pairs within a LAN are direct, across LANs relayed). Started, converged, left alone for
// `settle_ms` (the start-up's active spells end), then measured for `measure_ms`; figures are
// per minute. Anti-entropy rounds back off from 10 s to 640 s while digests match: a window of
// 640 s or more from settle_ms >= 1,270 s shows their steady state, a shorter one a round or two.
//
// `record_lifetime_ms` (0: the default, 12 h) sets every node's record lifetime: a node re-signs
// its record at half of it, so a window of half a lifetime holds one re-sign of every node (the
// tests and the benchmark use short lifetimes for that; the cost per re-sign is the same).
//
// `relays` equally good public relays (relay1, relay2, ...); `relay_sessions` (0: the default,
// 16,384) sizes each relay's session table.
inline idle_figures measure_idle_cluster(int lans, int per_lan, uint64_t seed,
                                         uint64_t settle_ms = 60000, uint64_t measure_ms = 60000,
                                         uint64_t record_lifetime_ms = 0, int relays = 3,
                                         size_t relay_sessions = 0,
                                         void (*progress)(const char* phase) = nullptr) {
    sim_net net(seed);
    // Equally good relays: a pair keeps sessions at two, spread by its rendezvous hash.
    // 200 nodes in LANs of 9 make ~18,000 relayed pairs, more than one relay's session table
    // holds (16,384): with relays of different RTTs every pair would want the best one, whose
    // REJECTs (capacity) then move pairs around every relay_exclude_ms.
    std::vector<std::string> relay_names;
    for (int r = 1; r <= relays; ++r) {
        relay_names.push_back("relay" + std::to_string(r));
        auto& h = net.add_public(relay_names.back(), 3);
        h.relay = true;
        if (relay_sessions) h.table_limits.max_sessions = relay_sessions;
    }
    std::vector<std::string> lan_nodes;
    for (int l = 0; l < lans; ++l) {
        int lan = net.add_lan(l % 2 == 1, 2 + l % 4);
        for (int i = 0; i < per_lan; ++i) {
            lan_nodes.push_back("n" + std::to_string(l) + "-" + std::to_string(i));
            net.add_lan_host(lan, lan_nodes.back());
        }
    }
    auto specs = net.relay_specs();
    meshd::node_core_config cfg;
    if (record_lifetime_ms) cfg.record_lifetime_ms = record_lifetime_ms;
    for (auto& h : net.hosts()) {
        h->keep_log = false;
        net.start_core(*h, specs, "sim cluster psk 0123456789", cfg);
    }
    idle_figures f;
    f.nodes = net.hosts().size();
    f.relays = relay_names.size();
    f.converged = net.run_until(
        [&] {
            for (auto& h : net.hosts()) {
                if (h->core->peers().size() != f.nodes - 1) return false;
            }
            return true;
        },
        std::max<uint64_t>(120000, 200 * uint64_t(f.nodes)));  // 1,000 nodes: 200 s
    if (progress) progress(f.converged ? "converged" : "did not converge");
    if (!f.converged) return f;
    // In steps of 60 s, each reported (a 1,000-node run takes minutes of CPU per step).
    for (uint64_t done = 0; done < settle_ms;) {
        const uint64_t step = std::min<uint64_t>(60000, settle_ms - done);
        net.run_for(step);
        done += step;
        if (progress && done < settle_ms) {
            const std::string phase = "settling, " + std::to_string(done / 1000) + " of " +
                                      std::to_string(settle_ms / 1000) + " s";
            progress(phase.c_str());
        }
    }
    if (progress) progress("settled; measuring");
    send_meter meter(net);
    std::map<std::string, meshd::control_traffic> before;
    std::map<std::string, uint64_t> seq_before;
    for (const auto& n : lan_nodes) before[n] = net[n].core->traffic();
    for (auto& h : net.hosts()) seq_before[h->name] = h->core->self_record().seq;
    net.run_for(measure_ms);
    const double per_min = 60000.0 / double(measure_ms);
    for (const auto& n : lan_nodes) {
        f.lan_sent.add(meter.of(n), per_min / double(lan_nodes.size()));
        f.lan_recv.add(meter.received(n), per_min / double(lan_nodes.size()));
    }
    for (const auto& r : relay_names) {
        kind_rates s1, r1;
        s1.add(meter.of(r), per_min);
        r1.add(meter.received(r), per_min);
        f.relay_sent.add(meter.of(r), per_min / double(relay_names.size()));
        f.relay_recv.add(meter.received(r), per_min / double(relay_names.size()));
        f.relay_sent_max = std::max(f.relay_sent_max, s1.total());
        f.relay_recv_max = std::max(f.relay_recv_max, r1.total());
        if (net[r].table)
            f.relay_sessions_max = std::max(f.relay_sessions_max, net[r].table->size());
    }
    for (const auto& n : lan_nodes) {
        const auto& c = meter.of(n);
        const auto& t = net[n].core->traffic();
        f.counts_match &=
            t.tx_packets - before[n].tx_packets == c.probe_packets + c.keepalive_packets +
                                                       c.session_packets + c.member_packets +
                                                       c.ae_packets &&
            t.tx_bytes - before[n].tx_bytes ==
                c.probe_bytes + c.keepalive_bytes + c.session_bytes + c.member_bytes + c.ae_bytes;
        f.lan_keepalive_packets += double(c.keepalive_packets);
        f.lan_rx_packets += double(t.rx_packets - before[n].rx_packets);
        f.lan_rx_bytes += double(t.rx_bytes - before[n].rx_bytes);
        f.lan_member_packets += double(c.member_packets);
        // seq = boot epoch << 30 | records signed in this run
        f.lan_resigns += double(net[n].core->self_record().seq - seq_before[n]);
        f.lan_probe_bytes += double(c.probe_bytes);
        f.lan_probe_packets += double(c.probe_packets);
        f.lan_probe_max_bytes = std::max(f.lan_probe_max_bytes, double(c.probe_bytes));
        f.lan_session_bytes += double(c.session_bytes);
        f.lan_session_packets += double(c.session_packets);
        f.lan_member_bytes += double(c.member_bytes);
        f.lan_ae_bytes += double(c.ae_bytes);
        f.lan_ae_packets += double(c.ae_packets);
        for (const auto& d : net[n].core->dataplane()) {
            if (d.path != meshd::path_kind::direct) continue;
            (d.keepalive ? f.direct_nat_keepalive : f.direct_nat_free) += 1;
        }
        for (const auto& pv : net[n].core->peers()) {
            f.relayed_pairs += pv.path == meshd::path_kind::relay;
            f.pairs_without_path += pv.path == meshd::path_kind::none;
        }
    }
    for (auto& h : net.hosts()) {
        f.active_pairs += h->core->active_pairs();
        f.resigns += double(h->core->self_record().seq - seq_before[h->name]);
    }
    const double n = double(lan_nodes.size());
    f.lan_probe_bytes *= per_min / n, f.lan_probe_packets *= per_min / n;
    f.lan_keepalive_packets *= per_min / n;
    f.lan_probe_max_bytes *= per_min;
    f.lan_session_bytes *= per_min / n, f.lan_session_packets *= per_min / n;
    f.lan_member_bytes *= per_min / n, f.lan_rx_packets *= per_min / n;
    f.lan_member_packets *= per_min / n, f.lan_rx_bytes *= per_min / n;
    f.lan_resigns /= n;
    f.lan_ae_bytes *= per_min / n, f.lan_ae_packets *= per_min / n;
    f.relayed_pairs /= n;
    f.direct_nat_keepalive /= n, f.direct_nat_free /= n;
    const double nr = double(relay_names.size());
    for (const auto& r : relay_names) {
        f.relay_probe_bytes += double(meter.of(r).probe_bytes) * per_min / nr;
        f.relay_keepalive_packets += double(meter.of(r).keepalive_packets) * per_min / nr;
        f.relay_forwarded_bytes += double(meter.of(r).forwarded_bytes) * per_min / nr;
        f.relay_member_bytes += double(meter.of(r).member_bytes) * per_min / nr;
        f.relay_member_packets += double(meter.of(r).member_packets) * per_min / nr;
    }
    return f;
}

}  // namespace mw::sim
