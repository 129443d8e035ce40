#include "meshd/config_watcher.hpp"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/log.hpp"

namespace mw::meshd {

namespace {

// Leaves of a printed configuration, in document order: "a.b" -> the value as YAML text. A
// sequence is one leaf (podCIDRs, relayNodes, dht.bootstrap).
void flatten(const YAML::Node& n, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out) {
    if (n.IsMap()) {
        for (const auto& kv : n) {
            std::string key = kv.first.as<std::string>();
            flatten(kv.second, prefix.empty() ? key : prefix + "." + key, out);
        }
        return;
    }
    YAML::Emitter e;
    e << n;
    out.emplace_back(prefix, e.c_str());
}

std::vector<std::pair<std::string, std::string>> leaves(const meshd_config& c) {
    std::vector<std::pair<std::string, std::string>> out;
    std::string text = print_yaml(c);
    try {
        flatten(YAML::Load(text), "", out);
    } catch (const YAML::Exception&) {
        // print_yaml's output always parses (a unit test checks it); if it ever did not, the
        // whole text is one leaf, so a change is still reported rather than lost.
        out.assign({{"config", text}});
    }
    return out;
}

}  // namespace

config_change compare_configs(const meshd_config& running, const meshd_config& next) {
    config_change ch;
    auto a = leaves(running), b = leaves(next);
    std::map<std::string, std::string> av(a.begin(), a.end()), bv(b.begin(), b.end());
    // print_yaml order; a leaf only one side prints (mtu, kubernetes.apiServer) comes last.
    std::vector<std::string> order;
    std::set<std::string> seen;
    for (const auto* side : {&b, &a}) {
        for (const auto& [k, v] : *side) {
            if (seen.insert(k).second) order.push_back(k);
        }
    }
    for (const auto& k : order) {
        auto x = av.find(k), y = bv.find(k);
        bool same = x != av.end() && y != bv.end() && x->second == y->second;
        if (same) continue;
        if (k == "relayNodes") {
            ch.relay_nodes = true;
        } else if (k == "dht.bootstrap") {
            ch.dht_bootstrap = true;
        } else if (k == "logLevel") {
            ch.log_level = true;
        } else if (k == "revokedNodes") {
            ch.revoked_nodes = true;
        } else if (k == "psk.path" || k == "psk.acceptPaths") {
            ch.psk = true;
        } else {
            ch.restart_only.push_back(k);
        }
    }
    return ch;
}

void config_watcher::prime() {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    text_ = ss.str();
}

std::optional<meshd_config> config_watcher::poll() {
    std::ifstream in(path_);
    if (!in) return std::nullopt;  // mid-swap of a ConfigMap's symlinks: next time
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (text == text_) return std::nullopt;
    text_ = text;
    auto next = parse_meshd_config(text, config_environment::from_process());
    if (!next) {
        log::error("config change refused; the running configuration stays",
                   {{"path", path_}, {"error", next.err().message}});
        return std::nullopt;
    }
    return std::move(*next);
}

}  // namespace mw::meshd
