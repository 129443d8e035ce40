// Memory of node_core at scale (prints figures, never fails on timing or size): one observed
// node_core (the only relay, "relay1") plus N other node_cores on the simulated network of
// test/sim (virtual clock, NAT boxes, the real relay_session_table), run until the observed node
// knows all N peers (or the virtual-time limit), then for a few more virtual seconds. Prints the
// process RSS growth per core and the observed node's figures (peers, records stored, relay
// sessions, control counters). It measures node_core and its relay table, not a whole meshd (no
// WireGuard, no sockets, no Asio): a lower bound for a real daemon's footprint at that peer count.
//
// Exits 1 (after the figures) when the figure would not be what it claims: the observed node did
// not learn every peer within the virtual-time limit, some core does not know every other when
// measured (the per-core figure assumes a full mesh), or /proc/self/status gave no VmRSS.
//
//   core_rss_bench [--peers N] [--lans L] [--seconds S] [--settle S]
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "test/sim/sim_net.hpp"

using namespace mw;
using namespace mw::sim;

namespace {

// Bytes malloc has handed out and not got back (arenas and its own mmaps).
size_t heap_in_use() {
    const struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

std::map<std::string, long> proc_status_kb() {
    std::map<std::string, long> out;
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line)) {
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string key = line.substr(0, colon);
        if (key == "VmRSS" || key == "VmHWM")
            out[key] = std::strtol(line.c_str() + colon + 1, nullptr, 10);
    }
    return out;
}

double wall_s(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    int peers = 500, lans = 10, seconds = 30, settle = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        int v = std::atoi(argv[i + 1]);
        if (a == "--peers")
            peers = v;
        else if (a == "--lans")
            lans = v;
        else if (a == "--seconds")
            seconds = v;
        else if (a == "--settle")
            settle = v;
        else {
            std::fprintf(stderr, "usage: %s [--peers N] [--lans L] [--seconds S] [--settle S]\n",
                         argv[0]);
            return 2;
        }
    }
    if (lans < 1) lans = 1;
    auto t0 = std::chrono::steady_clock::now();
    sim_net net(42);
    auto before = proc_status_kb();
    const size_t heap_before = heap_in_use();
    net.add_public("relay1", 2).relay = true;
    int per_lan = (peers + lans - 1) / lans;
    int made = 0;
    for (int l = 0; l < lans && made < peers; ++l) {
        int lan = net.add_lan(l % 2 == 1, 2 + l % 5);  // alternate cone / symmetric
        for (int i = 0; i < per_lan && made < peers; ++i, ++made) {
            net.add_lan_host(lan, "n" + std::to_string(l) + "-" + std::to_string(i));
        }
    }
    auto specs = net.relay_specs();
    for (auto& h : net.hosts()) {
        h->keep_log = false;
        net.start_core(*h, specs);
    }
    auto started = proc_status_kb();
    auto& obs = net["relay1"];
    const size_t total = net.hosts().size();
    bool all = net.run_until([&] { return obs.core->peers().size() >= total - 1; },
                             uint64_t(seconds) * 1000);
    uint64_t known_ms = net.elapsed_ms();
    size_t known = obs.core->peers().size();
    net.run_for(uint64_t(settle) * 1000);
    auto after = proc_status_kb();
    const size_t heap_after = heap_in_use();
    double wall = wall_s(t0);

    size_t obs_direct = 0, obs_relay = 0, obs_none = 0;
    for (auto& p : obs.core->peers()) {
        if (p.path == meshd::path_kind::direct)
            ++obs_direct;
        else if (p.path == meshd::path_kind::relay)
            ++obs_relay;
        else
            ++obs_none;
    }
    // A sample of the other cores: how many peers they know.
    size_t min_known = SIZE_MAX, max_known = 0;
    for (auto& h : net.hosts()) {
        size_t k = h->core->peers().size();
        min_known = std::min(min_known, k);
        max_known = std::max(max_known, k);
    }
    long growth_kb = after["VmRSS"] - before["VmRSS"];
    std::vector<std::string> fail;
    if (!all) {
        fail.push_back("the observed node knows " + std::to_string(known) + " of " +
                       std::to_string(total - 1) + " peers after " + std::to_string(seconds) +
                       " s virtual");
    }
    if (min_known < total - 1) {
        fail.push_back("a core knows only " + std::to_string(min_known) + " of " +
                       std::to_string(total - 1) + " peers: not a full mesh");
    }
    if (before["VmRSS"] <= 0 || after["VmRSS"] <= 0) {
        fail.push_back("no VmRSS in /proc/self/status");
    }
    std::printf(
        "core_rss_bench: 1 observed node_core (relay1, the only relay) + %d peers in %d LANs "
        "(%d per LAN, cone/symmetric alternating), simulated network, virtual time\n",
        made, lans, per_lan);
    std::printf(
        "  observed node knows %s peers (%zu of %zu) after %.1f s virtual%s; ran %d s more\n",
        all ? "all" : "NOT all", known, total - 1, known_ms / 1000.0, all ? "" : " (time limit)",
        settle);
    std::printf("  virtual time %.1f s, wall %.1f s, datagrams delivered %llu, dropped %llu\n",
                net.elapsed_ms() / 1000.0, wall, (unsigned long long)net.delivered(),
                (unsigned long long)net.dropped());
    std::printf(
        "  process VmRSS: before %ld KiB, cores started %ld KiB, after %ld KiB; VmHWM %ld KiB\n",
        before["VmRSS"], started["VmRSS"], after["VmRSS"], after["VmHWM"]);
    std::printf(
        "  RSS growth: %.1f MiB for %zu cores = %.1f KiB per core (each core knows %zu..%zu "
        "peers)\n",
        growth_kb / 1024.0, total, double(growth_kb) / double(total), min_known, max_known);
    // RSS keeps the formation's peak (the datagrams in flight then, freed since, stay resident
    // and are reused), which hides what the cores hold; malloc's count of bytes in use does not.
    const double heap_kib = (double(heap_after) - double(heap_before)) / 1024.0;
    std::printf("  heap in use (malloc): %.1f MiB more = %.1f KiB per core\n", heap_kib / 1024.0,
                heap_kib / double(total));
    std::printf(
        "  observed node: peers %zu (direct %zu, relay %zu, none %zu), records stored %zu, "
        "relay sessions %zu, relay forwarded %llu, control accepted %llu\n",
        obs.core->peers().size(), obs_direct, obs_relay, obs_none, obs.core->store().size(),
        obs.table ? obs.table->size() : size_t(0), (unsigned long long)obs.relay_forwarded,
        (unsigned long long)obs.core->counters().accepted);
    std::printf(
        "RESULT peers=%d lans=%d all_known=%d known_after_ms=%llu rss_growth_kib=%ld "
        "kib_per_core=%.1f heap_kib_per_core=%.1f obs_peers=%zu obs_records=%zu "
        "obs_sessions=%zu wall_s=%.1f\n",
        made, lans, all ? 1 : 0, (unsigned long long)known_ms, growth_kb,
        double(growth_kb) / double(total), heap_kib / double(total), obs.core->peers().size(),
        obs.core->store().size(), obs.table ? obs.table->size() : size_t(0), wall);
    for (auto& f : fail) std::printf("FAIL: %s\n", f.c_str());
    return fail.empty() ? 0 : 1;
}
