#include "meshd/kube_discovery.hpp"

#include <algorithm>
#include <charconv>
#include <map>

namespace mw::meshd {

kube_view read_kube_nodes(const kube_node_map& nodes, const std::string& self_name,
                          const node_id& self_id, uint16_t default_port) {
    kube_view v;
    std::map<node_id, std::string> carrier;  // node ID -> the first Node carrying it
    for (const auto& [name, n] : nodes) {
        if (name == self_name) v.self = &n;
        auto a = n.annotations.find(k_annotation_node_id);
        if (a == n.annotations.end()) continue;
        auto id = node_id::from_hex(a->second);
        if (!id) {
            v.bad.push_back(name + ": " + k_annotation_node_id + " is not a node ID");
            continue;
        }
        v.listed.push_back(*id);
        if (name == self_name || *id == self_id) continue;
        // One node ID on two Nodes is ambiguous, never a union: whoever can write annotations
        // (meshd's service account may patch any Node) could otherwise put its own ID on a
        // victim's Node and be routed the victim's block. Such an ID gets no block at all.
        if (auto [c, first] = carrier.try_emplace(*id, name); !first) {
            v.pod_cidrs[*id].clear();
            v.bad.push_back(name + ": " + k_annotation_node_id + " is also on Node " + c->second +
                            "; no pod CIDRs are routed to that node ID");
        } else {
            v.pod_cidrs[*id] = n.pod_cidrs;
        }
        uint16_t port = default_port;
        if (auto p = n.annotations.find(k_annotation_control_port); p != n.annotations.end()) {
            unsigned val = 0;
            auto [ptr, ec] =
                std::from_chars(p->second.data(), p->second.data() + p->second.size(), val);
            if (ec != std::errc() || ptr != p->second.data() + p->second.size() || val == 0 ||
                val > 65535) {
                v.bad.push_back(name + ": " + k_annotation_control_port + " is not a port");
                continue;
            }
            port = static_cast<uint16_t>(val);
        }
        kube_offer o{*id, name, {}};
        for (const auto* list : {&n.internal_ips, &n.external_ips}) {
            for (const auto& ip : *list) {
                wg_endpoint ep{ip, port};
                if (o.endpoints.size() < 8 &&
                    std::find(o.endpoints.begin(), o.endpoints.end(), ep) == o.endpoints.end())
                    o.endpoints.push_back(ep);
            }
        }
        if (!o.endpoints.empty()) v.offers.push_back(std::move(o));
    }
    std::sort(v.offers.begin(), v.offers.end(),
              [](const kube_offer& x, const kube_offer& y) { return x.id < y.id; });
    std::sort(v.listed.begin(), v.listed.end());
    v.listed.erase(std::unique(v.listed.begin(), v.listed.end()), v.listed.end());
    return v;
}

}  // namespace mw::meshd
