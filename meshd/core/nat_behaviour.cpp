#include "meshd/core/nat_behaviour.hpp"

#include <algorithm>
#include <set>

#include "meshd/core/core_context.hpp"

namespace mw::meshd {

const char* to_string(nat_mapping m) noexcept {
    switch (m) {
        case nat_mapping::unknown:
            return "unknown";
        case nat_mapping::none:
            return "none";
        case nat_mapping::endpoint_independent:
            return "endpoint-independent";
        case nat_mapping::endpoint_dependent:
            return "endpoint-dependent";
        case nat_mapping::single_observer:
            return "single-observer";
    }
    return "unknown";
}

nat_family_view classify_nat(std::span<const nat_observation> obs, bool v6,
                             std::span<const wg_endpoint> own, uint16_t local_port) {
    nat_family_view v;
    std::set<ip_address> observers;
    bool differ = false;
    // The relay's address picks the route (and a dual-stack socket's v4-mapped form is the
    // IPv4 one).
    auto family_of = [&](const nat_observation& o) {
        return normalize_endpoint(wg_endpoint{o.observer, 0}).address;
    };
    // Outdated (see the header): another report of the family differs and started after this
    // one's last.
    auto outdated = [&](const nat_observation& o) {
        const wg_endpoint seen = normalize_endpoint(o.seen);
        return std::any_of(obs.begin(), obs.end(), [&](const nat_observation& other) {
            return family_of(other).is_v6() == v6 && other.since_ms > o.last_ms &&
                   !(normalize_endpoint(other.seen) == seen);
        });
    };
    for (const auto& o : obs) {
        const ip_address at = family_of(o);
        if (at.is_v6() != v6 || outdated(o)) continue;
        const wg_endpoint seen = normalize_endpoint(o.seen);
        if (!observers.insert(at).second) continue;
        const bool ours = std::any_of(own.begin(), own.end(), [&](const wg_endpoint& e) {
            return normalize_endpoint(e) == seen;
        });
        if (ours) {
            v.mapping = nat_mapping::none;
            v.reflexive = seen;
        }
        if (!v.reflexive) {
            v.reflexive = seen;
        } else if (!(*v.reflexive == seen)) {
            differ = true;
        }
    }
    v.observers = observers.size();
    if (v.reflexive) v.port_preserved = v.reflexive->port == local_port;
    if (v.mapping == nat_mapping::none || observers.empty()) return v;
    v.mapping = differ                 ? nat_mapping::endpoint_dependent
                : observers.size() > 1 ? nat_mapping::endpoint_independent
                                       : nat_mapping::single_observer;
    return v;
}

nat_view classify_nat(std::span<const nat_observation> obs, std::span<const wg_endpoint> own,
                      uint16_t local_port) {
    return nat_view{classify_nat(obs, false, own, local_port),
                    classify_nat(obs, true, own, local_port)};
}

}  // namespace mw::meshd
