// Idle cost of node_core by cluster size (issue 18; prints figures, never fails on them): an idle
// cluster on the simulated network of test/sim (three public relays, LANs of nodes behind NATs;
// sim_idle_fixture.hpp) is started, converged, left alone for 160 s and measured for 320 s
// (anti-entropy rounds back off from 10 s to 160 s while digests match: two of its steady-state
// intervals). Prints, per LAN node and per relay, the control bytes sent per minute by kind
// (probes, relayed sessions, membership, anti-entropy rounds) and extrapolated to a 30-day month,
// plus WireGuard's keepalives as they would add (25 s per peer and direction, 60 bytes on the wire;
// 72 relayed): the simulation carries no WireGuard. UDP/IP headers are not in the control figures
// (about 28 bytes a datagram).
//
// Exits 1 (after the figures) when a figure would not be what it claims: the cluster did not
// converge, a pair was still active (probed fast) or had no path when measured, or a core's own
// count of what it sent differs from what left its host.
//
//   core_idle_bench                       7, 21 and 201 nodes
//   core_idle_bench --lans L --per-lan K  3 relays + L x K nodes (e.g. 111 x 9: 1,002 nodes)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "test/sim/sim_idle_fixture.hpp"

using namespace mw;
using namespace mw::sim;

namespace {

constexpr double month_min = 30.0 * 24 * 60;

double mb_month(double bytes_per_min) {
    return bytes_per_min * month_min / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
    // 7, 21 and 201 nodes (3 relays + LANs)
    std::vector<std::pair<int, int>> sizes = {{2, 2}, {2, 9}, {22, 9}};
    int lans = 0, per_lan = 9;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--lans")) lans = std::atoi(argv[i + 1]);
        if (!std::strcmp(argv[i], "--per-lan")) per_lan = std::atoi(argv[i + 1]);
    }
    if (lans > 0 && per_lan > 0) sizes = {{lans, per_lan}};
    bool ok = true;
    std::printf("%6s %10s %10s %10s %10s %10s %10s %12s %12s %12s %12s\n", "nodes", "probe_B/min",
                "sess_B/min", "memb_B/min", "ae_B/min", "rx_pkt/min", "relayed", "LAN_MB/mo",
                "+wg_ka_MB/mo", "relay_MB/mo", "relay_memb");
    for (auto [l, k] : sizes) {
        auto t0 = std::chrono::steady_clock::now();
        idle_figures f =
            measure_idle_cluster(l, k, 1800 + uint64_t(l) * 31 + uint64_t(k), 160000, 320000);
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!f.converged) {
            std::printf("%6zu did not converge\n", f.nodes);
            ok = false;
            continue;
        }
        const double lan =
            f.lan_probe_bytes + f.lan_session_bytes + f.lan_member_bytes + f.lan_ae_bytes;
        // Keepalives: each peer, both directions, every 25 s: 60 bytes direct, 72 relayed.
        const double peers = double(f.nodes - 1);
        const double ka_per_min =
            60.0 / 25.0 * 2 * (60.0 * (peers - f.relayed_pairs) + 72.0 * f.relayed_pairs);
        const double relay = f.relay_probe_bytes + f.relay_forwarded_bytes;
        std::printf(
            "%6zu %10.0f %10.0f %10.0f %10.0f %10.1f %10.1f %12.1f %12.1f %12.1f %12.1f   (%.0f "
            "s)\n",
            f.nodes, f.lan_probe_bytes, f.lan_session_bytes, f.lan_member_bytes, f.lan_ae_bytes,
            f.lan_rx_packets, f.relayed_pairs, mb_month(lan), mb_month(ka_per_min), mb_month(relay),
            mb_month(f.relay_member_bytes), secs);
        if (!f.counts_match || f.active_pairs || f.pairs_without_path) {
            std::printf("       FAILED: counts_match=%d active_pairs=%zu pairs_without_path=%zu\n",
                        int(f.counts_match), f.active_pairs, f.pairs_without_path);
            ok = false;
        }
    }
    std::printf(
        "columns: per LAN node per minute sent (probes, relayed sessions, membership, "
        "anti-entropy rounds), control "
        "datagrams received; relayed pairs per LAN node; a LAN node's control sent per 30 days, "
        "WireGuard keepalives both ways per 30 days; a relay's probe answers + forwarded bytes "
        "and its membership bytes sent per 30 days (MB = 10^6 B, UDP payload)\n");
    return ok ? 0 : 1;
}
