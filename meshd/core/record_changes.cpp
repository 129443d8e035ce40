#include "meshd/core/record_changes.hpp"

#include <algorithm>

namespace mw::meshd {

const char* to_string(resign_reason r) noexcept {
    switch (r) {
        case resign_reason::start:
            return "start";
        case resign_reason::relays:
            return "relays";
        case resign_reason::content:
            return "content";
        case resign_reason::relay_rtt:
            return "relay_rtt";
        case resign_reason::refresh:
            return "refresh";
        case resign_reason::forced:
            return "forced";
    }
    return "unknown";
}

namespace {

// RTTs by relay, compared per relay: a relay that joined or left is a relay change, not an RTT
// move of the others.
uint16_t rtt_of(const peer_record& r, const node_id& relay) {
    for (size_t i = 0; i < r.relays.size(); ++i) {
        if (r.relays[i] == relay) return r.relay_rtt(i);
    }
    return peer_record::unknown_rtt;
}

std::string rtt_str(uint16_t v) {
    return v == peer_record::unknown_rtt ? "?" : std::to_string(v);
}

template <class T, class F>
std::string list_str(const std::vector<T>& v, F&& str) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + str(x);
    return s.empty() ? "-" : s;
}

}  // namespace

record_changes compare_records(const peer_record& a, const peer_record& b) {
    record_changes c;
    c.relays = a.relays != b.relays;
    for (const auto& id : b.relays) {
        if (std::find(a.relays.begin(), a.relays.end(), id) != a.relays.end() &&
            rtt_of(a, id) != rtt_of(b, id)) {
            c.relay_rtt = true;
        }
    }
    c.endpoints = a.endpoints != b.endpoints;
    c.other = a.name != b.name || a.pod_cidrs != b.pod_cidrs || a.wg_port != b.wg_port ||
              a.flags != b.flags;
    return c;
}

resign_reason resign_reason_of(const record_changes& c, bool first, bool due) {
    if (first) return resign_reason::start;
    if (c.relays) return resign_reason::relays;
    if (c.endpoints || c.other) return resign_reason::content;
    if (c.relay_rtt) return resign_reason::relay_rtt;
    return due ? resign_reason::refresh : resign_reason::forced;
}

void append_change_fields(change_fields& f, const peer_record& a, const peer_record& b,
                          const std::function<std::string(const node_id&)>& name_of) {
    auto name = [&](const node_id& id) { return name_of ? name_of(id) : id.short_hex(); };
    if (a.relays != b.relays) {
        f.emplace_back("relays", list_str(a.relays, name) + " -> " + list_str(b.relays, name));
    }
    std::string rtts;
    for (const auto& id : b.relays) {
        if (std::find(a.relays.begin(), a.relays.end(), id) == a.relays.end()) continue;
        const uint16_t x = rtt_of(a, id), y = rtt_of(b, id);
        if (x != y)
            rtts += (rtts.empty() ? "" : " ") + name(id) + " " + rtt_str(x) + "->" + rtt_str(y);
    }
    if (!rtts.empty()) f.emplace_back("relay_rtt_ms", rtts);
    if (a.endpoints != b.endpoints) {
        auto ep = [](const wg_endpoint& e) { return e.str(); };
        f.emplace_back("endpoints", list_str(a.endpoints, ep) + " -> " + list_str(b.endpoints, ep));
    }
    if (a.flags != b.flags) {
        f.emplace_back("relay_role", std::string(a.relay_serving() ? "serving" : "no") + " -> " +
                                         (b.relay_serving() ? "serving" : "no"));
    }
    if (a.pod_cidrs != b.pod_cidrs) {
        auto p = [](const ip_prefix& x) { return x.str(); };
        f.emplace_back("pod_cidrs", list_str(a.pod_cidrs, p) + " -> " + list_str(b.pod_cidrs, p));
    }
    if (a.wg_port != b.wg_port) {
        f.emplace_back("wg_port", std::to_string(a.wg_port) + " -> " + std::to_string(b.wg_port));
    }
    if (a.name != b.name) f.emplace_back("name", a.name + " -> " + b.name);
}

}  // namespace mw::meshd
