#include "meshd/meshd_runtime.hpp"
#include "meshd/core/endpoint_filter.hpp"

#include <sodium.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "common/log.hpp"
#include "common/rtnl.hpp"
#include "common/sysctl.hpp"
#include "common/wireguard/wg_backend.hpp"
#include "common/wireguard/wg_reconciler.hpp"
#include "meshd/background_writer.hpp"
#include "meshd/boot_epoch.hpp"
#include "meshd/config_watcher.hpp"
#include "meshd/control_api.hpp"
#include "meshd/control_inbox.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd/core/path_mtu.hpp"
#include "meshd/core/psk_sealer.hpp"
#include "meshd/daemon_clock.hpp"
#include "meshd/dataplane_planner.hpp"
#include "meshd/host_addresses.hpp"
#include "meshd/io/control_server.hpp"
#include "meshd/io/metrics_server.hpp"
#include "meshd/kube_wiring.hpp"
#include "meshd/mdns_service.hpp"
#include "meshd/metrics_export.hpp"
#include "meshd/node_snapshot.hpp"
#include "meshd/record_cache_wiring.hpp"
#include "meshd/relay_nodes_diff.hpp"
#include "meshd/relay_path_mtu.hpp"
#include "meshd/relay_role_file.hpp"
#include "meshd/transport.hpp"
#include "meshd/wireguard_worker.hpp"

namespace mw::meshd {

namespace {

namespace asio = boost::asio;
using json = nlohmann::json;

constexpr auto k_wg_poll = std::chrono::seconds(2);
// How long after the start peers found on the WireGuard device but not (yet) planned are kept:
// the core finds its peers again within ~1 s (records from a relay or the cache, probes); 10 s
// is ample and leaves a peer removed while meshd was down on the device for no longer.
constexpr uint64_t k_keep_device_peers_ms = 10000;
constexpr auto k_addr_poll = std::chrono::seconds(15);
constexpr auto k_config_poll = std::chrono::seconds(2);
// revokedNodes (validated as 64 hex digits by the config parser) as node IDs.
std::vector<node_id> revoked_ids(const std::vector<std::string>& hex) {
    std::vector<node_id> out;
    for (const auto& h : hex) {
        if (auto id = node_id::from_hex(h)) out.push_back(*id);
    }
    return out;
}

control_inbox_config inbox_config() {
    control_inbox_config c;
    // The buckets' keyed hash: nobody may pick an address that shares another's bucket.
    c.buckets.hash_seed = uint64_t(randombytes_random()) << 32 | randombytes_random();
    return c;
}

// Datagrams handled per posted handler before timers and the control API get their turn.
constexpr int k_inbox_batch = 64;

void emit(const core_log_event& e) {
    // log::write takes an initializer_list; build the line's fields by hand.
    std::string msg = e.msg;
    std::vector<log::field> f;
    f.reserve(e.fields.size());
    for (const auto& [k, v] : e.fields) f.emplace_back(k, v);
    auto lvl = static_cast<log::level>(e.level);
    // At most 8 fields per event (the core never uses more).
    auto get = [&](size_t i) { return i < f.size() ? f[i] : log::field{"", ""}; };
    switch (f.size()) {
        case 0:
            log::write(lvl, msg);
            break;
        case 1:
            log::write(lvl, msg, {get(0)});
            break;
        case 2:
            log::write(lvl, msg, {get(0), get(1)});
            break;
        case 3:
            log::write(lvl, msg, {get(0), get(1), get(2)});
            break;
        case 4:
            log::write(lvl, msg, {get(0), get(1), get(2), get(3)});
            break;
        case 5:
            log::write(lvl, msg, {get(0), get(1), get(2), get(3), get(4)});
            break;
        default:
            log::write(lvl, msg, {get(0), get(1), get(2), get(3), get(4), get(5)});
            break;
    }
}

// Wires the pieces together on the core's thread (see meshd_runtime.hpp and docs/architecture.md
// "meshd runtime"): node_core (pure), transport (the UDP port), dataplane_planner (pure) and the
// wireguard_worker (its own thread), the control API and metrics (one node_snapshot), and the
// config_watcher.
class daemon {
public:
    daemon(const meshd_config& cfg, std::string config_path, const node_identity& id,
           const cluster_keys& keys)
        : cfg_(cfg),
          identity_(id),
          sealer_(keys.sealer),
          key_fingerprints_(keys.fingerprints),
          signals_(io_, SIGINT, SIGTERM),
          timer_(io_),
          wg_timer_(io_),
          addr_timer_(io_),
          config_timer_(io_),
          inbox_(inbox_config()),
          transport_(cfg_, [this](std::span<const uint8_t> d, const wg_endpoint& from, uint64_t sid,
                                  uint16_t via) { on_control(d, from, sid, via); }),
          watcher_(std::move(config_path)),
          cache_(cfg_.state_dir, keys.cache_seal, keys.cache_accept, io_, id.id(), planner_,
                 observed_),
          planner_(id.id()) {
        // WireGuard started sending to a quiet relayed peer: its pair turns active now (fast
        // probes, failover within the budget), not at the next device read (up to 2 s later).
        transport_.set_on_wake(
            [this](uint64_t sid) { asio::post(io_, [this, sid] { on_wake(sid); }); });
    }

    int run();
    void set_mtu(unsigned mtu) {
        mtu_ = mtu;
        relay_mtu_ = relay_path_mtu(mtu);
    }

private:
    // Called on a transport loop thread: into the bounded inbox, for the core's thread.
    void on_control(std::span<const uint8_t> d, const wg_endpoint& from, uint64_t sid,
                    uint16_t via);
    void drain_inbox();
    void on_wake(uint64_t session_id);
    status sync_transport();
    void watch_config();
    void reload_config();
    void reload_keys();
    status start_wireguard();
    void arm_timer(uint64_t deadline);
    void on_timer();
    void after_core();  // flush sends, logs, pings, data plane
    void apply_dataplane();
    void run_proxy_ops(const std::vector<proxy_op>& ops);
    void poll_wg();
    void check_relay_mtu();  // relay_path_mtu: the interface MTU while a relay path is smaller
    // relay_role_file.hpp: the role read at start into node_core_config, and kept on disk.
    void read_role_file(node_core_config& cc);
    void keep_role_file();
    void keep_route_mtus();  // the route MTUs a previous meshd measured, read at start
    void poll_addresses();
    void start_mdns();
    void on_mdns_peer(const mdns_peer& p);
    node_snapshot snapshot();
    void handle(const json& req, control_server::reply_fn reply);
    void ping(const control_request& req, control_server::reply_fn reply);
    void shutdown();

    meshd_config cfg_;  // relayNodes, dht.bootstrap and logLevel follow live edits of the file
    unsigned mtu_ = 0;  // the WireGuard interface's (set_mtu); 0 leaves the device default
    relay_path_mtu relay_mtu_{0};  // lowers mtu_ while a relay path is smaller (issue 15)
    node_identity identity_;
    psk_sealer sealer_;  // the keys at start (node_core holds the live ones)
    std::vector<std::string> key_fingerprints_;  // of the keys in use
    std::string key_error_;                      // the last refused key set's error (logged once)
    asio::io_context io_;
    asio::signal_set signals_;
    asio::steady_timer timer_, wg_timer_, addr_timer_, config_timer_;
    std::unique_ptr<metrics_server> metrics_;
    uint64_t armed_deadline_ = UINT64_MAX;
    std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

    // Between the transport's threads and ours; declared before transport_, whose threads push
    // into it until it stops.
    control_inbox inbox_;
    control_inbox::item inbox_item_;  // reused buffer
    transport transport_;
    config_watcher watcher_;
    std::unique_ptr<node_core> core_;
    std::unique_ptr<wireguard_worker> wg_;
    std::unique_ptr<control_server> ctl_;
    std::unique_ptr<mdns_service> mdns_;  // mdns.enable: LAN discovery (mdns_service.hpp)
    std::unique_ptr<kube_wiring> kube_;   // kubernetes.enable (kube_wiring.hpp)
    bool stopping_ = false;
    uint64_t keep_peers_until_ = 0;  // core_ms(): start + k_keep_device_peers_ms
    bool keep_window_over_ = false;  // keep_peers_until_ passed and was applied

    // The on-disk record cache (record_cache_wiring.hpp): loaded once at start, written when
    // the store changed (debounced) and at shutdown.
    record_cache_wiring cache_;

    // The relay role on disk (relay_role_file.hpp): saved while serving, removed otherwise.
    relay_role_file role_file_{cfg_.state_dir};
    bool role_file_present_ = false;      // a file may be there (read at start, or written since)
    uint64_t role_file_ms_ = 0;           // steady_ms() of the last write asked for
    saved_role_file role_file_last_;      // what was last asked to be written (its clock aside)
    background_writer role_writer_{io_};  // the writes, off this thread

    // Data plane. The planner holds the kept state (last configuration per peer, proxy sockets,
    // keepalive staging); WireGuard calls run on wg_'s thread.
    dataplane_planner planner_;
    std::optional<wg_device> observed_;      // the last device read (meshctl peers)
    bool wg_get_busy_ = false;               // a device read is queued or running
    uint64_t planned_version_ = UINT64_MAX;  // the core's data plane version last planned
    bool replan_ = false;                    // the transport changed: plan again at once
    bool apply_failed_ = false;              // the last apply failed: again at the next poll
    bool keepalive_pending_ = false;
    std::vector<std::string> dropped_;  // the planner's last make_valid() drops (logged once)
    uint64_t apply_seq_ = 0;  // applies handed to wg_ (only the latest one's failure counts)

    struct pending_ping {
        node_id peer;
        std::string path, relay;
        int count = 0, sent = 0;
        std::vector<double> rtts;
        std::map<uint64_t, std::chrono::steady_clock::time_point> sent_at;
        control_server::reply_fn reply;
        std::shared_ptr<asio::steady_timer> timer;
    };
    std::map<uint64_t, std::shared_ptr<pending_ping>> pings_;  // token -> ping
};

void daemon::on_control(std::span<const uint8_t> d, const wg_endpoint& from, uint64_t sid,
                        uint16_t via) {
    // Bounded and rate-limited per source before anything is allocated or decrypted; one posted
    // handler per wakeup, not per datagram.
    if (inbox_.push(d, from, sid, via, steady_ms()) == control_inbox::push_result::queued_wake) {
        asio::post(io_, [this] { drain_inbox(); });
    }
}

void daemon::on_wake(uint64_t session_id) {
    if (!core_ || stopping_) return;
    for (const auto& dp : core_->dataplane()) {
        bool ours = dp.session_id == session_id;
        for (const auto& s : dp.standby) ours |= s.first == session_id;
        if (!ours) continue;
        core_->on_traffic(dp.wg_public_key, core_ms());
        after_core();
        return;
    }
}

void daemon::drain_inbox() {
    int n = 0;
    bool more = true;
    while (n < k_inbox_batch && (more = inbox_.pop(inbox_item_))) {
        ++n;
        if (!core_ || stopping_) continue;  // drained and dropped
        const auto& it = inbox_item_;
        core_->on_datagram(it.bytes, it.from, it.session_id, it.via, core_ms());
    }
    if (n > 0 && core_ && !stopping_) after_core();
    // A full batch: the inbox may hold more (its wakeup is still pending): come back after the
    // other handlers queued meanwhile.
    if (more) asio::post(io_, [this] { drain_inbox(); });
}

status daemon::sync_transport() {
    auto changed = transport_.sync(core_->role(), [this] { planner_.proxy_gone(); });
    if (!changed) return changed.err();
    if (*changed) replan_ = true;
    return {};
}

status daemon::start_wireguard() {
    wg_backend_options o;
    o.ifname = cfg_.interface;
    auto b = make_wg_backend(to_string(cfg_.wg_backend), o);
    if (!b) return b.err();
    if (auto s = (*b)->up(); !s) return s;
    wg_ = std::make_unique<wireguard_worker>(std::move(*b), io_);
    log::info("wireguard interface up", {{"interface", cfg_.interface},
                                         {"backend", std::string(wg_->kind())},
                                         {"port", std::to_string(cfg_.wg_listen_port)}});
    return {};
}

void daemon::arm_timer(uint64_t deadline) {
    if (deadline >= armed_deadline_) return;
    armed_deadline_ = deadline;
    uint64_t now = core_ms();
    auto wait = std::chrono::milliseconds(deadline > now ? deadline - now : 0);
    timer_.expires_after(wait);
    timer_.async_wait([this](const boost::system::error_code& ec) {
        if (ec) return;
        armed_deadline_ = UINT64_MAX;
        on_timer();
    });
}

void daemon::on_timer() {
    if (stopping_) return;
    core_->tick(core_ms());
    after_core();
}

void daemon::after_core() {
    for (const auto& e : core_->take_log()) emit(e);
    if (!stopping_) {
        if (auto s = sync_transport(); !s) {
            log::error("no control transport", {{"error", s.err().message}});
        }
    }
    for (const auto& o : core_->take_outgoing()) transport_.send(o);
    for (const auto& r : core_->take_ping_results()) {
        auto it = pings_.find(r.token);
        if (it == pings_.end()) continue;
        auto p = it->second;
        pings_.erase(it);
        // The core's clock has ms resolution; the daemon's steady clock gives the real figure.
        auto st = p->sent_at.find(r.token);
        double rtt = r.rtt_ms;
        if (st != p->sent_at.end()) {
            rtt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                            st->second)
                      .count();
        }
        p->rtts.push_back(rtt);
    }
    if (replan_ || core_->dataplane_version() != planned_version_) apply_dataplane();
    keep_role_file();
    // The core may have pulled its deadline in (a datagram to act on, a ping).
    arm_timer(core_->next_deadline());
}

void daemon::read_role_file(node_core_config& cc) {
    auto r = role_file_.load();
    if (!r) {
        if (r.err().is(errc::not_found)) return;
        // Never fatal: the role is verified as on a first start, and the file replaced.
        role_file_present_ = true;
        log::warn("relay role file ignored; verifying the role first",
                  {{"path", role_file_.path()}, {"error", r.err().message}});
        return;
    }
    role_file_present_ = true;
    auto now = cache_clock::now();
    if (!now) {
        log::warn("relay role file ignored: no clock to age it",
                  {{"path", role_file_.path()}, {"error", now.err().message}});
        return;
    }
    elapsed_basis basis{};
    const uint64_t age = elapsed_since(r->at, *now, &basis);
    cc.saved_role = node_core_config::saved_relay_role{r->listed, r->advertised, r->verified, age};
    log::info("relay role file read", {{"path", role_file_.path()},
                                       {"mode", r->listed ? "listed" : "offering"},
                                       {"age_ms", std::to_string(age)},
                                       {"clock", to_string(basis)}});
}

void daemon::keep_role_file() {
    if (!core_ || stopping_) return;
    const auto role = core_->role();
    // Serving on the restored role, not dialled back yet: the file stays as it was read (its
    // age keeps counting), so a relay restarting over and over does not extend it.
    if (role == relay_role_state::active && core_->role_cause() == relay_role_cause::restarted)
        return;
    if (role != relay_role_state::active) {
        if (!role_file_present_) return;
        role_file_present_ = false;
        role_file_ms_ = 0;
        role_file_last_ = {};
        role_writer_.post(
            [file = role_file_] { return file.remove(); },
            [](const status& s) {
                if (!s) {
                    log::warn("cannot remove the relay role file", {{"error", s.err().message}});
                }
            });
        return;
    }
    saved_role_file f;
    f.listed = core_->config().relay_role;
    f.advertised = core_->role_addresses();
    f.verified = core_->verified_addresses();
    if (f.verified.empty()) return;
    const uint64_t now = steady_ms();
    const bool same = f.listed == role_file_last_.listed &&
                      f.advertised == role_file_last_.advertised &&
                      f.verified == role_file_last_.verified;
    // Unchanged content (also after a failed write) waits for the refresh, not every call.
    if (role_file_ms_ && now < role_file_ms_ + relay_role_file::refresh_ms && same) return;
    auto at = cache_clock::now();
    if (!at) return;
    f.at = *at;
    role_file_ms_ = now;
    role_file_present_ = true;
    role_file_last_ = f;
    role_writer_.post(
        [file = role_file_, f = std::move(f)] { return file.save(f); },
        [](const status& s) {
            if (!s) {
                log::warn("cannot write the relay role file", {{"error", s.err().message}});
            }
        });
}

void daemon::run_proxy_ops(const std::vector<proxy_op>& ops) {
    relay_proxy* proxy = transport_.proxy();
    const wg_endpoint wg_local{ip_address::parse("127.0.0.1").value(), cfg_.wg_listen_port};
    std::set<node_id> failed;  // add or retarget failed: skip that peer's aliases
    for (const auto& op : ops) {
        if (!proxy) break;  // only while the proxy runs (the planner then plans none)
        switch (op.op) {
            case proxy_op::kind::add_peer: {
                auto local = proxy->add_peer(op.session_id, op.relay, wg_local, op.probe_index);
                if (!local) {
                    log::warn("cannot add a relay proxy socket",
                              {{"peer", op.name}, {"error", local.err().message}});
                    failed.insert(op.peer);
                    planner_.proxy_done(op, false);
                } else {
                    planner_.proxy_done(op, true, *local);
                }
                break;
            }
            case proxy_op::kind::retarget_peer: {
                auto s = proxy->retarget_peer(op.session_id, op.other_id, op.relay);
                if (!s) {
                    log::warn("cannot move a peer to another relay",
                              {{"peer", op.name}, {"error", s.err().message}});
                    failed.insert(op.peer);
                }
                planner_.proxy_done(op, s.ok());
                break;
            }
            case proxy_op::kind::add_alias: {
                if (failed.count(op.peer)) break;
                auto s = proxy->add_alias(op.session_id, op.other_id, op.relay);
                if (!s) {
                    log::warn("cannot register a standby relay session",
                              {{"peer", op.name}, {"error", s.err().message}});
                }
                planner_.proxy_done(op, s.ok());
                break;
            }
            case proxy_op::kind::remove_alias:
                if (failed.count(op.peer)) break;
                planner_.proxy_done(op, proxy->remove_alias(op.other_id));
                break;
            case proxy_op::kind::remove_peer:
                planner_.proxy_done(op, proxy->remove_peer(op.session_id));
                break;
        }
    }
}

void daemon::apply_dataplane() {
    uint64_t now = core_ms();
    auto dps = core_->dataplane();
    uint64_t version = core_->dataplane_version();
    bool proxy_up = transport_.proxy() != nullptr;
    run_proxy_ops(planner_.proxy_ops(dps, proxy_up, now));
    auto plan = planner_.wireguard(dps, proxy_up, now);
    if (plan.dropped != dropped_) {  // logged when it changes, not on every apply
        for (const auto& d : plan.dropped) {
            log::warn("wireguard setting left out so that the rest applies", {{"detail", d}});
        }
        dropped_ = plan.dropped;
    }
    keepalive_pending_ = plan.keepalive_pending;
    planned_version_ = version;
    replan_ = false;
    apply_failed_ = false;

    wg_interface_config want;
    want.device.private_key = identity_.wg_private_key();
    want.device.listen_port = cfg_.wg_listen_port;
    want.mtu = mtu_;
    // A relayed peer's measured path MTU (issue 15) as the MTU of the routes to its pod CIDRs:
    // a pod's larger packet then gets an ICMP "too big" from this node, instead of a frame the
    // relay path cannot carry. Only below the interface MTU (which holds otherwise).
    for (const auto& dp : dps) {
        if (!dp.path_mtu || dp.path_mtu >= mtu_) continue;
        for (const auto& a : dp.allowed_ips) want.route_mtu[a.network()] = dp.path_mtu;
    }
    // A device kept (kernel) or adopted (wireguard-go) from before a crash carries peers the
    // fresh core has not found again yet: they stay until it had time to (no flush).
    want.keep_other_peers = now < keep_peers_until_;
    size_t peers = plan.peers.size();
    want.device.peers = std::move(plan.peers);
    uint64_t seq = ++apply_seq_;
    // On the WireGuard thread: a UAPI call may block for seconds and must not delay the core.
    wg_->apply(std::move(want), [this, seq, peers](result<wg_reconcile_report> rep) {
        if (stopping_) return;
        if (!rep) {
            log::error("cannot apply the wireguard configuration",
                       {{"interface", cfg_.interface}, {"error", rep.err().message}});
            // Retried on the next poll, unless a newer state is on its way already.
            if (seq == apply_seq_) apply_failed_ = true;
            return;
        }
        if (rep->changed()) {
            log::debug("data plane applied",
                       {{"peers", std::to_string(peers)},
                        {"operations", std::to_string(rep->wg_operations)},
                        {"routes_added", std::to_string(rep->routes_added)},
                        {"routes_removed", std::to_string(rep->routes_removed)},
                        {"routes_changed", std::to_string(rep->routes_changed)}});
        }
    });
}

void daemon::keep_route_mtus() {
    // As the core's search is off (node_core_config::pmtu_max below the smallest MTU probed).
    if (!cfg_.path_mtu_discovery || mtu_ < path_mtu_config{}.base) return;
    // A netlink dump before the loop runs (no timer is driven yet), not a device read: the
    // first apply, built right after start(), would drop these MTUs otherwise.
    auto fail = [&](const std::string& msg) {
        log::warn("cannot read the interface's routes; path MTUs are measured again",
                  {{"interface", cfg_.interface}, {"error", msg}});
    };
    auto nl = rtnl::open_at(wg_->backend().options().netns_path);
    if (!nl) return fail(nl.err().message);
    auto link = nl->get_link(cfg_.interface);
    if (!link) {
        if (!link.err().is_errno(ENODEV)) fail(link.err().message);
        return;  // ENODEV: a new device, nothing from before
    }
    auto routes =
        wg_reconciler::read_owned_routes(*nl, link->index, wg_interface_config{}.route_table);
    if (!routes) return fail(routes.err().message);
    std::map<ip_prefix, unsigned> kept;
    for (const auto& [prefix, mtu] : *routes) {
        if (mtu && mtu < mtu_) kept.emplace(prefix, mtu);
    }
    if (kept.empty()) return;
    log::info("route MTUs from before the restart kept until confirmed",
              {{"routes", std::to_string(kept.size())}, {"reason", "route_mtu_before_restart"}});
    core_->on_route_mtus_before(kept, core_ms());
}

void daemon::poll_wg() {
    if (stopping_) return;
    // A read still queued or running (the device is slow) is not asked for again.
    if (!wg_get_busy_) {
        wg_get_busy_ = true;
        wg_->get([this](result<wg_device> d) {
            wg_get_busy_ = false;
            if (!d) return;
            // Relays are judged by what they carry: the core compares our WireGuard's tx for
            // a relayed peer with the rx the peer reports in its sealed probes.
            std::vector<wg_peer_counters> counters;
            counters.reserve(d->peers.size());
            for (const auto& p : d->peers) {
                counters.push_back(
                    wg_peer_counters{p.public_key, p.rx_bytes, p.tx_bytes, p.endpoint});
            }
            if (core_ && !stopping_) {
                core_->on_wireguard_counters(counters, core_ms());
                after_core();
            }
            observed_ = std::move(*d);
        });
    }
    check_relay_mtu();
    // Retries a failed apply, expires lingering proxy sockets, switches staged keepalives on.
    bool keep_ended = !keep_window_over_ && core_ms() >= keep_peers_until_;
    if (keep_ended) keep_window_over_ = true;  // peers nobody found again go now
    if (replan_ || core_->dataplane_version() != planned_version_ || apply_failed_ ||
        planner_.lingering() || keepalive_pending_ || keep_ended) {
        apply_dataplane();
    }
    // Faster while a direct pair's PONGs are late (node_core::wg_read_interval).
    wg_timer_.expires_after(core_ ? std::chrono::milliseconds(core_->wg_read_interval(core_ms()))
                                  : k_wg_poll);
    wg_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) poll_wg();
    });
}

void daemon::check_relay_mtu() {
    auto* proxy = transport_.proxy();
    if (!mtu_ || !proxy) return;
    std::vector<ip_address> relays;
    for (const auto& r : cfg_.relay_nodes) {
        relays.insert(relays.end(), r.advertise_address.begin(), r.advertise_address.end());
    }
    unsigned was = mtu_;
    mtu_ = relay_mtu_.update(proxy->stats().oversize, relays, core_ms());
    if (mtu_ != was) {
        log::info("WireGuard interface MTU follows the smallest relay path MTU",
                  {{"interface", cfg_.interface},
                   {"mtu", std::to_string(mtu_)},
                   {"was", std::to_string(was)}});
        replan_ = true;
    }
}

void daemon::poll_addresses() {
    if (stopping_) return;
    core_->set_endpoints(advertised_endpoints(cfg_.interface, cfg_.listen_port), core_ms());
    after_core();
    addr_timer_.expires_after(k_addr_poll);
    addr_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) poll_addresses();
    });
}

void daemon::start_mdns() {
    mdns_service_config mc;
    mc.policy = mdns_link_policy{cfg_.interface, cfg_.mdns_interfaces, cfg_.mdns_link_local};
    mc.service.instance = cfg_.node_name;
    // A host name nobody else uses (not the machine's own, which avahi may announce).
    mc.service.host_label = "meshwire-" + identity_.id().short_hex();
    mc.service.port = cfg_.listen_port;
    mc.service.txt = {"id=" + identity_.id().hex(), "v=" + std::to_string(psk_sealer::version)};
    mc.self = identity_.id();
    auto m =
        mdns_service::start(io_, std::move(mc), [this](const mdns_peer& p) { on_mdns_peer(p); });
    if (!m) {
        log::warn("mdns disabled: cannot open its sockets", {{"error", m.err().message}});
        return;
    }
    mdns_ = std::move(*m);
}

// mDNS only says "a meshd may be here": the node is accepted after the authenticated exchange.
// Its endpoints go to the core as path candidates for that node ID, and as rendezvous (asked for
// records with HELLO, how two LAN neighbours exchange their records without a relay).
void daemon::on_mdns_peer(const mdns_peer& p) {
    if (!core_ || stopping_) return;
    uint64_t now = core_ms();  // the core's clock, never the wall clock (core_ms())
    for (const auto& ep : p.endpoints) {
        core_->offer_endpoint(p.id, ep, learned_via::mdns, now);
        core_->offer_endpoint(std::nullopt, ep, learned_via::mdns, now);
    }
    after_core();
}

node_snapshot daemon::snapshot() {
    return take_snapshot(snapshot_sources{
        .cfg = cfg_,
        .core = *core_,
        .identity = identity_,
        .backend = wg_->kind(),
        .uptime_s = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::steady_clock::now() - started_)
                        .count(),
        .now_ms = unix_ms(),
        .forwarder = transport_.forwarder(),
        .proxy = transport_.proxy(),
        .observed = observed_,
        .proxied = planner_.proxied(),
        .inbox = &inbox_,
        .mdns = mdns_.get(),
        .cache = &cache_.stats(),
        .mtu = mtu_,
    });
}

void daemon::handle(const json& j, control_server::reply_fn reply) {
    auto req = parse_control_request(j);
    if (!req) return reply({{"ok", false}, {"error", req.err().message}});
    if (req->cmd == "status") return reply({{"ok", true}, {"result", status_json(snapshot())}});
    if (req->cmd == "peers") return reply({{"ok", true}, {"result", peers_json(snapshot())}});
    if (req->cmd == "relays") return reply({{"ok", true}, {"result", relays_json(snapshot())}});
    ping(*req, std::move(reply));
}

void daemon::ping(const control_request& req, control_server::reply_fn reply) {
    const std::string node = req.node;
    auto id = core_->resolve(node);
    if (!id) {
        return reply(
            {{"ok", false}, {"error", "no peer named \"" + node + "\" (see meshctl peers)"}});
    }
    auto p = std::make_shared<pending_ping>();
    p->peer = *id;
    p->count = req.count;
    p->reply = std::move(reply);
    p->timer = std::make_shared<asio::steady_timer>(io_);
    // One PING every 200 ms; the answer is complete 1 s after the last one.
    auto step = std::make_shared<std::function<void()>>();
    *step = [this, p, step, node]() {
        if (stopping_) return;
        if (p->sent < p->count) {
            for (const auto& v : core_->peers()) {
                if (v.id == p->peer) {
                    p->path = to_string(v.path);
                    p->relay = v.relay ? v.relay_name : "";
                }
            }
            auto tok = core_->ping(p->peer, core_ms());
            ++p->sent;
            if (tok) {
                pings_[*tok] = p;
                p->sent_at[*tok] = std::chrono::steady_clock::now();
            }
            after_core();
            p->timer->expires_after(std::chrono::milliseconds(p->sent < p->count ? 200 : 1000));
            p->timer->async_wait([step](const boost::system::error_code& ec) {
                if (!ec) (*step)();
            });
            return;
        }
        for (auto it = pings_.begin(); it != pings_.end();) {
            it = it->second == p ? pings_.erase(it) : std::next(it);
        }
        json rtts = json::array();
        for (double r : p->rtts) rtts.push_back(r);
        json res = {{"node", node},    {"id", p->peer.hex()},
                    {"path", p->path}, {"relay", p->relay.empty() ? json(nullptr) : json(p->relay)},
                    {"sent", p->sent}, {"received", p->rtts.size()},
                    {"rttMs", rtts}};
        p->reply({{"ok", true}, {"result", res}});
        *step = nullptr;  // break the cycle
    };
    (*step)();
}

void daemon::watch_config() {
    config_timer_.expires_after(k_config_poll);
    config_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (ec || stopping_) return;
        reload_config();
        reload_keys();
        watch_config();
    });
}

void daemon::reload_config() {
    auto next = watcher_.poll();
    if (!next) return;
    auto change = compare_configs(cfg_, *next);
    for (const auto& f : change.restart_only) {
        log::warn("config field changed; it takes effect at the next restart", {{"field", f}});
    }
    if (change.log_level) {
        log::level lvl = log::level::info;
        if (log::parse_level(next->log_level, lvl)) {
            // The line is written under whichever of the two levels lets it through.
            log::level old = log::current_level();
            log::level line = std::max(log::level::info, std::min(old, lvl));
            if (lvl < old) log::set_level(lvl);
            log::write(line, "logLevel changed by config", {{"level", next->log_level}});
            log::set_level(lvl);
            cfg_.log_level = next->log_level;
        }
    }
    if (next->dht_bootstrap != cfg_.dht_bootstrap) {
        std::string list;
        for (const auto& a : next->dht_bootstrap) list += (list.empty() ? "" : ",") + a.str();
        log::info("dht.bootstrap changed by config", {{"bootstrap", list.empty() ? "-" : list}});
        cfg_.dht_bootstrap = next->dht_bootstrap;
        core_->set_bootstrap(cfg_.dht_bootstrap, core_ms());
        after_core();
    }
    if (change.revoked_nodes) {
        log::info("revokedNodes changed by config",
                  {{"count", std::to_string(next->revoked_nodes.size())}});
        cfg_.revoked_nodes = next->revoked_nodes;
        core_->set_revoked(revoked_ids(cfg_.revoked_nodes), core_ms());
        after_core();
    }
    if (change.psk) {
        // Applied by reload_keys(), right after this: the files are read there.
        cfg_.psk_path = next->psk_path;
        cfg_.psk_accept_paths = next->psk_accept_paths;
    }
    auto diff = relay_nodes_diff(cfg_.relay_nodes, next->relay_nodes, cfg_.node_name);
    if (diff.empty()) return;
    for (const auto& r : diff.added) log::info("relay added by config", {{"relay", r.node_name}});
    for (const auto& r : diff.removed) {
        log::info("relay removed by config; its pairs move", {{"relay", r.node_name}});
    }
    for (const auto& r : diff.changed) {
        log::info("relay addresses changed by config", {{"relay", r.node_name}});
    }
    cfg_.relay_nodes = next->relay_nodes;
    std::vector<relay_spec> specs;
    specs.reserve(cfg_.relay_nodes.size());
    for (const auto& r : cfg_.relay_nodes)
        specs.push_back(relay_spec{r.node_name, r.advertise_address});
    core_->set_relays(std::move(specs), cfg_.self_relay() != nullptr, core_ms());
    after_core();
}

// The PSK files are read at every poll (three small files at most every 2 s), not only when the
// config changes: a roll may replace a file's content under the same path (a Secret update).
void daemon::reload_keys() {
    auto keys = cluster_keys::load(cfg_);
    if (!keys) {
        if (keys.err().message != key_error_) {
            key_error_ = keys.err().message;
            log::error(
                "cluster keys not changed: the PSK files are not usable; the keys in use "
                "stay",
                {{"error", key_error_}});
        }
        return;
    }
    key_error_.clear();
    if (keys->fingerprints == key_fingerprints_) return;
    for (const auto& w : keys->warnings) log::warn(w, {});
    key_fingerprints_ = keys->fingerprints;
    core_->set_cluster_keys(keys->sealer, core_ms());
    cache_.set_keys(keys->cache_seal, keys->cache_accept);
    log::info("cluster keys changed", {{"count", std::to_string(keys->fingerprints.size())},
                                       {"seal", keys->fingerprints[0]},
                                       {"accept", keys->accepted_list()},
                                       {"retired", core_->sealer().retired_fingerprint().empty()
                                                       ? "-"
                                                       : core_->sealer().retired_fingerprint()}});
    after_core();
}

void daemon::shutdown() {
    if (stopping_) return;
    stopping_ = true;
    log::info("meshd stopping");
    timer_.cancel();
    wg_timer_.cancel();
    addr_timer_.cancel();
    config_timer_.cancel();
    cache_.stop();
    role_writer_.stop();  // what waits is written (or removed) first
    if (metrics_) metrics_->stop();
    if (kube_) kube_->stop();  // a request in progress is closed; nothing is torn down
    if (mdns_) mdns_->stop();  // goodbyes (TTL 0) so that LAN neighbours forget us at once
    if (ctl_) ctl_->stop();
    transport_.stop();
    if (wg_) {
        // Waits for a WireGuard call in progress; queued ones are dropped.
        wg_->stop();
        // A clean stop takes wireguard-go with it (the interface goes too). A kernel device
        // stays, so a restarted meshd finds the data path still working. After a crash
        // (SIGKILL) wireguard-go stays as well and the next meshd adopts it (wg_userspace_backend).
        if (wg_->kind() == "userspace") {
            if (auto s = wg_->backend().down(); !s)
                log::warn("cannot stop wireguard-go", {{"error", s.err().message}});
        }
    }
    io_.stop();
}

int daemon::run() {
    for (const char* k : {"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"}) {
        if (auto s = ensure_sysctl(k, "1"); !s) {
            log::warn("cannot enable forwarding; pods will not reach other nodes",
                      {{"sysctl", k}, {"error", s.err().message}});
        }
    }
    keep_peers_until_ = core_ms() + k_keep_device_peers_ms;
    if (auto s = start_wireguard(); !s) {
        log::error("cannot set up the wireguard interface",
                   {{"interface", cfg_.interface}, {"error", s.err().message}});
        return 1;
    }
    // Before the core can send anything: the epoch our control messages carry (replay
    // protection across restarts, boot_epoch.hpp).
    auto epoch = boot_epoch(cfg_.state_dir).next(unix_ms() / 1000);
    if (!epoch) {
        log::error("cannot store the boot epoch", {{"error", epoch.err().message}});
        return 1;
    }
    node_core_config cc;
    cc.boot_epoch = *epoch;
    cc.node_name = cfg_.node_name;
    cc.pod_cidrs = cfg_.pod_cidrs;
    cc.cluster_cidrs = cfg_.cluster_cidrs;
    cc.node_cidr_mask_v4 = cfg_.node_cidr_mask_v4;
    cc.node_cidr_mask_v6 = cfg_.node_cidr_mask_v6;
    cc.control_port = cfg_.listen_port;
    // Searched up to the interface MTU we start with (the pods' MTU: nothing larger is sent).
    cc.pmtu_max = cfg_.path_mtu_discovery ? mtu_ : 0;
    if (cc.pmtu_max > probe_max_plaintext_size) {
        log::info(
            "path MTU discovery off: the interface MTU is above what padded probes carry",
            {{"mtu", std::to_string(mtu_)}, {"max", std::to_string(probe_max_plaintext_size)}});
        cc.pmtu_max = 0;
    }
    cc.wg_port = cfg_.wg_listen_port;
    cc.endpoints = advertised_endpoints(cfg_.interface, cfg_.listen_port);
    for (const auto& r : cfg_.relay_nodes)
        cc.relays.push_back(relay_spec{r.node_name, r.advertise_address});
    cc.relay_role = cfg_.self_relay() != nullptr;
    cc.bootstrap = cfg_.dht_bootstrap;
    cc.revoked = revoked_ids(cfg_.revoked_nodes);
    read_role_file(cc);
    core_ = std::make_unique<node_core>(
        cc, identity_, sealer_,
        [](std::span<uint8_t> out) { randombytes_buf(out.data(), out.size()); },
        transport_.binder());
    if (auto s = sync_transport(); !s) {
        log::error("cannot start the control transport", {{"error", s.err().message}});
        shutdown();
        return 1;
    }
    if (!cfg_.metrics_listen.empty()) {
        auto m = metrics_server::start(io_, cfg_.metrics_listen,
                                       [this] { return metrics_text(snapshot()); });
        if (!m) {
            log::error("cannot open the metrics endpoint",
                       {{"listen", cfg_.metrics_listen}, {"error", m.err().message}});
            shutdown();
            return 1;
        }
        metrics_ = std::move(*m);
        log::info("metrics endpoint listening",
                  {{"endpoint", metrics_->local_endpoint().str()}, {"path", "/metrics"}});
    }
    watcher_.prime();
    auto ctl = control_server::start(
        io_, cfg_.socket,
        [this](const json& r, control_server::reply_fn f) { handle(r, std::move(f)); });
    if (!ctl) {
        log::error("cannot open the control socket",
                   {{"socket", cfg_.socket}, {"error", ctl.err().message}});
        shutdown();
        return 1;
    }
    ctl_ = std::move(*ctl);
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        log::info("signal received", {{"signal", std::to_string(sig)}});
        shutdown();
    });
    // The device as the last meshd left it (kept, or adopted after a crash), read before the first
    // apply changes it: peers on a relay proxy socket (a loopback endpoint) were relayed, and the
    // core requests their relay sessions at once instead of after the direct grace (issue 14 §3).
    wg_->get([this](result<wg_device> d) {
        if (!d || !core_ || stopping_) return;
        std::vector<wg_key> relayed;
        for (const auto& p : d->peers) {
            // A relay proxy's per-peer socket: loopback.
            if (p.endpoint &&
                endpoint_filter::classify(p.endpoint->address) == endpoint_refusal::loopback) {
                relayed.push_back(p.public_key);
            }
        }
        if (relayed.empty()) return;
        log::info("peers relayed before the restart; relay sessions requested at once",
                  {{"peers", std::to_string(relayed.size())}});
        core_->on_relayed_before(relayed, core_ms());
        after_core();
    });
    keep_route_mtus();
    core_->start(core_ms());
    cache_.load(*core_);
    after_core();
    poll_wg();
    if (cfg_.mdns_enable) start_mdns();
    if (cfg_.kubernetes_enable) {
        auto k = kube_wiring::start(cfg_, identity_, *core_, io_, [this] { after_core(); });
        if (!k) {
            log::error("cannot start the kubernetes client", {{"error", k.err().message}});
            shutdown();
            return 78;
        }
        kube_ = std::move(*k);
    }
    addr_timer_.expires_after(k_addr_poll);
    addr_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) poll_addresses();
    });
    watch_config();
    cache_.start_writing();
    log::info("meshd ready", {{"node", cfg_.node_name}, {"socket", cfg_.socket}});
    io_.run();
    return 0;
}

}  // namespace

int run_daemon(const meshd_config& cfg, const std::string& config_path,
               const node_identity& identity, const cluster_keys& keys, unsigned mtu) {
    daemon d(cfg, config_path, identity, keys);
    d.set_mtu(mtu);
    return d.run();
}

}  // namespace mw::meshd
