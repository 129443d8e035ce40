#include "test/sim/sim_net.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>

#include "meshd/core/probe_frame.hpp"
#include "meshd/core/relay_addr.hpp"
#include "meshd/core/wire_codec.hpp"

namespace mw::sim {

using namespace mw::meshd;

namespace {

struct sim_binder : relay_binder {
    sim_host& host;
    sim_net& net;
    sim_binder(sim_host& h, sim_net& n) : host(h), net(n) {}
    result<relay_bind_state> bind(uint64_t session_id, const node_id& from, const node_id& to,
                                  const wg_endpoint& observed, uint16_t via) override {
        return host.relay_table().bind(session_id, from, to, relay_addr::from_endpoint(observed),
                                       net.now(), via);
    }
    void heard(const node_id& node, const wg_endpoint& observed) override {
        host.relay_table().heard(node, relay_addr::from_endpoint(observed), net.now());
    }
};

ip_address addr(const std::string& s) {
    return ip_address::parse(s).value();
}

std::string key(const wg_endpoint& e) {
    return e.str();
}

}  // namespace

sim_net::sim_net(uint64_t seed, uint64_t t0) : rng_(seed), t0_(t0), now_(t0), now_us_(t0 * 1000) {}
sim_net::~sim_net() = default;

int sim_net::add_lan(bool symmetric, double delay_ms) {
    sim_nat n;
    n.lan = static_cast<int>(nats_.size()) + 1;
    n.pub = addr("198.51.100." + std::to_string(n.lan));
    n.symmetric = symmetric;
    n.delay_ms = delay_ms;
    nat_by_addr_[n.pub] = nats_.size();
    nats_.push_back(std::move(n));
    return nats_.back().lan;
}

sim_host& sim_net::add_public(const std::string& name, double delay_ms) {
    auto h = std::make_unique<sim_host>();
    h->name = name;
    ++public_count_;
    h->addr = addr("203.0." + std::to_string(113 + public_count_ / 250) + "." +
                   std::to_string(1 + public_count_ % 250));
    h->delay_ms = delay_ms;
    host_by_addr_[h->addr] = h.get();
    hosts_.push_back(std::move(h));
    return *hosts_.back();
}

sim_host& sim_net::add_lan_host(int lan, const std::string& name) {
    int n = 1;
    for (const auto& h : hosts_) n += h->lan == lan;
    auto h = std::make_unique<sim_host>();
    h->name = name;
    h->lan = lan;
    h->addr = addr("10." + std::to_string(lan) + "." + std::to_string(n / 250) + "." +
                   std::to_string(1 + n % 250));
    host_by_addr_[h->addr] = h.get();
    hosts_.push_back(std::move(h));
    return *hosts_.back();
}

std::vector<relay_spec> sim_net::relay_specs() const {
    std::vector<relay_spec> v;
    for (const auto& h : hosts_) {
        if (h->relay) v.push_back(relay_spec{h->name, {h->addr}});
    }
    return v;
}

void sim_net::stop_meshd(sim_host& h) {
    std::erase_if(wg_reads_in_flight_, [&](const auto& r) { return r.first == &h; });
    h.wg_only = h.core->dataplane();
    h.core.reset();
    h.deadline = UINT64_MAX;
}

void sim_net::start_core(sim_host& h, const std::vector<relay_spec>& relays, const std::string& psk,
                         node_core_config c) {
    identity_seed seed{};
    uint64_t s = rng_();
    for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(s >> (8 * (i % 8))) ^ i;
    if (next_seed) seed = *std::exchange(next_seed, std::nullopt);
    auto id = node_identity::from_seed(seed);
    auto sealer =
        psk_sealer::create(std::span(reinterpret_cast<const uint8_t*>(psk.data()), psk.size()));
    c.node_name = h.name;
    size_t idx = 0;
    for (size_t i = 0; i < hosts_.size(); ++i) {
        if (hosts_[i].get() == &h) idx = i;
    }
    // 10.<244 + index / 256>.<index % 256>.0/24 (10.244.<index>.0/24 for the first 256 hosts),
    // unique for 3,072 hosts: the route authority routes a repeated block to its first claimant
    // only. A test may give the node's pod CIDRs itself (a hostile record).
    if (c.pod_cidrs.empty()) {
        c.pod_cidrs = {ip_prefix::parse("10." + std::to_string(244 + (idx / 256) % 12) + "." +
                                        std::to_string(idx % 256) + ".0/24")
                           .value()};
    }
    c.control_port = port;
    if (c.endpoints.empty()) c.endpoints = {h.ep(port)};
    c.relays = relays;
    c.relay_role = false;
    for (const auto& r : relays) c.relay_role |= r.name == h.name;
    h.relay = c.relay_role;
    // Every host gets a binder: any node may be made a relay at runtime.
    h.binder = std::make_unique<sim_binder>(h, *this);
    auto rng_seed = rng_();
    auto gen = std::make_shared<std::mt19937_64>(rng_seed);
    h.core = std::make_unique<node_core>(
        c, id, std::move(sealer.value()),
        [gen](std::span<uint8_t> out) {
            for (auto& b : out) b = static_cast<uint8_t>((*gen)());
        },
        h.binder.get(), store_cfg);
    // A restart: the device's peers stay until the core has a path for them, at most 10 s (the
    // daemon's keep window, wg_interface_config::keep_other_peers).
    if (h.wg_only) h.wg_only_until = now_ + 10000;
    h.deadline = h.to_sim(h.core->start(h.clock(now_)));
    h.wg_public_key = h.core->self_record().wg_public_key;
    drain(h);
}

sim_host& sim_net::operator[](const std::string& name) {
    for (auto& h : hosts_) {
        if (h->name == name) return *h;
    }
    throw std::out_of_range("no sim host " + name);
}

sim_host* sim_net::host_at(const ip_address& a) {
    auto it = host_by_addr_.find(a);
    return it == host_by_addr_.end() ? nullptr : it->second;
}

sim_nat* sim_net::nat_at(const ip_address& a) {
    auto it = nat_by_addr_.find(a);
    return it == nat_by_addr_.end() ? nullptr : &nats_[it->second];
}

bool sim_net::lost(double p) {
    if (p <= 0) return false;
    return std::uniform_real_distribution<double>(0, 1)(rng_) < p;
}

void sim_net::run_for(uint64_t ms) {
    step(now_ + ms);
}

void sim_net::step(uint64_t until_ms) {
    const uint64_t until_us = until_ms * 1000;
    for (;;) {
        uint64_t tq = queue_.empty() ? UINT64_MAX : queue_.top().at_us;
        uint64_t th = UINT64_MAX;
        for (auto& h : hosts_) {
            if (h->core && h->up && h->deadline != UINT64_MAX)
                th = std::min(th, std::max(h->deadline, h->frozen_until_ms) * 1000);
        }
        uint64_t tw = std::min({next_wg_ms_, next_wg_read_ms_, wg_reads_at_});
        tw = tw == UINT64_MAX ? UINT64_MAX : tw * 1000;
        uint64_t t = std::min({tq, th, tw});
        if (t > until_us) {
            now_us_ = std::max(now_us_, until_us);
            now_ = now_us_ / 1000;
            return;
        }
        now_us_ = std::max(now_us_, t);
        now_ = now_us_ / 1000;
        if (tw <= tq && tw <= th) {
            wireguard_tick();
        } else if (tq <= th) {
            event e = queue_.top();
            queue_.pop();
            deliver(e);
        } else {
            for (auto& h : hosts_) {
                if (h->core && h->up && h->deadline * 1000 <= now_us_ &&
                    h->frozen_until_ms <= now_) {
                    // The forwarder sweeps its table every second (relay_forwarder.cpp); here
                    // when the relay's core ticks, at most once a second.
                    if (h->table && now_ >= h->last_sweep_ms + 1000) {
                        h->table->expire(now_);
                        h->last_sweep_ms = now_;
                    }
                    h->deadline = h->to_sim(h->core->tick(h->clock(now_)));
                    drain(*h);
                }
            }
        }
    }
}

void sim_net::drain(sim_host& h) {
    for (auto& o : h.core->take_outgoing()) {
        if (o.session_id) {
            std::vector<uint8_t> frame(relay_data_header_size + o.bytes.size());
            write_relay_data_header(o.session_id, frame.data());
            std::copy(o.bytes.begin(), o.bytes.end(), frame.begin() + relay_data_header_size);
            transmit(h, o.to, std::move(frame));
        } else {
            transmit(h, o.to, std::move(o.bytes), o.fresh_socket ? ephemeral_port_++ : port);
        }
    }
    auto l = h.core->take_log();
    if (h.keep_log && h.log.size() < 20000) {
        for (auto& e : l) h.log.push_back(std::move(e));
    }
}

void sim_net::inject(const wg_endpoint& from, const wg_endpoint& to, std::vector<uint8_t> bytes,
                     double delay_ms) {
    route(from, to, std::move(bytes), delay_ms);
}

void sim_net::transmit(sim_host& src, const wg_endpoint& to, std::vector<uint8_t> bytes,
                       uint16_t src_port) {
    if (on_send) on_send(src, to, bytes);
    if (!src.up || lost(src.loss) || (src.max_send && bytes.size() > src.max_send)) {
        ++dropped_;
        return;
    }
    wg_endpoint from = src.ep(src_port);
    sim_host* dst = host_at(to.address);
    if (src.lan >= 0) {
        if (dst && dst->lan == src.lan) {
            if (nats_[src.lan - 1].isolated) {
                ++dropped_;
                return;
            }
            return route(from, to, std::move(bytes), 0.2);
        }
        sim_nat& nat = nats_[src.lan - 1];
        if (nat.cut) {
            ++dropped_;
            return;
        }
        for (const auto& [pub_port, internal] : nat.forwards) {
            // Replies of a port-forwarded host leave from the forwarded port (conntrack un-DNAT).
            if (internal == from) {
                return route(wg_endpoint{nat.pub, pub_port}, to, std::move(bytes), nat.delay_ms);
            }
        }
        auto k = std::make_pair(key(from), nat.symmetric ? key(to) : std::string());
        auto it = nat.out.find(k);
        uint16_t p;
        if (it == nat.out.end()) {
            p = nat.next_port++;
            nat.out.emplace(k, p);
            nat.in[p] = sim_nat::mapping{from, {}};
        } else {
            p = it->second;
        }
        auto& allowed = nat.in[p].allowed;
        if (std::find(allowed.begin(), allowed.end(), to) == allowed.end()) allowed.push_back(to);
        return route(wg_endpoint{nat.pub, p}, to, std::move(bytes), nat.delay_ms);
    }
    route(from, to, std::move(bytes), src.delay_ms);
}

// Second half of a datagram's trip: from the public core to its destination.
void sim_net::route(const wg_endpoint& from, const wg_endpoint& to, std::vector<uint8_t> bytes,
                    double delay_ms) {
    sim_host* dst = host_at(to.address);
    wg_endpoint final_to = to;
    double d = delay_ms;
    if (dst && (dst->lan < 0 || delay_ms == 0.2)) {
        if (dst->lan < 0) d += dst->delay_ms;
        if (dst->jitter_ms > 0)
            d += std::uniform_real_distribution<double>(0, dst->jitter_ms)(rng_);
    } else if (sim_nat* nat = nat_at(to.address)) {
        if (nat->cut) {
            ++dropped_;  // the LAN's uplink is down
            return;
        }
        if (auto fw = nat->forwards.find(to.port); fw != nat->forwards.end()) {
            // A port forward (DNAT): anyone may reach the internal host on this port.
            queue_.push(event{now_us_ + static_cast<uint64_t>((d + nat->delay_ms) * 1000), seq_++,
                              from, fw->second, std::move(bytes)});
            return;
        }
        auto it = nat->in.find(to.port);
        if (it == nat->in.end() || std::find(it->second.allowed.begin(), it->second.allowed.end(),
                                             from) == it->second.allowed.end()) {
            ++dropped_;  // no mapping, or filtered: a NAT drops unsolicited traffic
            return;
        }
        final_to = it->second.internal;
        d += nat->delay_ms;
    } else {
        ++dropped_;  // a private address of another LAN: not routed
        return;
    }
    if (sim_host* h = host_at(final_to.address);
        h &&
        std::find(h->drop_from.begin(), h->drop_from.end(), from.address) != h->drop_from.end()) {
        ++dropped_;
        return;
    }
    if (sim_host* h = host_at(final_to.address);
        h && h->busy_prob > 0 &&
        std::uniform_real_distribution<double>(0, 1)(rng_) < h->busy_prob) {
        d += std::uniform_real_distribution<double>(0, h->busy_ms)(rng_);
    }
    queue_.push(
        event{now_us_ + static_cast<uint64_t>(d * 1000), seq_++, from, final_to, std::move(bytes)});
}

void sim_net::deliver(const event& e) {
    sim_host* h = host_at(e.to.address);
    if (h) ++h->rx_by_port[e.to.port];
    if (h && h->up && (h->core || h->wg_only) && e.to.port == wg_port &&
        e.bytes.size() == wg_size_ && e.bytes[0] == 4 && !lost(h->loss)) {
        // Simulated WireGuard on a direct path: counted for the pair, as on a relayed one.
        uint64_t tag = 0;
        std::memcpy(&tag, e.bytes.data() + 8, 8);
        auto it = wg_frames_.find(tag);
        if (it != wg_frames_.end() && it->second.second == h) {
            h->wg_rx[it->second.first->name] += e.bytes.size();
            wg_frames_.erase(it);
        }
        return;
    }
    if (!h || !h->up || !h->core || e.to.port != port || lost(h->loss)) {
        ++dropped_;
        return;
    }
    if (h->frozen_until_ms > now_) {
        // Read 1 ms after the resumed process ran its overdue timers: the unkind order, which
        // an event loop may well choose.
        queue_.push(event{(h->frozen_until_ms + 1) * 1000, seq_++, e.from, e.to, e.bytes});
        return;
    }
    ++delivered_;
    ++h->rx_datagrams;
    if (on_deliver) on_deliver(*h, e.bytes);
    std::span<const uint8_t> d(e.bytes);
    if (classify(d) == frame_kind::nat_keepalive) {
        ++h->nat_keepalives_rx;
        return;
    }
    if (classify(d) == frame_kind::relay_data) {
        auto sid = peek_relay_data_session(d);
        if (!sid) return;
        // As the daemon does: the relay forwarder owns the port while the role is served;
        // otherwise (also while it is being verified) the node's relay proxy does.
        auto role = h->core->role();
        if (role == relay_role_state::active) {
            if (h->relay_filter && !h->relay_filter(d.subspan(relay_data_header_size))) {
                ++h->relay_filtered;
                return;
            }
            auto* dest =
                h->relay_table().route(*sid, relay_addr::from_endpoint(e.from), d.size(), now_);
            if (!dest) return;
            ++h->relay_forwarded;
            transmit(*h, dest->to_endpoint(), e.bytes);
            return;
        }
        auto v = decode_relay_data(d);
        if (!v) return;
        if (v->payload.size() == wg_size_ && !v->payload.empty() && v->payload[0] == 4) {
            // Simulated WireGuard data: counted for the pair (the sim knows who sent it).
            uint64_t tag = 0;
            std::memcpy(&tag, v->payload.data() + 8, 8);
            auto it = wg_frames_.find(tag);
            if (it != wg_frames_.end() && it->second.second == h) {
                h->wg_rx[it->second.first->name] += v->payload.size();
                wg_frames_.erase(it);
            }
            return;
        }
        // As the relay proxy does: sealed probes (WireGuard-shaped, 96 bytes) and old-style
        // control datagrams go to the core; other WireGuard is not simulated.
        if (!peek_probe_index(v->payload) && classify(v->payload) != frame_kind::control) return;
        ++h->inband_rx;
        h->deadline = h->to_sim(h->core->on_datagram(v->payload, e.from, *sid, 0, h->clock(now_)));
    } else {
        h->deadline = h->to_sim(h->core->on_datagram(d, e.from, 0, 0, h->clock(now_)));
    }
    drain(*h);
}

void sim_net::wireguard_tick() {
    if (now_ >= next_wg_ms_) {
        next_wg_ms_ = now_ + wg_interval_ms_;
        for (auto& h : hosts_) {
            if ((!h->core && !h->wg_only) || !h->up || h->frozen_until_ms > now_) continue;
            std::vector<peer_dataplane> dps = h->core ? h->core->dataplane() : *h->wg_only;
            if (h->core && h->wg_only && now_ < h->wg_only_until) {
                for (const auto& k : *h->wg_only) {
                    auto it = std::find_if(dps.begin(), dps.end(),
                                           [&](const auto& d) { return d.id == k.id; });
                    if (it == dps.end()) {
                        dps.push_back(k);
                    } else if (it->path == path_kind::none) {
                        *it = k;
                    }
                }
            }
            for (const auto& dp : dps) {
                const bool relayed = dp.path == path_kind::relay && dp.session_id;
                const bool direct = dp.path == path_kind::direct && dp.endpoint;
                if (!relayed && !direct) continue;
                if (auto sp = wg_sparse_.find({h->name, dp.name}); sp != wg_sparse_.end()) {
                    if (now_ < sp->second.next_ms) continue;
                    sp->second.next_ms = now_ + sp->second.period_ms;
                } else if (!wg_pairs_.empty() && !wg_pairs_.count({h->name, dp.name})) {
                    continue;
                }
                sim_host* to = nullptr;
                for (auto& o : hosts_) {
                    if (o->name == dp.name) to = o.get();
                }
                if (!to) continue;
                const size_t head = relayed ? relay_data_header_size : 0;
                std::vector<uint8_t> frame(head + wg_size_);
                if (relayed) write_relay_data_header(dp.session_id, frame.data());
                uint8_t* wg = frame.data() + head;
                for (size_t i = 4; i < wg_size_; ++i) wg[i] = static_cast<uint8_t>(rng_());
                wg[0] = 4;
                wg[1] = wg[2] = wg[3] = 0;
                uint64_t tag = rng_();
                std::memcpy(wg + 8, &tag, 8);
                wg_frames_[tag] = {h.get(), to};
                h->wg_tx[dp.name] += wg_size_;
                uint64_t& last = wg_last_sent_[{h.get(), dp.name}];
                if (h->core && wg_notify_traffic && relayed && (!last || now_ >= last + 1000)) {
                    h->core->on_traffic(dp.wg_public_key, h->clock(now_));
                    h->deadline = std::min(h->deadline, h->to_sim(h->core->next_deadline()));
                }
                last = now_;
                if (relayed) {
                    transmit(*h, dp.relay_endpoint, std::move(frame));
                } else {
                    transmit(*h, *dp.endpoint, std::move(frame), wg_port);
                }
            }
        }
        if (wg_frames_.size() > 100000) wg_frames_.clear();  // lost ones
    }
    auto report = [&](sim_host& h, const std::vector<wg_peer_counters>& v) {
        h.core->on_wireguard_counters(v, h.clock(now_));
        h.deadline = std::min(h.deadline, h.to_sim(h.core->next_deadline()));
        drain(h);
    };
    if (now_ >= wg_reads_at_) {
        for (auto& [h, v] : wg_reads_in_flight_) {
            // Not to a frozen core (a stall: such reads are rare enough to drop); a core stopped
            // meanwhile took its reads with it (stop_meshd).
            if (h->core && h->up && h->frozen_until_ms <= now_) report(*h, v);
        }
        wg_reads_in_flight_.clear();
        wg_reads_at_ = UINT64_MAX;
    }
    if (now_ >= next_wg_read_ms_) {
        // As the daemon: the next read when the soonest core wants it
        // (node_core::wg_read_interval).
        uint64_t next = 2000;
        // A read still on its way is not asked for again (meshd_runtime's wg_get_busy_).
        const bool busy = !wg_reads_in_flight_.empty();
        for (auto& h : hosts_) {
            if (!h->core || !h->up || h->frozen_until_ms > now_) continue;
            if (busy) {
                next = std::min(next, h->core->wg_read_interval(h->clock(now_)));
                continue;
            }
            std::vector<wg_peer_counters> v;
            // WireGuard's endpoint per peer, as the device reports it: the peer's direct address
            // on a direct path, a relay proxy's loopback socket on a relayed one.
            std::map<std::string, std::optional<wg_endpoint>> endpoint_of;
            for (const auto& d : h->core->dataplane()) {
                if (d.path == path_kind::direct && d.endpoint) {
                    endpoint_of[d.name] = *d.endpoint;
                } else if (d.path == path_kind::relay) {
                    endpoint_of[d.name] = wg_endpoint::parse("127.0.0.1:40000").value();
                }
            }
            for (auto& o : hosts_) {
                if (o.get() == h.get() || (!o->core && !o->wg_only)) continue;
                if (!h->wg_tx.count(o->name) && !h->wg_rx.count(o->name)) continue;
                wg_peer_counters c{o->wg_public_key, h->wg_rx[o->name], h->wg_tx[o->name]};
                if (auto e = endpoint_of.find(o->name); e != endpoint_of.end()) {
                    c.endpoint = e->second;
                }
                v.push_back(c);
            }
            if (wg_read_delay_ms) {
                next = std::min(next, h->core->wg_read_interval(h->clock(now_)));
                wg_reads_in_flight_.emplace_back(h.get(), std::move(v));
                continue;
            }
            report(*h, v);
            next = std::min(next, h->core->wg_read_interval(h->clock(now_)));
        }
        next_wg_read_ms_ = now_ + next;
        if (!busy && !wg_reads_in_flight_.empty()) wg_reads_at_ = now_ + wg_read_delay_ms;
    }
}

void sim_net::set_relays(const std::vector<relay_spec>& relays) {
    for (auto& h : hosts_) {
        if (!h->core) continue;
        bool listed = false;
        for (const auto& r : relays) listed |= r.name == h->name;
        h->relay = listed;
        h->core->set_relays(relays, listed, h->clock(now_));
        h->deadline = std::min(h->deadline, h->to_sim(h->core->next_deadline()));
        drain(*h);
    }
}

path_kind sim_net::path(const std::string& a, const std::string& b) {
    auto p = peer(a, b);
    return p ? p->path : path_kind::none;
}

std::optional<peer_view> sim_net::peer(const std::string& a, const std::string& b) {
    for (auto& pv : (*this)[a].core->peers()) {
        if (pv.name == b) return pv;
    }
    return std::nullopt;
}

}  // namespace mw::sim
