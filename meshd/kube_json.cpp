#include "meshd/kube_json.hpp"

#include <nlohmann/json.hpp>

namespace mw::meshd {

namespace {

using json = nlohmann::json;

error bad(const std::string& what) {
    return error(errc::parse_error, "kubernetes: " + what);
}

// nlohmann without exceptions: a discarded value on a syntax error.
std::optional<json> parse_json(std::string_view text) {
    json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return std::nullopt;
    return j;
}

const json* member(const json& obj, const char* key) {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
}

std::string string_or_empty(const json* j) {
    return j && j->is_string() ? j->get<std::string>() : std::string();
}

result<kube_node> node_from(const json& obj) {
    if (!obj.is_object()) return bad("a Node is not a JSON object");
    const json* meta = member(obj, "metadata");
    if (!meta || !meta->is_object()) return bad("a Node without metadata");
    kube_node n;
    n.name = string_or_empty(member(*meta, "name"));
    if (n.name.empty()) return bad("a Node without metadata.name");
    n.resource_version = string_or_empty(member(*meta, "resourceVersion"));
    if (const json* ann = member(*meta, "annotations"); ann && ann->is_object()) {
        for (auto it = ann->begin(); it != ann->end(); ++it) {
            if (it.key().rfind("meshwire.io/", 0) == 0 && it.value().is_string())
                n.annotations[it.key()] = it.value().get<std::string>();
        }
    }
    std::vector<std::string> cidr_texts;
    if (const json* spec = member(obj, "spec")) {
        if (const json* pcs = member(*spec, "podCIDRs"); pcs && pcs->is_array()) {
            for (const auto& c : *pcs) {
                if (c.is_string()) cidr_texts.push_back(c.get<std::string>());
            }
        }
        if (cidr_texts.empty()) {  // clusters before dual-stack set only podCIDR
            std::string one = string_or_empty(member(*spec, "podCIDR"));
            if (!one.empty()) cidr_texts.push_back(one);
        }
    }
    for (const auto& t : cidr_texts) {
        auto p = ip_prefix::parse(t);
        if (p && p->network() == *p) {
            n.pod_cidrs.push_back(*p);
        } else {
            n.bad_pod_cidrs.push_back(t);
        }
    }
    if (const json* st = member(obj, "status")) {
        if (const json* addrs = member(*st, "addresses"); addrs && addrs->is_array()) {
            for (const auto& a : *addrs) {
                std::string type = string_or_empty(member(a, "type"));
                auto ip = ip_address::parse(string_or_empty(member(a, "address")));
                if (!ip) continue;  // Hostname entries and anything unparsable
                if (type == "InternalIP") n.internal_ips.push_back(*ip);
                if (type == "ExternalIP") n.external_ips.push_back(*ip);
            }
        }
    }
    return n;
}

}  // namespace

result<kube_node> parse_kube_node(std::string_view text) {
    auto j = parse_json(text);
    if (!j) return bad("a Node that is not valid JSON");
    return node_from(*j);
}

result<kube_node_list> parse_kube_node_list(std::string_view text) {
    auto j = parse_json(text);
    if (!j || !j->is_object()) return bad("a NodeList that is not a JSON object");
    kube_node_list l;
    if (const json* meta = member(*j, "metadata"))
        l.resource_version = string_or_empty(member(*meta, "resourceVersion"));
    const json* items = member(*j, "items");
    if (!items || !(items->is_array() || items->is_null())) return bad("a NodeList without items");
    if (items->is_array()) {
        for (const auto& it : *items) {
            auto n = node_from(it);
            if (!n) return n.err();
            l.items.push_back(std::move(*n));
        }
    }
    return l;
}

result<kube_watch_event> parse_kube_watch_event(std::string_view line) {
    auto j = parse_json(line);
    if (!j || !j->is_object()) return bad("a watch event that is not a JSON object");
    std::string type = string_or_empty(member(*j, "type"));
    const json* obj = member(*j, "object");
    if (!obj || !obj->is_object()) return bad("a watch event without an object");
    kube_watch_event e;
    if (type == "ERROR") {
        e.type = kube_event_type::error;
        const json* code = member(*obj, "code");
        if (code && code->is_number_integer()) {
            auto c = code->get<int64_t>();
            e.status_code = c >= 0 && c < 1000 ? static_cast<int>(c) : 0;
        }
        e.status_message = string_or_empty(member(*obj, "message"));
        return e;
    }
    if (type == "BOOKMARK") {
        e.type = kube_event_type::bookmark;
        if (const json* meta = member(*obj, "metadata"))
            e.node.resource_version = string_or_empty(member(*meta, "resourceVersion"));
        if (e.node.resource_version.empty()) return bad("a BOOKMARK without resourceVersion");
        return e;
    }
    if (type == "ADDED") {
        e.type = kube_event_type::added;
    } else if (type == "MODIFIED") {
        e.type = kube_event_type::modified;
    } else if (type == "DELETED") {
        e.type = kube_event_type::deleted;
    } else {
        return bad("a watch event of unknown type \"" + type.substr(0, 32) + "\"");
    }
    // Objects of another kind on a Node watch would be a server bug; without kind (the edge
    // endpoint) they are taken as Nodes.
    std::string kind = string_or_empty(member(*obj, "kind"));
    if (!kind.empty() && kind != "Node") return bad("a watch event for a " + kind.substr(0, 32));
    auto n = node_from(*obj);
    if (!n) return n.err();
    e.node = std::move(*n);
    return e;
}

result<std::pair<int, std::string>> parse_kube_status(std::string_view text) {
    auto j = parse_json(text);
    if (!j || !j->is_object()) return bad("an error body that is not a Status");
    const json* code = member(*j, "code");
    if (!code || !code->is_number_integer()) return bad("a Status without code");
    auto c = code->get<int64_t>();
    return std::pair<int, std::string>{c >= 0 && c < 1000 ? static_cast<int>(c) : 0,
                                       string_or_empty(member(*j, "message"))};
}

std::string annotation_patch(const std::map<std::string, std::string>& annotations) {
    json ann = json::object();
    for (const auto& [k, v] : annotations) ann[k] = v;
    return json{{"metadata", {{"annotations", ann}}}}.dump();
}

}  // namespace mw::meshd
