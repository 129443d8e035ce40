#include "meshd/node_snapshot.hpp"

#include "meshd/mdns_service.hpp"

namespace mw::meshd {

bool relay_is_up(const relay_view& r) noexcept {
    return r.state == relay_state::up || r.state == relay_state::self;
}

node_snapshot take_snapshot(const snapshot_sources& s) {
    const node_core& core = s.core;
    node_snapshot n;
    n.now_ms = s.now_ms;
    n.name = s.cfg.node_name;
    n.id = s.identity.id();
    n.wg_public_key = s.identity.wg_public_key();
    n.pod_cidrs = s.cfg.pod_cidrs;
    n.interface = s.cfg.interface;
    n.mtu = s.mtu;
    n.backend = std::string(s.backend);
    n.wg_listen_port = s.cfg.wg_listen_port;
    n.listen_port = s.cfg.listen_port;
    n.endpoints = core.config().endpoints;
    n.role = core.role();
    n.role_reason = core.role_reason();
    n.role_cause = core.role_cause();
    n.verified = core.verified_addresses();
    n.uptime_s = s.uptime_s;

    for (auto& p : core.peers()) {
        node_snapshot::peer e;
        const wg_peer* w = s.observed ? s.observed->find_peer(p.wg_public_key) : nullptr;
        auto px = s.proxied.find(p.id);
        if (w && w->endpoint) {
            e.endpoint = w->endpoint;
        } else if (p.path == path_kind::relay && px != s.proxied.end()) {
            e.endpoint = px->second.local;
        } else {
            e.endpoint = p.endpoint;
        }
        if (w) e.device = *w;
        ++n.paths.total;
        switch (p.path) {
            case path_kind::direct:
                ++n.paths.direct;
                break;
            case path_kind::relay:
                ++n.paths.relay;
                break;
            case path_kind::none:
                ++n.paths.none;
                break;
        }
        for (size_t i = 0; i < node_snapshot::learned_via_bits; ++i) {
            if (p.sources & (1u << i)) ++n.peers_learned[i];
        }
        e.view = std::move(p);
        n.peers.push_back(std::move(e));
    }
    n.relays = core.relays();
    for (const auto& r : n.relays) n.relays_up += relay_is_up(r) ? 1 : 0;
    n.nat = core.nat();

    if (s.forwarder) {
        node_snapshot::relay_service svc;
        svc.stats = s.forwarder->stats();
        s.forwarder->with_table([&](relay_session_table& t, uint64_t) {
            svc.sessions = t.size();
            svc.nodes = t.node_count();
            svc.max_sessions = t.limits().max_sessions;
            svc.max_sessions_per_node = t.limits().max_sessions_per_node;
            return 0;
        });
        n.service = svc;
    }
    if (s.proxy) n.proxy = s.proxy->stats();
    n.control = core.counters();
    for (size_t i = 0; i < core.sealer().slots(); ++i) {
        n.key_fingerprints.push_back(core.sealer().fingerprint(i));
    }
    n.retired_key = core.sealer().retired_fingerprint();
    n.traffic = core.traffic();
    n.traffic_rate = core.traffic_rate();
    n.active_pairs = core.active_pairs();
    n.admission = core.admission();
    if (s.inbox) n.inbox = s.inbox->stats();
    n.relay_selections = core.relay_selections();
    n.relay_failovers = core.relay_failovers();
    n.stalls = core.stalls();
    n.relay_wg_stalls = core.relay_wg_stalls();
    n.pmtu = core.pmtu();
    n.record_resigns = core.record_resigns();
    n.probe_frames_dropped = core.probe_frames_dropped();
    n.probe_losses = core.probe_losses();
    n.endpoint_refusals = core.endpoint_refusals();
    n.records = core.store().size();
    n.cidrs_refused_total = core.routes().refusals_total();
    n.cidrs_refused_now = core.routes().refused_now();
    if (s.mdns) n.mdns = s.mdns->stats();
    if (s.cache) n.cache = *s.cache;
    return n;
}

}  // namespace mw::meshd
