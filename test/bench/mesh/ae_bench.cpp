// Membership traffic between LAN neighbours in steady state (issue 10 §3 benchmark; prints
// figures, never fails on them): a LAN of --nodes node_cores without relays on the simulated
// network of test/sim, each offered every neighbour as mDNS does, knowing --records records in
// all (the nodes' own plus records of nodes that do not run, offered to one node). Run until
// every node holds every record, a settling minute, then one minute measured: bytes and
// datagrams of HELLO, RECORDS and anti-entropy messages sent, per neighbour (ordered pair of
// nodes) per minute.
//
// Both ways in the same run: anti-entropy (digests, then only what differs) and the previous
// behaviour as the baseline (node_core_config::anti_entropy off: every rendezvous asked with
// HELLO every 10 s and answering with every record it holds).
//
// Exits 1 (after the figures) when a run did not converge within the virtual-time limit (some
// node lacks some record), so a figure is never printed for a LAN that did not form.
//
//   ae_bench [--nodes N] [--records R...]      (default: 6 nodes, 100 and 1000 records)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "test/sim/sim_lan.hpp"

using namespace mw;
using namespace mw::sim;

namespace {

struct figures {
    bool converged = false;
    double converge_s = 0;
    double bytes = 0, msgs = 0;  // per neighbour per minute
    uint64_t hello = 0, records = 0, digests = 0, summaries = 0, wants = 0;
    double wall_s = 0;
};

figures run(size_t nodes, size_t records, bool anti_entropy) {
    const auto wall0 = std::chrono::steady_clock::now();
    figures f;
    sim_net net(41);
    const int lan = net.add_lan(false, 1);
    for (size_t i = 0; i < nodes; ++i) net.add_lan_host(lan, "n" + std::to_string(i));
    meshd::node_core_config c;
    c.anti_entropy = anti_entropy;
    // Records re-signed every 30 min: none in the measured minute (a re-sign is one record
    // pushed to 3 neighbours with anti-entropy, to every registered node without).
    c.record_lifetime_ms = 3'600'000;
    for (auto& h : net.hosts()) net.start_core(*h, {}, "sim cluster psk 0123456789", c);
    for (auto& a : net.hosts()) {
        for (auto& b : net.hosts()) {
            if (a != b) mdns_offer(net, *a, *b);
        }
    }
    const size_t far = records > nodes ? records - nodes : 0;
    for (const auto& r : far_records(far)) {
        if (!net["n0"].core->offer_record(r, meshd::learned_via::cache, net.now())) return f;
    }
    net["n0"].deadline = net.now();
    const uint64_t t0 = net.elapsed_ms();
    auto all = [&] {
        for (auto& h : net.hosts()) {
            if (h->core->store().size() != nodes - 1 + far) return false;
        }
        return true;
    };
    f.converged = net.run_until(all, 120'000);
    f.converge_s = (net.elapsed_ms() - t0) / 1000.0;
    if (!f.converged) return f;
    wire_meter meter;
    meter.attach(net);
    net.run_for(60'000);
    meter.reset();
    net.run_for(60'000);
    f.converged = all();  // still everything everywhere at the end
    const double links = static_cast<double>(nodes * (nodes - 1));
    f.bytes = meter.membership_bytes() / links;
    f.msgs = meter.membership_msgs() / links;
    f.hello = meter.msgs[0x01];
    f.records = meter.msgs[0x02];
    f.digests = meter.msgs[0x0b];
    f.summaries = meter.msgs[0x0c];
    f.wants = meter.msgs[0x0d];
    f.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    return f;
}

}  // namespace

int main(int argc, char** argv) {
    size_t nodes = 6;
    std::vector<size_t> counts;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--nodes" && i + 1 < argc) {
            nodes = std::strtoul(argv[++i], nullptr, 10);
        } else if (a == "--records") {
            while (i + 1 < argc && argv[i + 1][0] != '-')
                counts.push_back(std::strtoul(argv[++i], nullptr, 10));
        } else {
            std::fprintf(stderr, "usage: ae_bench [--nodes N] [--records R...]\n");
            return 2;
        }
    }
    if (counts.empty()) counts = {100, 1000};
    if (nodes < 2) {
        std::fprintf(stderr, "ae_bench: --nodes must be at least 2\n");
        return 2;
    }
    std::printf(
        "anti-entropy benchmark: %zu nodes on one LAN, no relays, every neighbour offered "
        "as mDNS does; steady state, one minute after a settling minute\n",
        nodes);
    std::printf("%-8s %-14s %10s %14s %12s %7s %8s %8s %8s %6s %8s\n", "records", "mode",
                "converge_s", "bytes/nb/min", "dgrams/nb/min", "HELLO", "RECORDS", "DIGEST",
                "SUMMARY", "WANT", "wall_s");
    bool ok = true;
    for (size_t r : counts) {
        for (bool ae : {true, false}) {
            figures f = run(nodes, r, ae);
            const char* mode = ae ? "anti-entropy" : "full RECORDS";
            if (!f.converged) {
                std::printf("%-8zu %-14s did not converge: some node lacks some record\n", r, mode);
                ok = false;
                continue;
            }
            std::printf("%-8zu %-14s %10.1f %14.0f %12.1f %7llu %8llu %8llu %8llu %6llu %8.1f\n", r,
                        mode, f.converge_s, f.bytes, f.msgs, (unsigned long long)f.hello,
                        (unsigned long long)f.records, (unsigned long long)f.digests,
                        (unsigned long long)f.summaries, (unsigned long long)f.wants, f.wall_s);
            std::fflush(stdout);
        }
    }
    return ok ? 0 : 1;
}
