// A simulated network for node_core (DESIGN §9): many cores in one process, a virtual clock
// (offset per host, sim_host::clock_offset_ms),
// per-host one-way latency, loss, LANs behind NAT boxes (port-restricted cone or symmetric), and
// relays that forward RELAY_DATA through the real relay_session_table. WireGuard itself is not
// simulated: the data path is exercised by the cores' in-band probes, which travel exactly as
// WireGuard packets would (inside RELAY_DATA of the pair's session).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "common/ip_address.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd/core/relay_session_table.hpp"

namespace mw::sim {

using meshd::node_core;
using meshd::node_core_config;

struct sim_nat {
    int lan = 0;
    ip_address pub;
    bool symmetric = false;
    double delay_ms = 1;    // one-way, LAN <-> core
    bool isolated = false;  // hosts in the LAN cannot reach each other (client isolation)
    bool cut = false;       // the uplink is down: nothing leaves or enters the LAN
    // cone: key (internal ep); symmetric: key (internal ep, remote ep)
    std::map<std::pair<std::string, std::string>, uint16_t> out;
    struct mapping {
        wg_endpoint internal;
        std::vector<wg_endpoint> allowed;  // remotes the mapping sent to (filtering)
    };
    std::map<uint16_t, mapping> in;
    uint16_t next_port = 20000;
    std::map<uint16_t, wg_endpoint> forwards;  // port forwards: public port -> internal endpoint
};

struct sim_host {
    std::string name;
    ip_address addr;
    int lan = -1;         // -1: public
    double delay_ms = 1;  // public hosts: one-way to the core
    double loss = 0;      // probability a datagram to or from this host is lost
    // Datagrams this host sends with more UDP payload than this are dropped silently (a smaller
    // hop beyond it that sends no ICMP); 0: none.
    size_t max_send = 0;
    double jitter_ms = 0;  // extra one-way delay, uniform in [0, jitter_ms], per datagram
    // A busy machine: with probability busy_prob a datagram to this host waits for a CPU,
    // uniform in [0, busy_ms] (probe RTTs that are mostly CPU wait, as on a loaded CI box).
    double busy_prob = 0;
    double busy_ms = 0;
    bool up = true;
    // A stalled process (a GC-like pause, an overloaded machine): until then its core is neither
    // ticked nor fed; datagrams to it wait, as in a socket buffer, and are read 1 ms after it
    // resumes (after its overdue timers ran).
    uint64_t frozen_until_ms = 0;
    // This host's clock minus the simulation's (issue 14 item 1: a node whose clock is wrong by
    // hours): its core sees now + clock_offset_ms, and its deadlines are converted back. Set
    // before start_core(); may change while it runs (a clock that steps).
    int64_t clock_offset_ms = 0;
    uint64_t clock(uint64_t sim_ms) const { return uint64_t(int64_t(sim_ms) + clock_offset_ms); }
    uint64_t to_sim(uint64_t core_ms) const {
        return core_ms == UINT64_MAX ? UINT64_MAX : uint64_t(int64_t(core_ms) - clock_offset_ms);
    }
    bool relay = false;
    std::unique_ptr<node_core> core;
    // meshd down, WireGuard up (sim_net::stop_meshd): WireGuard goes on with the data plane
    // the core left, under the key it had.
    std::optional<std::vector<meshd::peer_dataplane>> wg_only;
    uint64_t wg_only_until = 0;  // after the restart: the kept peers until then
    wg_key wg_public_key{};
    // Created on first use (a relay's first session): a table is ~3.5 MB preallocated, which
    // would swamp the per-core memory figures of core_rss_bench if every host had one.
    std::unique_ptr<meshd::relay_session_table> table;
    uint64_t last_sweep_ms = 0;  // the table's expire(), at most once a second (as the forwarder)
    // Its size (set before the first session): the default holds 16,384 sessions, fewer than
    // ~20 relays need for the ~10^6 relayed sessions of 1,000 nodes (core_idle_bench).
    meshd::relay_table_limits table_limits;
    meshd::relay_session_table& relay_table() {
        if (!table) table = std::make_unique<meshd::relay_session_table>(table_limits);
        return *table;
    }
    std::unique_ptr<meshd::relay_binder> binder;
    uint64_t deadline = UINT64_MAX;
    uint64_t rx_datagrams = 0, inband_rx = 0, relay_forwarded = 0;
    // NAT_KEEPALIVEs that reached this host's control port: dropped before the core, as the
    // daemon's relay forwarder and relay proxy do.
    uint64_t nat_keepalives_rx = 0;
    // Every datagram that reached this host's address, by destination port, whether a core
    // took it or not (what a host without meshd, e.g. a victim of reflection, receives).
    std::map<uint16_t, uint64_t> rx_by_port;
    // A malicious relay: RELAY_DATA whose payload this refuses is dropped, not forwarded. It sees
    // only the bytes on the wire (payload = the frame after the RELAY_DATA header).
    std::function<bool(std::span<const uint8_t> payload)> relay_filter;
    uint64_t relay_filtered = 0;
    // Datagrams from these source addresses (as they arrive: a LAN neighbour's own address, a
    // NAT's public one) are dropped on the way in: a path that silently died.
    std::vector<ip_address> drop_from;
    // Simulated WireGuard (sim_net::simulate_wireguard): bytes per peer node.
    std::map<std::string, uint64_t> wg_tx, wg_rx;
    std::vector<meshd::core_log_event> log;  // everything the core logged
    bool keep_log = true;

    wg_endpoint ep(uint16_t port) const { return wg_endpoint{addr, port}; }
};

class sim_net {
public:
    explicit sim_net(uint64_t seed = 1, uint64_t t0 = 1'764'000'000'000ull);
    ~sim_net();

    static constexpr uint16_t port = 51821;

    // Topology. LAN k's hosts get 192.168.<k>.<n>; public hosts 203.0.113.<n>; NAT k 198.51.100.k.
    int add_lan(bool symmetric = false, double delay_ms = 1);
    sim_host& add_public(const std::string& name, double delay_ms = 1);
    sim_host& add_lan_host(int lan, const std::string& name);

    // Starts a core on a host. `psk` may differ per host (a wrong-PSK node). Its pod CIDR is
    // 10.244.<host index>.0/24 (unique beyond 256 hosts, see start_core) unless `overrides` sets
    // pod_cidrs; the host's control endpoint is advertised unless `overrides.endpoints` lists
    // others (a lying node).
    // Kills the host's core (a SIGKILLed meshd) and leaves its WireGuard running with the core's
    // last data plane (wireguard-go adopted later, a kernel device): start_core() again (with
    // next_seed set to the same identity seed) is the restart.
    void stop_meshd(sim_host& h);
    void start_core(sim_host& h, const std::vector<meshd::relay_spec>& relays,
                    const std::string& psk = "sim cluster psk 0123456789",
                    node_core_config overrides = {});
    // Every core started from now on gets this record store (tests shrink it to fill it fast).
    meshd::record_store_config store_cfg;
    // A raw datagram from `src` (which need not run a core: an attacker's host), as if its
    // socket at `src_port` sent it: through the NAT of its LAN, with the usual delays.
    void send_raw(sim_host& src, const wg_endpoint& to, std::vector<uint8_t> bytes,
                  uint16_t src_port = port) {
        transmit(src, to, std::move(bytes), src_port);
    }
    // The identity the next start_core() uses (say a ground one); random when unset.
    std::optional<meshd::identity_seed> next_seed;
    // A relayNodes edit applied live on every running core.
    void set_relays(const std::vector<meshd::relay_spec>& relays);
    // Relay specs for every host flagged relay (their public address).
    std::vector<meshd::relay_spec> relay_specs() const;

    sim_host& operator[](const std::string& name);
    sim_nat& lan(int k) { return nats_.at(k - 1); }
    std::vector<std::unique_ptr<sim_host>>& hosts() { return hosts_; }

    uint64_t now() const { return now_; }
    uint64_t elapsed_ms() const { return now_ - t0_; }
    void run_for(uint64_t ms);
    // Runs until pred() or the time limit; returns whether pred() became true.
    template <class P>
    bool run_until(P pred, uint64_t limit_ms) {
        uint64_t end = now_ + limit_ms;
        while (now_ < end) {
            if (pred()) return true;
            step(std::min(end, now_ + 50));
        }
        return pred();
    }

    // The path host `a` uses for peer `b` (none when unknown).
    meshd::path_kind path(const std::string& a, const std::string& b);
    std::optional<meshd::peer_view> peer(const std::string& a, const std::string& b);

    // Simulated WireGuard: every `interval_ms` each pair's end sends one `size`-byte frame shaped
    // like WireGuard data (type 4, random bytes): a relayed end through the relay it sends
    // through, a direct end with an endpoint to the peer's WireGuard port (wg_port); every 2 s
    // each core is told its WireGuard counters (on_wireguard_counters), as the daemon's device
    // read does. Probes are 96 bytes; choose another size. `pairs` (a, b): only a sends to b
    // (both directions need both); empty: every pair. Called again, it replaces the set.
    void simulate_wireguard(uint64_t interval_ms = 100, size_t size = 128,
                            std::set<std::pair<std::string, std::string>> pairs = {}) {
        wg_interval_ms_ = interval_ms;
        wg_size_ = size;
        wg_pairs_ = std::move(pairs);
        wg_sparse_.clear();
        next_wg_ms_ = now_;
        if (next_wg_read_ms_ == UINT64_MAX) next_wg_read_ms_ = now_ + 2000;
    }
    // Also `a` sends to `b` one frame every `period_ms` (a multiple of the interval): the
    // receiving end of a one-way stream, whose WireGuard sends only its passive keepalive every
    // 10 s. After simulate_wireguard, which forgets these.
    void simulate_sparse_wireguard(const std::string& a, const std::string& b, uint64_t period_ms) {
        wg_sparse_[{a, b}] = {period_ms, now_};
    }
    // As the daemon's relay proxy does (node_core::on_traffic): a relayed end's first simulated
    // frame to a peer after a quiet second is reported to its core at once.
    bool wg_notify_traffic = false;
    // The daemon reads the device on another thread: the counters of a read reach the core this
    // long after it (0: at once). The next read is timed when the read starts, from what the
    // core wanted then (meshd_runtime's poll_wg), as the daemon does.
    uint64_t wg_read_delay_ms = 0;
    // No more simulated WireGuard frames (an idle cluster); the counter reads go on.
    void stop_wireguard() { next_wg_ms_ = UINT64_MAX; }
    static constexpr uint16_t wg_port = 51820;
    // A datagram from any source (an attacker's raw socket: the source may be spoofed), routed
    // from the public core like any other.
    void inject(const wg_endpoint& from, const wg_endpoint& to, std::vector<uint8_t> bytes,
                double delay_ms = 1);
    // Called for every datagram a host sends (its own source address, before NAT): for tests
    // that capture datagrams or count the bytes a node sends to an address.
    std::function<void(const sim_host& src, const wg_endpoint& to,
                       const std::vector<uint8_t>& bytes)>
        on_send;

    // Called for every datagram a host's port takes in (after loss and NAT filtering, before its
    // core): for tests that count what a node receives, by kind.
    std::function<void(const sim_host& dst, const std::vector<uint8_t>& bytes)> on_deliver;

    uint64_t delivered() const { return delivered_; }
    uint64_t dropped() const { return dropped_; }

private:
    struct event {
        uint64_t at_us;
        uint64_t seq;
        wg_endpoint from, to;
        std::vector<uint8_t> bytes;
        bool operator>(const event& o) const {
            return std::tie(at_us, seq) > std::tie(o.at_us, o.seq);
        }
    };
    void step(uint64_t until_ms);
    void drain(sim_host& h);
    void route(const wg_endpoint& from, const wg_endpoint& to, std::vector<uint8_t> bytes,
               double delay_ms);
    void transmit(sim_host& src, const wg_endpoint& to, std::vector<uint8_t> bytes,
                  uint16_t src_port = port);
    void deliver(const event& e);
    sim_host* host_at(const ip_address& a);
    sim_nat* nat_at(const ip_address& a);
    bool lost(double p);

    std::mt19937_64 rng_;
    uint64_t t0_, now_;
    uint64_t now_us_;
    uint64_t seq_ = 0;
    std::vector<std::unique_ptr<sim_host>> hosts_;
    // hosts_ and nats_ by address (host_at and nat_at run for every datagram; a scan of 1,000
    // hosts each time was a large part of a 1,000-node run). Addresses never change once added.
    std::map<ip_address, sim_host*> host_by_addr_;
    std::map<ip_address, size_t> nat_by_addr_;
    std::vector<sim_nat> nats_;
    std::priority_queue<event, std::vector<event>, std::greater<event>> queue_;
    uint64_t delivered_ = 0, dropped_ = 0;
    int public_count_ = 0;
    uint16_t ephemeral_port_ = 40000;
    void wireguard_tick();
    uint64_t wg_interval_ms_ = 0;
    size_t wg_size_ = 128;
    uint64_t next_wg_ms_ = UINT64_MAX, next_wg_read_ms_ = UINT64_MAX;
    // wg_read_delay_ms: the reads on their way to the cores, and when they arrive
    std::vector<std::pair<sim_host*, std::vector<meshd::wg_peer_counters>>> wg_reads_in_flight_;
    uint64_t wg_reads_at_ = UINT64_MAX;
    std::map<uint64_t, std::pair<sim_host*, sim_host*>> wg_frames_;  // counter field -> (from, to)
    std::set<std::pair<std::string, std::string>> wg_pairs_;         // empty: all
    struct sparse_sender {
        uint64_t period_ms = 0, next_ms = 0;
    };
    std::map<std::pair<std::string, std::string>, sparse_sender> wg_sparse_;
    std::map<std::pair<sim_host*, std::string>, uint64_t> wg_last_sent_;  // wg_notify_traffic
};

}  // namespace mw::sim
