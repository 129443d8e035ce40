// mDNS on the simulator (issue 10 §4): the real pure mDNS core (meshd/core/mdns_engine: responder,
// querier, cache, messages) for every simulated node, driven the way meshd/mdns_service drives it
// (start with the interface's addresses, datagrams and timers in, output flushed, found peers
// out), over a simulated multicast group per LAN: a datagram to 224.0.0.251:5353 reaches every
// other host of the sender's LAN, each copy lost with probability `loss`; a unicast answer reaches
// its host if it is on the same LAN. A found peer becomes offer_endpoint calls as in
// daemon::on_mdns_peer (meshd/meshd_runtime.cpp). The multicast group never crosses a NAT, so a
// cut uplink does not touch it.
//
// Time: sim_net's queue and this one's are merged by running sim_net up to the next mDNS event
// (a delivery or an engine deadline), then handling that event at sim_net's now.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "meshd/core/mdns_engine.hpp"
#include "test/sim/sim_net.hpp"

namespace mw::sim {

class sim_mdns {
public:
    sim_mdns(sim_net& net, double loss, uint64_t seed) : net_(net), loss_(loss), rng_(seed) {}

    // Starts mDNS for a host that runs a core (its node ID and control port are advertised, as
    // daemon::start_mdns does).
    void start(sim_host& h) {
        meshd::mdns_engine_config ec;
        ec.service.instance = h.name;
        ec.service.host_label = "meshwire-" + h.core->id().short_hex();
        ec.service.port = sim_net::port;
        ec.service.txt = {"id=" + h.core->id().hex(), "v=2"};
        ec.self = h.core->id();
        ec.families = {AF_INET};
        ec.seed = rng_();
        auto& [host, e] = engines_[h.name];
        host = &h;
        e = std::make_unique<meshd::mdns_engine>(std::move(ec));
        e->start({h.addr}, net_.now());
        flush(h);
    }
    // The host's mDNS stops silently (a process killed): no goodbyes. Its counters are kept.
    void kill(sim_host& h) {
        auto it = engines_.find(h.name);
        if (it == engines_.end()) return;
        dead_sent_[&h] += it->second.second->stats().sent;
        engines_.erase(it);
    }
    meshd::mdns_engine* engine(sim_host& h) {
        auto it = engines_.find(h.name);
        return it == engines_.end() ? nullptr : it->second.second.get();
    }

    // mDNS packets sent, over all engines ever started (one per multicast or unicast send).
    uint64_t sent() const {
        uint64_t n = 0;
        for (const auto& [name, he] : engines_) n += he.second->stats().sent;
        for (const auto& [h, s] : dead_sent_) n += s;
        return n;
    }
    uint64_t sent(sim_host& h) {
        auto* e = engine(h);
        return (e ? e->stats().sent : 0) + dead_sent_[&h];
    }
    // Packets sent by kind, and the questions the queries carried.
    uint64_t queries() const { return queries_; }
    uint64_t responses() const { return responses_; }
    uint64_t questions() const { return questions_; }
    uint64_t copies_lost() const { return lost_; }
    uint64_t copies_delivered() const { return delivered_; }

    void run_for(uint64_t ms) {
        const uint64_t end = net_.now() + ms;
        for (;;) {
            uint64_t t = next_event();
            if (t > end) break;
            if (t > net_.now()) net_.run_for(t - net_.now());
            handle_due();
        }
        if (end > net_.now()) net_.run_for(end - net_.now());
    }
    template <class P>
    bool run_until(P pred, uint64_t limit_ms) {
        const uint64_t end = net_.now() + limit_ms;
        while (net_.now() < end) {
            if (pred()) return true;
            run_for(std::min<uint64_t>(50, end - net_.now()));
        }
        return pred();
    }

private:
    struct packet {
        uint64_t at_ms, seq;
        sim_host* to;
        wg_endpoint from;
        std::vector<uint8_t> bytes;
        bool operator>(const packet& o) const {
            return std::tie(at_ms, seq) > std::tie(o.at_ms, o.seq);
        }
    };

    uint64_t next_event() const {
        uint64_t t = q_.empty() ? UINT64_MAX : q_.top().at_ms;
        for (const auto& [name, he] : engines_) t = std::min(t, he.second->next_deadline());
        return std::max(t, net_.now());
    }

    void handle_due() {
        const uint64_t now = net_.now();
        while (!q_.empty() && q_.top().at_ms <= now) {
            packet p = q_.top();
            q_.pop();
            auto* e = engine(*p.to);
            if (!e || !p.to->up) continue;
            e->on_datagram(p.bytes, p.from, now);
            flush(*p.to);
        }
        for (auto& [name, he] : engines_) {
            if (he.second->next_deadline() <= now) {
                he.second->on_timer(now);
                flush(*he.first);
            }
        }
    }

    // What mdns_service::flush does: the output onto the (simulated) wire, found peers to the
    // core as daemon::on_mdns_peer offers them.
    void flush(sim_host& h) {
        auto& e = *engines_.at(h.name).second;
        const wg_endpoint from{h.addr, meshd::mdns_port};
        for (auto& d : e.take_output()) {
            if (auto m = meshd::mdns_message::parse(d.bytes)) {
                ++(m->is_response() ? responses_ : queries_);
                if (!m->is_response()) questions_ += m->questions.size();
            }
            if (meshd::is_mdns_group(d.to.address)) {
                for (auto& o : net_.hosts()) {
                    if (o.get() == &h || o->lan != h.lan || !engine(*o)) continue;
                    send_copy(*o, from, d.bytes);
                }
            } else {
                for (auto& o : net_.hosts()) {
                    if (o->addr == d.to.address && o->lan == h.lan) send_copy(*o, from, d.bytes);
                }
            }
        }
        for (const auto& p : e.take_found()) {
            for (const auto& ep : p.endpoints) {
                h.core->offer_endpoint(p.id, ep, meshd::learned_via::mdns, net_.now());
                h.core->offer_endpoint(std::nullopt, ep, meshd::learned_via::mdns, net_.now());
            }
            h.deadline = net_.now();  // the core runs its timers after the offers (after_core)
        }
    }

    void send_copy(sim_host& to, const wg_endpoint& from, const std::vector<uint8_t>& bytes) {
        if (std::uniform_real_distribution<double>(0, 1)(rng_) < loss_) {
            ++lost_;
            return;
        }
        ++delivered_;
        q_.push({net_.now() + 1, seq_++, &to, from, bytes});
    }

    sim_net& net_;
    double loss_;
    std::mt19937_64 rng_;
    // By host name, not pointer: the order timers fire in (and the loss draws) is reproducible.
    std::map<std::string, std::pair<sim_host*, std::unique_ptr<meshd::mdns_engine>>> engines_;
    std::map<sim_host*, uint64_t> dead_sent_;
    std::priority_queue<packet, std::vector<packet>, std::greater<packet>> q_;
    uint64_t seq_ = 0, lost_ = 0, delivered_ = 0, queries_ = 0, responses_ = 0, questions_ = 0;
};

}  // namespace mw::sim
