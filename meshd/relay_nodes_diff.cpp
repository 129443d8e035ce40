#include "meshd/relay_nodes_diff.hpp"

#include <algorithm>

namespace mw::meshd {

namespace {

const relay_node* find(const std::vector<relay_node>& v, const std::string& name) {
    auto it =
        std::find_if(v.begin(), v.end(), [&](const relay_node& r) { return r.node_name == name; });
    return it == v.end() ? nullptr : &*it;
}

}  // namespace

relay_nodes_change relay_nodes_diff(const std::vector<relay_node>& old_relays,
                                    const std::vector<relay_node>& new_relays,
                                    const std::string& self_name) {
    // Lists are short (a handful of relays) and validated to have unique names: linear scans.
    relay_nodes_change d;
    for (const auto& n : new_relays) {
        const relay_node* o = find(old_relays, n.node_name);
        if (!o) {
            d.added.push_back(n);
        } else if (!(*o == n)) {
            d.changed.push_back(n);
        }
    }
    for (const auto& o : old_relays) {
        if (!find(new_relays, o.node_name)) d.removed.push_back(o);
    }
    bool was = find(old_relays, self_name) != nullptr;
    bool is = find(new_relays, self_name) != nullptr;
    d.self_listed = is && !was;
    d.self_unlisted = was && !is;
    return d;
}

}  // namespace mw::meshd
