#include "meshd/meshd_runtime.hpp"

#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sodium.h>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "common/log.hpp"
#include "common/rtnl.hpp"
#include "common/sysctl.hpp"
#include "common/wireguard/wg_backend.hpp"
#include "common/wireguard/wg_reconciler.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd/core/psk_sealer.hpp"
#include "meshd/io/control_server.hpp"
#include "meshd/io/metrics_server.hpp"
#include "meshd/io/prometheus_text.hpp"
#include "meshd/io/relay_forwarder.hpp"
#include "meshd/io/relay_proxy.hpp"
#include "meshd/io/udp_socket.hpp"
#include "meshd/relay_nodes_diff.hpp"

namespace mw::meshd {

namespace {

namespace asio = boost::asio;
using json = nlohmann::json;

constexpr uint16_t k_keepalive_s = 25;
// A peer that left the relay path keeps its proxy socket this long: WireGuard on a "learned"
// direct path still sends to the old loopback endpoint until the peer's first packet arrives.
constexpr uint64_t k_proxy_linger_ms = 60'000;
constexpr auto k_wg_poll = std::chrono::seconds(2);
constexpr auto k_addr_poll = std::chrono::seconds(15);

uint64_t unix_ms() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
}

int to_log_level(int l) {
    return l;
}

void emit(const core_log_event& e) {
    // log::write takes an initializer_list; build the line's fields by hand.
    std::string msg = e.msg;
    std::vector<log::field> f;
    f.reserve(e.fields.size());
    for (const auto& [k, v] : e.fields) f.emplace_back(k, v);
    auto lvl = static_cast<log::level>(to_log_level(e.level));
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

json opt_str(const std::optional<wg_endpoint>& e) {
    return e ? json(e->str()) : json(nullptr);
}

std::string hex16(uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return b;
}

class daemon;

// The relay service's session table lives in the forwarder (under its lock).
struct forwarder_binder : relay_binder {
    relay_forwarder* fwd = nullptr;
    result<relay_bind_state> bind(uint64_t session_id, const node_id& from, const node_id& to,
                                  const wg_endpoint& observed, uint16_t via) override {
        if (!fwd) return error(errc::unsupported, "the relay forwarder is not running");
        return fwd->with_table([&](relay_session_table& t, uint64_t now) {
            return t.bind(session_id, from, to, relay_addr::from_endpoint(observed), now, via);
        });
    }
};

class daemon {
public:
    daemon(const meshd_config& cfg, std::string config_path, const node_identity& id,
           psk_sealer sealer)
        : cfg_(cfg),
          config_path_(std::move(config_path)),
          identity_(id),
          sealer_(std::move(sealer)),
          signals_(io_, SIGINT, SIGTERM),
          timer_(io_),
          wg_timer_(io_),
          addr_timer_(io_),
          config_timer_(io_) {}

    int run();

private:
    // The UDP port's owner follows the relay role: the forwarder while the role is verified or
    // served, the node's relay proxy otherwise. Switching closes one before opening the other.
    status sync_transport();
    status start_forwarder();
    status start_proxy();
    void send_fresh(const outgoing_datagram& o);
    void watch_config();
    void reload_config();
    std::string metrics_text();
    status start_wireguard();
    std::vector<wg_endpoint> local_endpoints();
    void arm_timer(uint64_t deadline);
    void on_timer();
    void after_core();  // flush sends, logs, pings, data plane
    void send_out(const outgoing_datagram& o);
    void apply_dataplane();
    void poll_wg();
    void poll_addresses();
    void handle(const json& req, control_server::reply_fn reply);
    json status_json();
    json peers_json();
    json relays_json();
    void shutdown();

    meshd_config cfg_;  // relayNodes follows live edits of the file
    std::string config_path_;
    std::string config_text_;  // the file's content last applied (or refused)
    node_identity identity_;
    psk_sealer sealer_;
    asio::io_context io_;
    asio::signal_set signals_;
    asio::steady_timer timer_, wg_timer_, addr_timer_, config_timer_;
    std::unique_ptr<metrics_server> metrics_;
    uint64_t armed_deadline_ = UINT64_MAX;
    std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

    forwarder_binder binder_;
    std::unique_ptr<node_core> core_;
    std::unique_ptr<relay_forwarder> forwarder_;
    std::unique_ptr<relay_proxy> proxy_;
    std::unique_ptr<wg_backend> wg_;
    std::unique_ptr<wg_reconciler> reconciler_;
    std::unique_ptr<control_server> ctl_;
    std::optional<wg_device> observed_;
    uint64_t applied_version_ = UINT64_MAX;
    bool stopping_ = false;

    struct proxied {
        uint64_t session_id = 0;
        wg_endpoint relay;
        wg_endpoint local;
        uint64_t linger_until = 0;   // non-zero: not on a relay path any more
        std::set<uint64_t> aliases;  // warm standby sessions registered with the proxy
    };
    // When each peer first got a path: persistent keepalive is switched on only a moment later
    // (the end with the higher node ID later still).
    // Its first keepalive starts a handshake at once, and a handshake that reaches a peer which
    // has not configured us yet is lost and retried only after REKEY_TIMEOUT (5 s); a moment
    // later both ends know each other (pod traffic starts handshakes on its own anyway).
    std::map<node_id, uint64_t> path_since_;
    // What each peer was last configured with: a peer whose path is lost for a moment (every
    // relay of the pair gone, a direct path timing out before the relay took over) keeps it.
    std::map<node_id, wg_peer> last_peer_;
    bool keepalive_pending_ = false;
    std::map<node_id, proxied> proxied_;

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

status daemon::start_forwarder() {
    const relay_node* self = cfg_.self_relay();
    relay_forwarder_config fc;
    // One socket per advertised address when they are all ours; an address that is not (the
    // public address of a NAT that forwards the port to us) needs the wildcard, which then
    // serves everything (the kernel picks reply sources; the NAT maps them back).
    std::vector<ip_address> local;
    if (auto nl = rtnl::open()) {
        for (int fam : {AF_INET, AF_INET6}) {
            if (auto addrs = nl->list_addresses(fam)) {
                for (const auto& a : *addrs) local.push_back(a.prefix.address());
            }
        }
    }
    // Not listed (relayNodes empty, the role taken at our own public address): the wildcard, as
    // our other addresses must keep answering too.
    bool all_local = self != nullptr;
    if (self) {
        for (const auto& a : self->advertise_address) {
            all_local &= std::find(local.begin(), local.end(), a) != local.end();
        }
    }
    if (all_local) {
        for (const auto& a : self->advertise_address) fc.listen.push_back({a, cfg_.listen_port});
    } else {
        fc.listen.push_back({ip_address::parse("::").value(), cfg_.listen_port});
    }
    fc.on_control = [this](std::span<const uint8_t> d, const wg_endpoint& from, uint16_t sock) {
        std::vector<uint8_t> copy(d.begin(), d.end());
        asio::post(io_, [this, copy = std::move(copy), from, sock] {
            if (!core_ || stopping_) return;
            core_->on_datagram(copy, from, 0, sock, unix_ms());
            after_core();
        });
    };
    auto f = relay_forwarder::start(std::move(fc));
    if (!f) {
        return error(f.err().code, "cannot start the relay service on port " +
                                       std::to_string(cfg_.listen_port) + ": " + f.err().message);
    }
    forwarder_ = std::move(*f);
    binder_.fwd = forwarder_.get();
    std::string eps;
    for (const auto& e : forwarder_->local_endpoints()) eps += (eps.empty() ? "" : ",") + e.str();
    log::info("relay forwarder listening", {{"relay", cfg_.node_name}, {"endpoint", eps}});
    return {};
}

status daemon::start_proxy() {
    relay_proxy_config pc;
    pc.uplink = wg_endpoint{ip_address::parse("::").value(), cfg_.listen_port};
    pc.on_control = [this](std::span<const uint8_t> d, const wg_endpoint& from, uint64_t sid) {
        std::vector<uint8_t> copy(d.begin(), d.end());
        asio::post(io_, [this, copy = std::move(copy), from, sid] {
            if (!core_ || stopping_) return;
            core_->on_datagram(copy, from, sid, 0, unix_ms());
            after_core();
        });
    };
    auto p = relay_proxy::start(std::move(pc));
    if (!p) {
        return error(p.err().code, "cannot open the control socket on port " +
                                       std::to_string(cfg_.listen_port) + ": " + p.err().message);
    }
    proxy_ = std::move(*p);
    log::info("control socket listening", {{"endpoint", proxy_->uplink_endpoint().str()}});
    return {};
}

status daemon::sync_transport() {
    auto role = core_->role();
    bool want_forwarder = role == relay_role_state::active;
    if (want_forwarder && !forwarder_) {
        if (proxy_) {
            proxy_->stop();
            proxy_.reset();
            // Relayed peers' endpoints were the proxy's sockets, now gone: a peer that is kept
            // (no path yet as seen from a relay) keeps its session keys but no endpoint, which
            // WireGuard then learns from the peer's first packet (roaming). Removing it made the
            // peer's next packets undecryptable here until it re-handshaked (15 s).
            for (const auto& [id, px] : proxied_) {
                if (auto it = last_peer_.find(id); it != last_peer_.end())
                    it->second.endpoint.reset();
            }
            proxied_.clear();
        }
        if (auto s = start_forwarder(); !s) {
            log::error("cannot take the relay role", {{"error", s.err().message}});
            // Keep the node reachable as a node.
            return start_proxy();
        }
        applied_version_ = UINT64_MAX;  // relayed peers lost their proxy sockets
    } else if (!want_forwarder && (forwarder_ || !proxy_)) {
        if (forwarder_) {
            forwarder_->stop();
            binder_.fwd = nullptr;
            forwarder_.reset();
        }
        MW_TRY_STATUS(start_proxy());
        applied_version_ = UINT64_MAX;
    }
    return {};
}

void daemon::send_fresh(const outgoing_datagram& o) {
    wg_endpoint any{ip_address::parse(o.to.address.is_v4() ? "0.0.0.0" : "::").value(), 0};
    auto fd = open_udp_socket(any, 1 << 16);
    if (!fd) return;
    sockaddr_storage ss;
    socklen_t len = o.to.to_sockaddr(ss);
    (void)::sendto(fd->get(), o.bytes.data(), o.bytes.size(), MSG_DONTWAIT,
                   reinterpret_cast<sockaddr*>(&ss), len);
}

status daemon::start_wireguard() {
    wg_backend_options o;
    o.ifname = cfg_.interface;
    auto b = make_wg_backend(to_string(cfg_.wg_backend), o);
    if (!b) return b.err();
    wg_ = std::move(*b);
    if (auto s = wg_->up(); !s) return s;
    reconciler_ = std::make_unique<wg_reconciler>(*wg_);
    log::info("wireguard interface up", {{"interface", cfg_.interface},
                                         {"backend", std::string(wg_->kind())},
                                         {"port", std::to_string(cfg_.wg_listen_port)}});
    return {};
}

std::vector<wg_endpoint> daemon::local_endpoints() {
    // Our own addresses; the core puts a relay's advertised addresses in front of them.
    std::vector<wg_endpoint> out;
    auto nl = rtnl::open();
    if (!nl) return out;
    auto links = nl->list_links();
    if (!links) return out;
    std::map<int, const link_info*> by_index;
    for (const auto& l : *links) by_index[l.index] = &l;
    for (int fam : {AF_INET, AF_INET6}) {
        auto addrs = nl->list_addresses(fam);
        if (!addrs) continue;
        for (const auto& a : *addrs) {
            auto it = by_index.find(a.index);
            if (it == by_index.end()) continue;
            const link_info& l = *it->second;
            // Not: loopback, our WireGuard interface, pod veths (their host side carries no
            // addresses, but be explicit), link-local or deprecated/tentative addresses.
            if ((l.flags & IFF_LOOPBACK) || l.name == cfg_.interface || l.kind == "wireguard" ||
                l.kind == "tun" || !l.up())
                continue;
            if (a.scope != RT_SCOPE_UNIVERSE) continue;
            if (a.flags & (IFA_F_TENTATIVE | IFA_F_DEPRECATED | IFA_F_DADFAILED)) continue;
            // IPv6 privacy addresses are for outgoing connections and rotate (each rotation
            // would re-sign our record, and re-verify a relay role offered on them).
            if (fam == AF_INET6 && (a.flags & IFA_F_TEMPORARY)) continue;
            out.push_back({a.prefix.address(), cfg_.listen_port});
            if (out.size() == peer_record::max_endpoints) return out;
        }
    }
    return out;
}

void daemon::arm_timer(uint64_t deadline) {
    if (deadline >= armed_deadline_) return;
    armed_deadline_ = deadline;
    uint64_t now = unix_ms();
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
    core_->tick(unix_ms());
    after_core();
}

void daemon::after_core() {
    for (const auto& e : core_->take_log()) emit(e);
    if (!stopping_) {
        if (auto s = sync_transport(); !s) {
            log::error("no control transport", {{"error", s.err().message}});
        }
    }
    for (const auto& o : core_->take_outgoing()) {
        if (o.fresh_socket) {
            send_fresh(o);
        } else {
            send_out(o);
        }
    }
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
    if (core_->dataplane_version() != applied_version_) apply_dataplane();
    // The core may have pulled its deadline in (a datagram to act on, a ping).
    arm_timer(core_->next_deadline());
}

void daemon::send_out(const outgoing_datagram& o) {
    status s;
    if (o.session_id) {
        if (proxy_) s = proxy_->send_in_session(o.session_id, o.bytes);
    } else if (forwarder_) {
        s = forwarder_->send_control(o.bytes, o.to);
    } else if (proxy_) {
        s = proxy_->send_control(o.bytes, o.to);
    }
    if (!s && !s.err().is(errc::not_found)) {
        log::debug("control send failed", {{"endpoint", o.to.str()}, {"error", s.err().message}});
    }
}

void daemon::apply_dataplane() {
    uint64_t now = unix_ms();
    auto dps = core_->dataplane();
    keepalive_pending_ = false;
    wg_interface_config want;
    want.device.private_key = identity_.wg_private_key();
    want.device.listen_port = cfg_.wg_listen_port;
    const wg_endpoint wg_local{ip_address::parse("127.0.0.1").value(), cfg_.wg_listen_port};
    std::map<node_id, bool> on_relay;
    std::map<node_id, wg_peer> next_last;
    for (const auto& dp : dps) {
        // A peer without a path is not configured yet: WireGuard would try a handshake without an
        // endpoint, fail, and then wait REKEY_TIMEOUT (5 s) before it tries again once it has one.
        if (dp.allowed_ips.empty()) continue;
        if (dp.path == path_kind::none) {
            // Had a path: WireGuard keeps the peer as it was. Removing it would drop its session
            // keys while the other end goes on sending with them, and that end starts a new
            // handshake only after 15 s of unanswered traffic (KEEPALIVE + REKEY_TIMEOUT): a
            // momentary "no path" in the control plane became a 15 s outage of working traffic.
            if (auto last = last_peer_.find(dp.id); last != last_peer_.end()) {
                wg_peer kept = last->second;
                kept.allowed_ips = dp.allowed_ips;  // the record's pod CIDRs stay current
                auto px = proxied_.find(dp.id);
                if (px != proxied_.end() && kept.endpoint == px->second.local) {
                    on_relay[dp.id] = true;  // its proxy socket stays while WireGuard uses it
                }
                want.device.peers.push_back(kept);
                next_last.emplace(dp.id, std::move(kept));
            }
            continue;
        }
        wg_peer p;
        p.public_key = dp.wg_public_key;
        p.allowed_ips = dp.allowed_ips;
        auto since = path_since_.try_emplace(dp.id, now).first->second;
        // The lower node ID first, the other 2 s later: each end's first keepalive starts a
        // handshake when it has no session, and meshd on both ends decides at the same moment
        // (same path time, same 2 s poll phase), so both handshakes crossed within
        // milliseconds. A session that stalled for 15-30 s was seen right after such a
        // crossing (1 run in about 11 of e2e_relays_runtime); starting one end first avoids it.
        if (now >= since + (identity_.id() < dp.id ? 3000 : 5000)) {
            p.persistent_keepalive = k_keepalive_s;
        } else {
            keepalive_pending_ = true;
        }
        if (dp.path == path_kind::direct) {
            p.endpoint = dp.endpoint;  // nullopt: learned, left alone
        } else if (dp.path == path_kind::relay && proxy_) {
            on_relay[dp.id] = true;
            auto it = proxied_.find(dp.id);
            if (it == proxied_.end()) {
                auto local = proxy_->add_peer(dp.session_id, dp.relay_endpoint, wg_local);
                if (!local) {
                    log::warn("cannot add a relay proxy socket",
                              {{"peer", dp.name}, {"error", local.err().message}});
                    continue;
                }
                it = proxied_.emplace(dp.id, proxied{dp.session_id, dp.relay_endpoint, *local})
                         .first;
            } else if (it->second.session_id != dp.session_id ||
                       !(it->second.relay == dp.relay_endpoint)) {
                // Failover: one table update; a standby session is promoted in place.
                if (auto s = proxy_->retarget_peer(it->second.session_id, dp.session_id,
                                                   dp.relay_endpoint);
                    !s) {
                    log::warn("cannot move a peer to another relay",
                              {{"peer", dp.name}, {"error", s.err().message}});
                    continue;
                }
                it->second.aliases.erase(dp.session_id);
                it->second.session_id = dp.session_id;
                it->second.relay = dp.relay_endpoint;
            }
            it->second.linger_until = 0;
            // Warm standby sessions: the peer may send on any of them.
            std::set<uint64_t> want;
            for (const auto& [sid, ep] : dp.standby) {
                if (sid == dp.session_id) continue;
                if (auto s = proxy_->add_alias(dp.session_id, sid, ep); s) {
                    want.insert(sid);
                } else {
                    log::warn("cannot register a standby relay session",
                              {{"peer", dp.name}, {"error", s.err().message}});
                }
            }
            for (uint64_t old : it->second.aliases) {
                if (!want.count(old)) proxy_->remove_alias(old);
            }
            it->second.aliases = std::move(want);
            p.endpoint = it->second.local;
        }
        next_last[dp.id] = p;
        want.device.peers.push_back(std::move(p));
    }
    last_peer_ = std::move(next_last);  // a peer whose record is gone is removed and forgotten
    // Proxy sockets of peers no longer relayed linger, then go.
    for (auto it = proxied_.begin(); it != proxied_.end();) {
        bool gone =
            std::none_of(dps.begin(), dps.end(), [&](const auto& d) { return d.id == it->first; });
        if (!on_relay.count(it->first)) {
            if (!it->second.linger_until) it->second.linger_until = now + k_proxy_linger_ms;
            if (gone || now >= it->second.linger_until) {
                proxy_->remove_peer(it->second.session_id);
                it = proxied_.erase(it);
                continue;
            }
        }
        ++it;
    }
    auto rep = reconciler_->apply(want);
    want.device.private_key->wipe();
    if (!rep) {
        log::error("cannot apply the wireguard configuration",
                   {{"interface", cfg_.interface}, {"error", rep.err().message}});
        // Retried on the next poll (applied_version_ unchanged).
        return;
    }
    applied_version_ = core_->dataplane_version();
    if (rep->changed()) {
        log::debug("data plane applied", {{"peers", std::to_string(want.device.peers.size())},
                                          {"operations", std::to_string(rep->wg_operations)},
                                          {"routes_added", std::to_string(rep->routes_added)},
                                          {"routes_removed", std::to_string(rep->routes_removed)}});
    }
}

void daemon::poll_wg() {
    if (stopping_) return;
    auto d = wg_->get();
    if (d) observed_ = std::move(*d);
    // Retries a failed apply, and expires lingering proxy sockets.
    bool lingering = std::any_of(proxied_.begin(), proxied_.end(),
                                 [](const auto& kv) { return kv.second.linger_until != 0; });
    if (core_->dataplane_version() != applied_version_ || lingering || keepalive_pending_) {
        apply_dataplane();
    }
    wg_timer_.expires_after(k_wg_poll);
    wg_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) poll_wg();
    });
}

void daemon::poll_addresses() {
    if (stopping_) return;
    core_->set_endpoints(local_endpoints(), unix_ms());
    after_core();
    addr_timer_.expires_after(k_addr_poll);
    addr_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) poll_addresses();
    });
}

json daemon::status_json() {
    json node;
    node["name"] = cfg_.node_name;
    node["id"] = identity_.id().hex();
    node["wgPublicKey"] = identity_.wg_public_key().to_base64();
    json cidrs = json::array();
    for (const auto& p : cfg_.pod_cidrs) cidrs.push_back(p.str());
    node["podCIDRs"] = cidrs;
    node["interface"] = cfg_.interface;
    node["backend"] = std::string(wg_->kind());
    node["wgListenPort"] = cfg_.wg_listen_port;
    node["listenPort"] = cfg_.listen_port;
    json eps = json::array();
    for (const auto& e : core_->config().endpoints) eps.push_back(e.str());
    node["endpoints"] = eps;
    node["relayRole"] = core_->role() == relay_role_state::active;
    node["relayRoleState"] = to_string(core_->role());
    node["relayRoleReason"] =
        core_->role_reason().empty() ? json(nullptr) : json(core_->role_reason());
    json verified = json::array();
    for (const auto& e : core_->verified_addresses()) verified.push_back(e.str());
    node["relayVerified"] = verified;
    node["uptimeSeconds"] = std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::steady_clock::now() - started_)
                                .count();
    json peers = {{"total", 0}, {"direct", 0}, {"relay", 0}, {"none", 0}};
    for (const auto& p : core_->peers()) {
        peers["total"] = peers["total"].get<int>() + 1;
        const char* k = to_string(p.path);
        peers[k] = peers[k].get<int>() + 1;
    }
    json relays = {{"total", 0}, {"up", 0}};
    for (const auto& r : core_->relays()) {
        relays["total"] = relays["total"].get<int>() + 1;
        if (r.state == relay_state::up || r.state == relay_state::self) {
            relays["up"] = relays["up"].get<int>() + 1;
        }
    }
    json svc = nullptr;
    if (forwarder_) {
        auto st = forwarder_->stats();
        size_t sessions = 0, nodes = 0;
        forwarder_->with_table([&](relay_session_table& t, uint64_t) {
            sessions = t.size();
            nodes = t.node_count();
            return 0;
        });
        json drops;
        for (size_t i = 0; i < relay_drop_count; ++i) {
            drops[to_string(static_cast<relay_drop>(i))] = st.table_drops[i];
        }
        svc = {{"sessions", sessions},
               {"nodes", nodes},
               {"forwardedPackets", st.forwarded_packets},
               {"forwardedBytes", st.forwarded_bytes},
               {"drops", drops}};
    }
    // The relayed-peer side (local proxy sockets), null while the relay forwarder owns the port.
    json proxy = nullptr;
    if (proxy_) {
        auto ps = proxy_->stats();
        proxy = {{"toRelayPackets", ps.to_relay_packets},
                 {"toRelayBytes", ps.to_relay_bytes},
                 {"toWireguardPackets", ps.to_wg_packets},
                 {"toWireguardBytes", ps.to_wg_bytes},
                 {"inbandControlPackets", ps.inband_control_packets},
                 {"unknownSession", ps.unknown_session},
                 {"wrongSource", ps.wrong_source},
                 {"foreignLocal", ps.foreign_local},
                 {"malformed", ps.malformed},
                 {"sendFailed", ps.send_failed}};
    }
    const auto& c = core_->counters();
    json control = {{"accepted", c.accepted},      {"authFailed", c.auth_failed},
                    {"malformed", c.malformed},    {"stale", c.stale},
                    {"future", c.future},          {"replayed", c.replayed},
                    {"notControl", c.not_control}, {"badRecord", c.bad_record}};
    return {{"node", node},        {"peers", peers},      {"relays", relays},
            {"relayService", svc}, {"relayProxy", proxy}, {"control", control}};
}

json daemon::peers_json() {
    json arr = json::array();
    int64_t now_s = static_cast<int64_t>(unix_ms() / 1000);
    for (const auto& p : core_->peers()) {
        json j;
        j["name"] = p.name;
        j["id"] = p.id.hex();
        j["wgPublicKey"] = p.wg_public_key.to_base64();
        json cidrs = json::array();
        for (const auto& c : p.pod_cidrs) cidrs.push_back(c.str());
        j["podCIDRs"] = cidrs;
        j["path"] = to_string(p.path);
        j["relay"] = p.relay ? json(p.relay_name) : json(nullptr);
        j["relayId"] = p.relay ? json(p.relay->hex()) : json(nullptr);
        j["sessionId"] = p.relay ? json(hex16(p.session_id)) : json(nullptr);
        const wg_peer* w = observed_ ? observed_->find_peer(p.wg_public_key) : nullptr;
        // The endpoint the device really uses (learned ones included); else what we configured.
        auto px = proxied_.find(p.id);
        if (w && w->endpoint) {
            j["endpoint"] = w->endpoint->str();
        } else if (p.path == path_kind::relay && px != proxied_.end()) {
            j["endpoint"] = px->second.local.str();
        } else {
            j["endpoint"] = opt_str(p.endpoint);
        }
        j["rttMs"] = p.rtt_ms ? json(*p.rtt_ms) : json(nullptr);
        if (w && w->last_handshake_sec) {
            j["lastHandshake"] = w->last_handshake_sec;
            j["lastHandshakeAgoSeconds"] = std::max<int64_t>(0, now_s - w->last_handshake_sec);
        } else {
            j["lastHandshake"] = nullptr;
            j["lastHandshakeAgoSeconds"] = nullptr;
        }
        j["rxBytes"] = w ? w->rx_bytes : 0;
        j["txBytes"] = w ? w->tx_bytes : 0;
        arr.push_back(std::move(j));
    }
    return {{"peers", arr}};
}

json daemon::relays_json() {
    json arr = json::array();
    for (const auto& r : core_->relays()) {
        json j;
        j["name"] = r.name;
        j["id"] = r.id ? json(r.id->hex()) : json(nullptr);
        json addrs = json::array();
        for (const auto& a : r.addresses) addrs.push_back(a.str());
        j["addresses"] = addrs;
        j["endpoint"] = opt_str(r.endpoint);
        j["state"] = r.state == relay_state::unknown ? "down" : to_string(r.state);
        j["origin"] = to_string(r.origin);
        j["rttMs"] = r.rtt_ms ? json(*r.rtt_ms) : json(nullptr);
        j["reflexive"] = opt_str(r.reflexive);
        j["load"] = r.load;
        arr.push_back(std::move(j));
    }
    return {{"relays", arr}};
}

void daemon::handle(const json& req, control_server::reply_fn reply) {
    auto fail = [&](const std::string& m) { reply({{"ok", false}, {"error", m}}); };
    if (!req.is_object() || !req.contains("cmd") || !req["cmd"].is_string()) {
        return fail("request needs a \"cmd\" string");
    }
    std::string cmd = req["cmd"];
    if (cmd == "status") return reply({{"ok", true}, {"result", status_json()}});
    if (cmd == "peers") return reply({{"ok", true}, {"result", peers_json()}});
    if (cmd == "relays") return reply({{"ok", true}, {"result", relays_json()}});
    if (cmd != "ping") return fail("unknown command \"" + cmd + "\"");
    if (!req.contains("node") || !req["node"].is_string()) return fail("ping needs \"node\"");
    std::string node = req["node"];
    int count = 3;
    if (req.contains("count")) {
        if (!req["count"].is_number_integer() || req["count"].get<int>() < 1 ||
            req["count"].get<int>() > 100) {
            return fail("\"count\" must be 1..100");
        }
        count = req["count"];
    }
    auto id = core_->resolve(node);
    if (!id) return fail("no peer named \"" + node + "\" (see meshctl peers)");
    auto p = std::make_shared<pending_ping>();
    p->peer = *id;
    p->count = count;
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
            auto tok = core_->ping(p->peer, unix_ms());
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
    config_timer_.expires_after(std::chrono::seconds(2));
    config_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (ec || stopping_) return;
        reload_config();
        watch_config();
    });
}

// relayNodes and dht.bootstrap edits apply live (a mounted ConfigMap changes under us); the rest of
// the file is fixed for the process's life, and a change there is reported, not half-applied.
void daemon::reload_config() {
    std::ifstream in(config_path_);
    if (!in) return;  // mid-swap of a ConfigMap's symlinks: next time
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (text == config_text_) return;
    config_text_ = text;
    auto next = parse_meshd_config(text, config_environment::from_process());
    if (!next) {
        log::error("config change refused; the running configuration stays",
                   {{"path", config_path_}, {"error", next.err().message}});
        return;
    }
    std::vector<std::string> fixed;
    auto note = [&](bool differs, const char* field) {
        if (differs) fixed.push_back(field);
    };
    note(next->node_name != cfg_.node_name, "nodeName");
    note(next->pod_cidrs != cfg_.pod_cidrs, "podCIDRs");
    note(next->interface != cfg_.interface, "interface");
    note(next->wg_backend != cfg_.wg_backend || next->wg_listen_port != cfg_.wg_listen_port,
         "wireguard");
    note(next->listen_port != cfg_.listen_port, "listenPort");
    note(next->psk_path != cfg_.psk_path, "psk");
    note(next->state_dir != cfg_.state_dir || next->run_dir != cfg_.run_dir ||
             next->socket != cfg_.socket,
         "stateDir/runDir/socket");
    note(next->metrics_listen != cfg_.metrics_listen, "metrics");
    note(next->mtu != cfg_.mtu, "mtu");
    for (const auto& f : fixed) {
        log::warn("config field changed; it takes effect at the next restart", {{"field", f}});
    }
    if (next->dht_bootstrap != cfg_.dht_bootstrap) {
        std::string list;
        for (const auto& a : next->dht_bootstrap) list += (list.empty() ? "" : ",") + a.str();
        log::info("dht.bootstrap changed by config", {{"bootstrap", list.empty() ? "-" : list}});
        cfg_.dht_bootstrap = next->dht_bootstrap;
        core_->set_bootstrap(cfg_.dht_bootstrap, unix_ms());
        after_core();
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
    for (const auto& r : cfg_.relay_nodes)
        specs.push_back(relay_spec{r.node_name, r.advertise_address});
    core_->set_relays(std::move(specs), cfg_.self_relay() != nullptr, unix_ms());
    after_core();
}

std::string daemon::metrics_text() {
    prometheus_text t;
    using L = prometheus_text::labels;
    std::map<std::string, int> paths{{"direct", 0}, {"relay", 0}, {"none", 0}};
    for (const auto& p : core_->peers()) ++paths[to_string(p.path)];
    for (const auto& [k, v] : paths) {
        t.gauge("meshwire_peers", "Peer nodes by the path in use.", {{"path", k}}, v);
    }
    t.counter("meshwire_relay_selections_total",
              "Relayed pairs that chose (or changed) the relay they send through.", L{},
              core_->relay_selections());
    t.counter("meshwire_relay_failovers_total",
              "Relay changes because the relay in use stopped answering.", L{},
              core_->relay_failovers());
    t.counter("meshwire_stalls_total",
              "Wakeups over 150 ms late (meshd itself stalled); relay liveness was paused.", L{},
              core_->stalls());
    for (const auto& r : core_->relays()) {
        L l{{"relay", r.name}};
        t.gauge("meshwire_relay_up", "1 if the relay answers our probes.", l,
                r.state == relay_state::up || r.state == relay_state::self ? 1 : 0);
        if (r.rtt_ms) t.gauge("meshwire_relay_rtt_ms", "Smoothed RTT to the relay.", l, *r.rtt_ms);
        t.gauge("meshwire_relay_load", "Our relayed pairs that send through the relay.", l,
                static_cast<double>(r.load));
    }
    const auto& pl = core_->probe_losses();
    for (auto [kind, v] : {std::pair{"relay", pl.relay}, std::pair{"direct", pl.direct},
                           std::pair{"inband", pl.inband}, std::pair{"user", pl.user}}) {
        t.counter("meshwire_probe_losses_total", "PINGs without an answer, by what they probed.",
                  {{"probe", kind}}, v);
    }
    t.gauge("meshwire_relay_role", "This node's relay role (1 for the current state).",
            {{"state", to_string(core_->role())}, {"reason", core_->role_reason()}}, 1);
    if (forwarder_) {
        auto st = forwarder_->stats();
        size_t sessions = 0;
        forwarder_->with_table([&](relay_session_table& tb, uint64_t) {
            sessions = tb.size();
            return 0;
        });
        t.gauge("meshwire_relay_sessions", "Sessions in this relay's table.", L{},
                static_cast<double>(sessions));
        t.counter("meshwire_relay_forwarded_packets_total", "Packets this relay forwarded.", L{},
                  st.forwarded_packets);
        t.counter("meshwire_relay_forwarded_bytes_total", "Bytes this relay forwarded.", L{},
                  st.forwarded_bytes);
        for (size_t i = 0; i < relay_drop_count; ++i) {
            t.counter("meshwire_relay_dropped_packets_total",
                      "Frames this relay refused to forward, by reason.",
                      {{"reason", to_string(static_cast<relay_drop>(i))}}, st.table_drops[i]);
        }
    }
    const auto& c = core_->counters();
    t.counter("meshwire_control_accepted_total", "Control datagrams accepted.", L{}, c.accepted);
    for (auto [why, v] :
         {std::pair{"auth_failed", c.auth_failed}, std::pair{"malformed", c.malformed},
          std::pair{"stale", c.stale}, std::pair{"future", c.future},
          std::pair{"replayed", c.replayed}, std::pair{"not_control", c.not_control},
          std::pair{"bad_record", c.bad_record}, std::pair{"table_full", c.table_full}}) {
        t.counter("meshwire_control_dropped_total", "Control datagrams dropped, by reason.",
                  {{"reason", why}}, v);
    }
    t.gauge("meshwire_records", "Peer records known.", L{},
            static_cast<double>(core_->store().size()));
    if (t.invalid_samples()) {
        t.counter("meshwire_metrics_invalid_samples_total", "Samples skipped as invalid.", L{},
                  static_cast<uint64_t>(t.invalid_samples()));
    }
    return t.str();
}

void daemon::shutdown() {
    if (stopping_) return;
    stopping_ = true;
    log::info("meshd stopping");
    timer_.cancel();
    wg_timer_.cancel();
    addr_timer_.cancel();
    config_timer_.cancel();
    if (metrics_) metrics_->stop();
    if (ctl_) ctl_->stop();
    if (forwarder_) forwarder_->stop();
    if (proxy_) proxy_->stop();
    // wireguard-go is our child: stop it with us (the interface goes with it). A kernel device
    // stays, so a restarted meshd finds the data path still working.
    if (wg_ && wg_->kind() == "userspace") {
        if (auto s = wg_->down(); !s)
            log::warn("cannot stop wireguard-go", {{"error", s.err().message}});
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
    if (auto s = start_wireguard(); !s) {
        log::error("cannot set up the wireguard interface",
                   {{"interface", cfg_.interface}, {"error", s.err().message}});
        return 1;
    }
    node_core_config cc;
    cc.node_name = cfg_.node_name;
    cc.pod_cidrs = cfg_.pod_cidrs;
    cc.control_port = cfg_.listen_port;
    cc.wg_port = cfg_.wg_listen_port;
    cc.endpoints = local_endpoints();
    for (const auto& r : cfg_.relay_nodes)
        cc.relays.push_back(relay_spec{r.node_name, r.advertise_address});
    cc.relay_role = cfg_.self_relay() != nullptr;
    cc.bootstrap = cfg_.dht_bootstrap;
    core_ = std::make_unique<node_core>(
        cc, identity_, sealer_,
        [](std::span<uint8_t> out) { randombytes_buf(out.data(), out.size()); }, &binder_);
    if (auto s = sync_transport(); !s) {
        log::error("cannot start the control transport", {{"error", s.err().message}});
        shutdown();
        return 1;
    }
    if (!cfg_.metrics_listen.empty()) {
        auto m = metrics_server::start(io_, cfg_.metrics_listen, [this] { return metrics_text(); });
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
    {
        std::ifstream in(config_path_);
        std::stringstream ss;
        ss << in.rdbuf();
        config_text_ = ss.str();
    }
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
    core_->start(unix_ms());
    after_core();
    apply_dataplane();
    poll_wg();
    addr_timer_.expires_after(k_addr_poll);
    addr_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) poll_addresses();
    });
    watch_config();
    log::info("meshd ready", {{"node", cfg_.node_name}, {"socket", cfg_.socket}});
    io_.run();
    return 0;
}

}  // namespace

int run_daemon(const meshd_config& cfg, const std::string& config_path,
               const node_identity& identity, std::span<const uint8_t> psk) {
    auto sealer = psk_sealer::create(psk);
    if (!sealer) {
        log::error("cannot use the PSK", {{"error", sealer.err().message}});
        return 78;
    }
    daemon d(cfg, config_path, identity, std::move(*sealer));
    return d.run();
}

}  // namespace mw::meshd
