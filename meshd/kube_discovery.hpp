// What the Kubernetes API's node set means for the core (issue 11 §3), pure: the node list in,
// the discovery offers (learned_via::kubernetes) and the admitted node IDs out. The daemon
// (kube_wiring.cpp) hands the offers to node_core through the discovery entry.
//
// A Node says something about the mesh only through the annotations its meshd published: its
// node ID (meshwire.io/node-id) and control port (meshwire.io/control-port). Its InternalIP and
// ExternalIP addresses at that port become path candidates for that node ID; the records still
// come signed from the mesh, so an address here can only make us probe, never make us trust.
// Nodes without the annotation (no meshd yet, or another CNI) are ignored.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/kube_client.hpp"

namespace mw::meshd {

struct kube_offer {
    node_id id;
    std::string name;                    // the Node's name
    std::vector<wg_endpoint> endpoints;  // InternalIPs first, then ExternalIPs; at most 8
    friend bool operator==(const kube_offer&, const kube_offer&) = default;
};

struct kube_view {
    std::vector<kube_offer> offers;  // other nodes, by node ID
    std::vector<node_id> listed;     // every annotated node ID (ours included), sorted
    // The route authority (kubernetes.routeAuthority node): every annotated node ID but ours,
    // with its Node's spec.podCIDRs (empty if none is allocated, or if several Nodes carry the
    // ID: ambiguous, so nothing is routed to it; named in `bad`).
    std::map<node_id, std::vector<ip_prefix>> pod_cidrs;
    const kube_node* self = nullptr;  // our own Node, if listed (points into the map)
    std::vector<std::string> bad;     // "NAME: why" for annotations that do not parse
};

// `default_port`: the control port of a node whose Node has no control-port annotation.
kube_view read_kube_nodes(const kube_node_map& nodes, const std::string& self_name,
                          const node_id& self_id, uint16_t default_port);

}  // namespace mw::meshd
