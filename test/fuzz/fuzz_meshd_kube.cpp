// libFuzzer target: the Kubernetes JSON meshd reads (meshd/kube_json.hpp) — a Node, a NodeList, a
// watch stream's lines, a Status — and what meshd makes of a node set (kube_discovery). Properties:
// never crashes or throws (nlohmann runs without exceptions there), every accepted Node keeps only
// network-address pod CIDRs and meshwire.io/ annotations, and read_kube_nodes offers at most 8
// endpoints per node and never our own node.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "meshd/kube_discovery.hpp"
#include "meshd/kube_json.hpp"

using namespace mw::meshd;

namespace {

void check_node(const kube_node& n) {
    for (const auto& p : n.pod_cidrs) {
        if (!(p.network() == p)) std::abort();
    }
    for (const auto& [k, v] : n.annotations) {
        if (k.rfind("meshwire.io/", 0) != 0) std::abort();
    }
    if (n.name.empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size > 256 * 1024) return 0;
    std::string_view text(reinterpret_cast<const char*>(data), size);
    kube_node_map nodes;
    if (auto n = parse_kube_node(text)) {
        check_node(*n);
        nodes[n->name] = *n;
    }
    if (auto l = parse_kube_node_list(text)) {
        for (const auto& n : l->items) {
            check_node(n);
            nodes[n.name] = n;
        }
    }
    // A watch stream: one event per line.
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string_view::npos) nl = text.size();
        if (auto e = parse_kube_watch_event(text.substr(pos, nl - pos))) {
            if (e->type == kube_event_type::bookmark && e->node.resource_version.empty())
                std::abort();
            if (e->type == kube_event_type::added || e->type == kube_event_type::modified) {
                check_node(e->node);
                nodes[e->node.name] = e->node;
            }
        }
        pos = nl + 1;
    }
    (void)parse_kube_status(text);
    const auto self = *mw::meshd::node_id::from_hex(std::string(64, 'a'));
    auto v = read_kube_nodes(nodes, "self", self, 51821);
    for (const auto& o : v.offers) {
        if (o.endpoints.empty() || o.endpoints.size() > 8 || o.id == self) std::abort();
        if (o.name == "self") std::abort();
    }
    return 0;
}
