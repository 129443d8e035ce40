#include "meshd/kube_wiring.hpp"

#include <algorithm>
#include <array>

#include "common/log.hpp"
#include "meshd/daemon_clock.hpp"
#include "meshd/kube_access.hpp"

#ifndef MESHWIRE_VERSION
#define MESHWIRE_VERSION "unknown"
#endif

namespace mw::meshd {

kube_wiring::kube_wiring(const meshd_config& cfg, const node_identity& identity, node_core& core,
                         std::function<void()> after_core)
    : cfg_(cfg), identity_(identity), core_(core), after_core_(std::move(after_core)) {}

result<std::unique_ptr<kube_wiring>> kube_wiring::start(const meshd_config& cfg,
                                                        const node_identity& identity,
                                                        node_core& core,
                                                        boost::asio::io_context& io,
                                                        std::function<void()> after_core) {
    kube_settings ks{cfg.kubernetes_api_server,  cfg.kubernetes_meta_server,
                     cfg.kubernetes_kube_config, cfg.kubernetes_ca_file,
                     cfg.kubernetes_cert_file,   cfg.kubernetes_key_file,
                     cfg.kubernetes_token_file};
    auto access = resolve_kube_access(ks, kube_environment::from_process());
    if (!access) return access.err();
    kube_client_config kc;
    kc.access = std::move(*access);
    kc.node_name = cfg.node_name;
    kc.annotations = {{k_annotation_node_id, identity.id().hex()},
                      {k_annotation_wg_key, identity.wg_public_key().to_base64()},
                      {k_annotation_control_port, std::to_string(cfg.listen_port)}};
    kc.user_agent = "meshd/" MESHWIRE_VERSION;
    std::unique_ptr<kube_wiring> w(new kube_wiring(cfg, identity, core, std::move(after_core)));
    kube_wiring* self = w.get();
    w->client_ = std::make_unique<kube_client>(
        std::move(kc), io,
        [self](const std::shared_ptr<const kube_node_map>& n) { self->on_nodes(n); });
    w->client_->start();
    return w;
}

void kube_wiring::stop() {
    stopped_ = true;
    client_->stop();
}

// Nothing is torn down when the API is unreachable: no update arrives then, and what was
// offered stays.
void kube_wiring::on_nodes(const std::shared_ptr<const kube_node_map>& nodes) {
    if (stopped_) return;
    const uint64_t now = core_ms();
    auto v = read_kube_nodes(*nodes, cfg_.node_name, identity_.id(), cfg_.listen_port);
    for (const auto& b : v.bad) log::warn("kubernetes node annotation ignored", {{"detail", b}});
    if (v.self) {
        // Both set: the config wins (an operator's explicit choice), said once per change.
        std::string theirs;
        for (const auto& p : v.self->pod_cidrs) theirs += (theirs.empty() ? "" : ",") + p.str();
        std::string ours;
        for (const auto& p : cfg_.pod_cidrs) ours += (ours.empty() ? "" : ",") + p.str();
        if (!theirs.empty() && theirs != ours && theirs != cidr_warned_) {
            cidr_warned_ = theirs;
            log::warn(
                "podCIDRs in the config differ from our Node's spec.podCIDRs; the config's "
                "are used",
                {{"config", ours}, {"node", theirs}});
        }
    }
    if (v.offers != offers_) {
        core_.withdraw_endpoints(learned_via::kubernetes, now);
        // A node's addresses are path candidates for it. With no relayNodes a few of them are
        // also rendezvous (asked for the cluster's records, as dht.bootstrap addresses are):
        // the nearest by node ID, so each node asks a different few and none is asked by all.
        std::vector<const kube_offer*> by_distance;
        for (const auto& o : v.offers) {
            for (const auto& ep : o.endpoints)
                core_.offer_endpoint(o.id, ep, learned_via::kubernetes, now);
            by_distance.push_back(&o);
        }
        auto dist = [&](const kube_offer* o) {
            std::array<uint8_t, 32> d{};
            for (size_t i = 0; i < d.size(); ++i) d[i] = o->id.data()[i] ^ identity_.id().data()[i];
            return d;
        };
        std::sort(by_distance.begin(), by_distance.end(),
                  [&](const kube_offer* a, const kube_offer* b) { return dist(a) < dist(b); });
        constexpr size_t k_rendezvous = 4;
        for (size_t i = 0; i < by_distance.size() && i < k_rendezvous; ++i) {
            core_.offer_endpoint(std::nullopt, by_distance[i]->endpoints.front(),
                                 learned_via::kubernetes, now);
        }
        log::info("kubernetes nodes offered", {{"nodes", std::to_string(v.offers.size())}});
        offers_ = std::move(v.offers);
    }
    if (cfg_.kubernetes_require_node) core_.set_listed(std::move(v.listed), now);
    // From the first list on, the Nodes' spec.podCIDRs bound what each node is routed
    // (route_authority.hpp); an unreachable API sends nothing, so the last list holds.
    if (cfg_.kubernetes_route_authority == "node")
        core_.set_node_cidrs(std::move(v.pod_cidrs), now);
    after_core_();
}

}  // namespace mw::meshd
