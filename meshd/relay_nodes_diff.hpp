// What changed in `relayNodes` between two versions of the config, for applying an edited
// ConfigMap live (issue 5: an added relay is used, a removed one drained, a node that finds itself
// newly listed takes the relay role). Pure: the caller decides what each change means at runtime.
#pragma once

#include <string>
#include <vector>

#include "meshd/meshd_config.hpp"

namespace mw::meshd {

struct relay_nodes_change {
    std::vector<relay_node> added;    // in new, not in old (by nodeName); in new's order
    std::vector<relay_node> removed;  // in old, not in new; in old's order
    std::vector<relay_node> changed;  // same nodeName, other advertiseAddress; the new entry
    bool self_listed = false;         // this node is listed in new but was not in old
    bool self_unlisted = false;       // this node was listed in old and is not in new

    bool empty() const { return added.empty() && removed.empty() && changed.empty(); }
};

// Relays are identified by nodeName. An address list that differs only in order is a change:
// order is the preference in which a relay's addresses are tried.
relay_nodes_change relay_nodes_diff(const std::vector<relay_node>& old_relays,
                                    const std::vector<relay_node>& new_relays,
                                    const std::string& self_name);

}  // namespace mw::meshd
