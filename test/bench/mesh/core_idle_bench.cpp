// Idle cost of node_core by cluster size (issue 18; prints figures, never fails on them): an idle
// cluster on the simulated network of test/sim (three public relays, LANs of nodes behind NATs;
// sim_idle_fixture.hpp) is started, converged, left alone for 1,280 s and measured for 640 s.
// Why so long: anti-entropy rounds back off from 10 s to 640 s while digests match (10 + 20 +
// ... + 640 s: steady from ~1,270 s on), and the window must hold one re-sign of every record.
// Records live 1,280 s here (`--lifetime`; the default is 12 h), so each node re-signs once in
// the window (column resigns): the membership figure holds a full re-sign cycle and is what a
// re-sign every ~11 min costs, 34 times more often than the default's every 6 h. Prints, per LAN
// node and per relay, the control bytes sent per minute by kind (probes, NAT keepalives to the
// used relays, relayed sessions, membership, anti-entropy rounds) and extrapolated to a 30-day
// month, what a LAN node received, plus WireGuard's keepalives as meshd would set them from each
// core's decisions (60 bytes on the wire, each direction: every 25 s on a direct path through a
// NAT, 120 s on one found NAT-free, none on an idle relayed path; dataplane_planner.hpp): the
// simulation carries no WireGuard. UDP/IP headers are not in the control figures (about 28 bytes
// a datagram).
//
// Exits 1 (after the figures) when a figure would not be what it claims: the cluster did not
// converge, a pair was still active (probed fast) or had no path when measured, a core's own
// count of what it sent differs from what left its host, or a node did not re-sign in the window.
//
//   core_idle_bench                       7, 21 and 201 nodes
//   core_idle_bench --quick               7, 21 and 102 nodes (ctest: 201 takes ~3.5 min alone)
//   core_idle_bench --nodes 1000          3 relays + 111 LANs of 9 = 1,002 nodes
//   core_idle_bench --lans L --per-lan K [--relays R]   R (3) relays + L x K nodes
//   core_idle_bench --relay-sessions N    each relay's session table (default 16,384)
//   core_idle_bench --settle S --window W --lifetime T   (seconds; defaults 1280 640 1280)
//
// 1,000 nodes: ~990,000 relayed sessions (two relays per relayed pair) do not fit relays of
// 16,384 sessions (REJECTs for capacity would move pairs around and the figure would be that
// churn), so --nodes 1000 gives each relay 524,288 (the relay's table is the simulator's, sized by
// sim_host::table_limits; meshd's relay has no knob for it). Three relays, not ~20: the formation
// sends every record to every node from every relay a node registers with (N^2 x relays
// deliveries, each opened and most verified), and with 19 relays it had not converged after
// 9 min of CPU (10 M datagrams delivered, 36 ms of simulated time).
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "meshd/dataplane_planner.hpp"
#include "test/sim/sim_idle_fixture.hpp"

using namespace mw;
using namespace mw::sim;

namespace {

constexpr double month_min = 30.0 * 24 * 60;

long max_rss_mb() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss / 1024;
}

std::chrono::steady_clock::time_point started;

// Phases of a size on stderr (a 1,000-node run takes minutes per phase).
void progress(const char* phase) {
    std::fprintf(stderr, "core_idle_bench: %s after %.0f s, max RSS %ld MB\n", phase,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                 max_rss_mb());
}

double mb_month(double bytes_per_min) {
    return bytes_per_min * month_min / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
    // 7, 21 and 201 nodes (3 relays + LANs)
    std::vector<std::pair<int, int>> sizes = {{2, 2}, {2, 9}, {22, 9}};
    int lans = 0, per_lan = 9, relays = 3;
    size_t relay_sessions = 0;
    uint64_t settle_s = 1280, window_s = 640, lifetime_s = 1280;
    // One pass; an unknown option or a missing value is an error, not a silently different run.
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        if (!std::strcmp(a, "--quick")) {
            sizes.back() = {11, 9};
            continue;
        }
        const bool takes_value = !std::strcmp(a, "--lans") || !std::strcmp(a, "--per-lan") ||
                                 !std::strcmp(a, "--settle") || !std::strcmp(a, "--window") ||
                                 !std::strcmp(a, "--lifetime") || !std::strcmp(a, "--relays") ||
                                 !std::strcmp(a, "--relay-sessions") || !std::strcmp(a, "--nodes");
        if (!takes_value || i + 1 >= argc) {
            std::fprintf(stderr,
                         "core_idle_bench: %s %s (options: --quick, --lans N, --per-lan N, "
                         "--settle S, --window S, --lifetime S, --relays N, "
                         "--relay-sessions N, --nodes 1000)\n",
                         takes_value ? "missing value for" : "unknown option", a);
            return 2;
        }
        const char* v = argv[++i];
        if (!std::strcmp(a, "--lans")) lans = std::atoi(v);
        if (!std::strcmp(a, "--per-lan")) per_lan = std::atoi(v);
        if (!std::strcmp(a, "--settle")) settle_s = std::strtoull(v, nullptr, 10);
        if (!std::strcmp(a, "--window")) window_s = std::strtoull(v, nullptr, 10);
        if (!std::strcmp(a, "--lifetime")) lifetime_s = std::strtoull(v, nullptr, 10);
        if (!std::strcmp(a, "--relays")) relays = std::atoi(v);
        if (!std::strcmp(a, "--relay-sessions")) relay_sessions = std::strtoull(v, nullptr, 10);
        if (!std::strcmp(a, "--nodes")) {
            if (std::strcmp(v, "1000")) {
                std::fprintf(stderr,
                             "core_idle_bench: --nodes: only 1000 (else --lans/--per-lan)\n");
                return 2;
            }
            lans = 111, per_lan = 9, relays = 3;
            if (!relay_sessions) relay_sessions = 524288;
        }
    }
    if (relays < 2 || relays > 200) {
        std::fprintf(stderr, "core_idle_bench: --relays: 2 to 200\n");
        return 2;
    }
    if (lans > 0 && per_lan > 0) sizes = {{lans, per_lan}};
    bool ok = true;
    std::printf("window %llu s after %llu s idle; record lifetime %llu s\n",
                (unsigned long long)window_s, (unsigned long long)settle_s,
                (unsigned long long)lifetime_s);
    std::printf("%6s %10s %10s %10s %10s %10s %10s %10s %10s %8s %12s %12s %12s %12s\n", "nodes",
                "probe_B/min", "ka_pkt/min", "sess_B/min", "memb_B/min", "ae_B/min", "rx_pkt/min",
                "rx_B/min", "relayed", "resigns", "LAN_MB/mo", "+wg_ka_MB/mo", "relay_MB/mo",
                "relay_memb");
    for (auto [l, k] : sizes) {
        auto t0 = started = std::chrono::steady_clock::now();
        idle_figures f = measure_idle_cluster(l, k, 1800 + uint64_t(l) * 31 + uint64_t(k),
                                              settle_s * 1000, window_s * 1000, lifetime_s * 1000,
                                              relays, relay_sessions, progress);
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!f.converged) {
            std::printf("%6zu did not converge\n", f.nodes);
            ok = false;
            continue;
        }
        const double ka_bytes = f.lan_keepalive_packets * double(meshd::nat_keepalive_size);
        const double lan = f.lan_probe_bytes + ka_bytes + f.lan_session_bytes + f.lan_member_bytes +
                           f.lan_ae_bytes;
        // WireGuard keepalives as meshd sets them (dataplane_planner.hpp), both directions, 60
        // bytes on the wire: every 25 s on a direct path through a NAT, every 120 s on one found
        // NAT-free, none on an idle relayed path (the relay proxy keeps what it needs).
        const meshd::dataplane_timing wg;
        const double ka_per_min = 2 * 60.0 *
                                  (60.0 / wg.keepalive_s * f.direct_nat_keepalive +
                                   60.0 / wg.keepalive_nat_free_s * f.direct_nat_free);
        const double relay = f.relay_probe_bytes + f.relay_forwarded_bytes;
        std::printf(
            "%6zu %10.0f %10.1f %10.0f %10.0f %10.0f %10.1f %10.0f %10.1f %8.2f %12.1f %12.1f "
            "%12.1f %12.1f   (%.0f s, max RSS %ld MB)\n",
            f.nodes, f.lan_probe_bytes, f.lan_keepalive_packets, f.lan_session_bytes,
            f.lan_member_bytes, f.lan_ae_bytes, f.lan_rx_packets, f.lan_rx_bytes, f.relayed_pairs,
            f.lan_resigns, mb_month(lan), mb_month(ka_per_min), mb_month(relay),
            mb_month(f.relay_member_bytes), secs, max_rss_mb());
        // By kind, B/min: probe, NAT keepalive, relayed sessions, membership, anti-entropy,
        // forwarded (a relay's RELAY_DATA: in-band probes of relayed pairs).
        auto kinds = [](const kind_rates& r) {
            static char buf[160];
            std::snprintf(buf, sizeof buf, "%7.0f %6.0f %7.0f %6.0f %6.0f %7.0f = %8.0f", r.probe,
                          r.keepalive, r.session, r.member, r.ae, r.forwarded, r.total());
            return std::string(buf);
        };
        std::printf("       LAN node sent %s | recv %s\n", kinds(f.lan_sent).c_str(),
                    kinds(f.lan_recv).c_str());
        std::printf("       relay    sent %s | recv %s\n", kinds(f.relay_sent).c_str(),
                    kinds(f.relay_recv).c_str());
        std::printf(
            "       %zu relays; busiest relay %.0f B/min sent, %.0f received (%.1f + %.1f MB/mo); "
            "fullest session table %zu\n",
            f.relays, f.relay_sent_max, f.relay_recv_max, mb_month(f.relay_sent_max),
            mb_month(f.relay_recv_max), f.relay_sessions_max);
        std::fflush(stdout);
        if (!f.counts_match || f.active_pairs || f.pairs_without_path || f.lan_resigns < 1.0) {
            std::printf(
                "       FAILED: counts_match=%d active_pairs=%zu pairs_without_path=%zu "
                "resigns=%.2f\n",
                int(f.counts_match), f.active_pairs, f.pairs_without_path, f.lan_resigns);
            ok = false;
        }
    }
    std::printf(
        "columns: per LAN node per minute sent (probes, NAT keepalives in packets of 4 B, "
        "relayed sessions, membership, anti-entropy rounds), control "
        "datagrams and bytes received; relayed pairs per LAN node; records a LAN node signed in "
        "the window; a LAN node's control sent per 30 days, "
        "WireGuard keepalives both ways per 30 days; a relay's probe answers + forwarded bytes "
        "and its membership bytes sent per 30 days (MB = 10^6 B, UDP payload); below each "
        "size, bytes per minute by kind, sent and received (mean LAN node, mean relay): probe, "
        "NAT keepalive, relayed sessions, membership, anti-entropy, forwarded = total\n");
    return ok ? 0 : 1;
}
