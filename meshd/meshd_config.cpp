#include "meshd/meshd_config.hpp"

#include "meshd/kube_access.hpp"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <map>
#include <sstream>

namespace mw::meshd {

namespace {

// Thrown only inside parse_meshd_config and caught at its boundary: a field error has to unwind
// from deep inside the tree walk, and this is startup config parsing, the one place exceptions are
// allowed (common/error.hpp).
struct field_error {
    errc code;
    std::string message;
};

[[noreturn]] void fail(const std::string& path, const YAML::Node& node, const std::string& what) {
    std::string msg = path.empty() ? what : path + ": " + what;
    const YAML::Mark m = node.Mark();
    if (m.line >= 0) msg += " (line " + std::to_string(m.line + 1) + ")";
    throw field_error{errc::invalid_argument, std::move(msg)};
}

std::string quoted(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out.push_back('\\');
        if (static_cast<unsigned char>(c) < 0x20) {
            out += "\\x";
            const char* hex = "0123456789abcdef";
            out.push_back(hex[(c >> 4) & 0xf]);
            out.push_back(hex[c & 0xf]);
            continue;
        }
        out.push_back(c);
    }
    return out + "\"";
}

std::string join(std::initializer_list<const char*> names) {
    std::string out;
    for (const char* n : names) {
        if (!out.empty()) out += ", ";
        out += n;
    }
    return out;
}

std::string child_path(const std::string& parent, const std::string& key) {
    return parent.empty() ? key : parent + "." + key;
}

std::string item_path(const std::string& parent, size_t i) {
    return parent + "[" + std::to_string(i) + "]";
}

// A mapping's entries by key, after refusing unknown and repeated keys (yaml-cpp keeps duplicate
// keys silently, and the first one would win without a word).
class mapping {
public:
    mapping(const YAML::Node& node, const std::string& path,
            std::initializer_list<const char*> allowed)
        : path_(path) {
        if (!node.IsMap()) {
            fail(path, node,
                 (path.empty() ? "the config " : "") +
                     std::string("must be a mapping with the fields ") + join(allowed));
        }
        for (const auto& kv : node) {
            if (!kv.first.IsScalar()) fail(path, kv.first, "field names must be plain strings");
            std::string key = kv.first.Scalar();
            std::string p = child_path(path, key);
            if (std::find_if(allowed.begin(), allowed.end(),
                             [&](const char* a) { return key == a; }) == allowed.end()) {
                fail(p, kv.first, "unknown field (expected one of: " + join(allowed) + ")");
            }
            if (entries_.count(key)) fail(p, kv.first, "appears more than once");
            entries_.emplace(key, kv.second);
        }
    }

    // The value, or an undefined node when the key is absent or null (both mean "use the default").
    std::optional<YAML::Node> get(const std::string& key) const {
        auto it = entries_.find(key);
        if (it == entries_.end() || it->second.IsNull()) return std::nullopt;
        return it->second;
    }
    std::string path(const std::string& key) const { return child_path(path_, key); }

private:
    std::string path_;
    std::map<std::string, YAML::Node> entries_;
};

std::string as_string(const YAML::Node& n, const std::string& path) {
    if (!n.IsScalar()) fail(path, n, "must be a string");
    return n.Scalar();
}

long long as_integer(const YAML::Node& n, const std::string& path, long long lo, long long hi) {
    std::string range = "an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
    if (!n.IsScalar()) fail(path, n, "must be " + range);
    const std::string& s = n.Scalar();
    long long v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || s.empty()) {
        fail(path, n, quoted(s) + " is not " + range);
    }
    if (v < lo || v > hi) fail(path, n, s + " is out of range (expected " + range + ")");
    return v;
}

uint16_t as_port(const YAML::Node& n, const std::string& path) {
    return static_cast<uint16_t>(as_integer(n, path, 1, 65535));
}

bool as_bool(const YAML::Node& n, const std::string& path) {
    if (n.IsScalar()) {
        const std::string& s = n.Scalar();
        if (s == "true" || s == "True" || s == "TRUE") return true;
        if (s == "false" || s == "False" || s == "FALSE") return false;
    }
    if (n.IsScalar())
        fail(path, n, quoted(n.Scalar()) + " is not a boolean (expected true or false)");
    fail(path, n, "must be true or false");
}

const YAML::Node& as_sequence(const YAML::Node& n, const std::string& path, const char* of_what) {
    if (!n.IsSequence()) fail(path, n, std::string("must be a list of ") + of_what);
    return n;
}

// Daemons run with cwd "/" under systemd and elsewhere in a pod: a relative path would silently
// mean different files, so only absolute ones are accepted.
std::string as_absolute_path(const YAML::Node& n, const std::string& path) {
    std::string s = as_string(n, path);
    if (s.empty() || s[0] != '/') fail(path, n, quoted(s) + " must be an absolute path");
    return s;
}

bool valid_ifname(std::string_view s) {
    // Kernel rules (dev_valid_name): 1..15 bytes, not "." or "..", no '/', ':' or whitespace.
    if (s.empty() || s.size() > 15 || s == "." || s == "..") return false;
    for (char c : s) {
        if (c == '/' || c == ':' || c == ' ' || c == '\t' || c == '\n' ||
            static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
            return false;
        }
    }
    return true;
}

// "IP:PORT" or "[IPv6]:PORT". Host names are refused: resolving at startup would make the
// endpoint depend on DNS being up.
bool valid_listen_address(const std::string& s) {
    auto colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0) return false;
    std::string host = s.substr(0, colon);
    std::string port = s.substr(colon + 1);
    if (host.front() == '[') {
        if (host.size() < 3 || host.back() != ']') return false;
        host = host.substr(1, host.size() - 2);
        auto a = ip_address::parse(host);
        if (!a || !a->is_v6()) return false;
    } else {
        auto a = ip_address::parse(host);
        if (!a || !a->is_v4()) return false;
    }
    unsigned v = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    return ec == std::errc() && end == port.data() + port.size() && !port.empty() && v >= 1 &&
           v <= 65535;
}

std::vector<ip_prefix> parse_pod_cidrs(const YAML::Node& n, const std::string& path) {
    as_sequence(n, path, "CIDRs, e.g. [10.244.1.0/24, fd00:244:1::/64]");
    if (n.size() == 0) fail(path, n, "is empty: give this node's pod CIDRs");
    if (n.size() > meshd_config::max_pod_cidrs) {
        fail(path, n,
             "has " + std::to_string(n.size()) + " entries; at most " +
                 std::to_string(meshd_config::max_pod_cidrs) + " are supported");
    }
    std::vector<ip_prefix> out;
    for (size_t i = 0; i < n.size(); ++i) {
        std::string p = item_path(path, i);
        std::string text = as_string(n[i], p);
        auto pr = ip_prefix::parse(text);
        if (!pr) fail(p, n[i], quoted(text) + " is not a CIDR (expected e.g. 10.244.1.0/24)");
        // The same rules as the CNI plugin's (cni-plugin/net_conf.cpp parse_pod_cidrs), so a
        // node.json written from this config is always accepted by the plugin.
        if (!(pr->network() == *pr)) {
            fail(p, n[i],
                 quoted(text) + " has host bits set (did you mean " + pr->network().str() + "?)");
        }
        int max_len = pr->is_v4() ? 30 : 126;
        if (pr->length() > max_len) {
            fail(p, n[i],
                 quoted(text) + " is too small to hold pods (at most /" + std::to_string(max_len) +
                     ")");
        }
        for (const auto& q : out) {
            if (q.contains(pr->address()) || pr->contains(q.address())) {
                fail(p, n[i], quoted(text) + " overlaps " + q.str());
            }
        }
        out.push_back(*pr);
    }
    return out;
}

// clusterCIDRs: like parse_pod_cidrs, without the size limit of a pod block.
std::vector<ip_prefix> parse_cluster_cidrs(const YAML::Node& n, const std::string& path) {
    as_sequence(n, path, "CIDRs, e.g. [10.244.0.0/16, fd00:244::/32]");
    if (n.size() > meshd_config::max_cluster_cidrs) {
        fail(path, n,
             "has " + std::to_string(n.size()) + " entries; at most " +
                 std::to_string(meshd_config::max_cluster_cidrs) + " are supported");
    }
    std::vector<ip_prefix> out;
    for (size_t i = 0; i < n.size(); ++i) {
        std::string p = item_path(path, i);
        std::string text = as_string(n[i], p);
        auto pr = ip_prefix::parse(text);
        if (!pr) fail(p, n[i], quoted(text) + " is not a CIDR (expected e.g. 10.244.0.0/16)");
        if (!(pr->network() == *pr)) {
            fail(p, n[i],
                 quoted(text) + " has host bits set (did you mean " + pr->network().str() + "?)");
        }
        for (const auto& q : out) {
            if (q.contains(pr->address()) || pr->contains(q.address())) {
                fail(p, n[i], quoted(text) + " overlaps " + q.str());
            }
        }
        out.push_back(*pr);
    }
    return out;
}

std::vector<relay_node> parse_relay_nodes(const YAML::Node& n, const std::string& path) {
    as_sequence(n, path, "relays ({nodeName, advertiseAddress: [...]})");
    std::vector<relay_node> out;
    for (size_t i = 0; i < n.size(); ++i) {
        std::string p = item_path(path, i);
        mapping m(n[i], p, {"nodeName", "advertiseAddress"});
        relay_node r;
        auto name = m.get("nodeName");
        if (!name) fail(m.path("nodeName"), n[i], "is required (the relay's node name)");
        r.node_name = as_string(*name, m.path("nodeName"));
        if (!valid_node_name(r.node_name)) {
            fail(m.path("nodeName"), *name,
                 quoted(r.node_name) + " is not a valid node name (1-253 of A-Z a-z 0-9 . _ -)");
        }
        for (size_t j = 0; j < out.size(); ++j) {
            if (out[j].node_name == r.node_name) {
                fail(m.path("nodeName"), *name,
                     quoted(r.node_name) + " is already listed as " + item_path(path, j));
            }
        }
        auto addrs = m.get("advertiseAddress");
        std::string ap = m.path("advertiseAddress");
        // Required for now: without the Kubernetes client there is no node object to take the
        // address from, and a relay nobody can reach is worse than a config error.
        if (!addrs)
            fail(ap, n[i], "is required (the relay's reachable IP addresses, e.g. [1.1.1.1])");
        as_sequence(*addrs, ap, "IP addresses, e.g. [1.1.1.1]");
        if (addrs->size() == 0) fail(ap, *addrs, "is empty: give at least one IP address");
        if (addrs->size() > meshd_config::max_advertise_addresses) {
            fail(ap, *addrs,
                 "has " + std::to_string(addrs->size()) + " entries; at most " +
                     std::to_string(meshd_config::max_advertise_addresses) + " are supported");
        }
        for (size_t j = 0; j < addrs->size(); ++j) {
            std::string aj = item_path(ap, j);
            const YAML::Node& an = (*addrs)[j];
            std::string text = as_string(an, aj);
            auto a = ip_address::parse(text);
            if (!a) fail(aj, an, quoted(text) + " is not an IP address");
            if (a->to_u128() == 0)
                fail(aj, an,
                     quoted(text) + " is the unspecified address; give one other nodes can reach");
            if (std::find(r.advertise_address.begin(), r.advertise_address.end(), *a) !=
                r.advertise_address.end()) {
                fail(aj, an, quoted(text) + " is listed twice");
            }
            // Two relays at one address would be one node answering for both.
            for (size_t k = 0; k < out.size(); ++k) {
                const auto& o = out[k].advertise_address;
                if (std::find(o.begin(), o.end(), *a) != o.end()) {
                    fail(aj, an, quoted(text) + " is already an address of " + item_path(path, k));
                }
            }
            r.advertise_address.push_back(*a);
        }
        out.push_back(std::move(r));
    }
    return out;
}

// revokedNodes: node IDs, 64 hex digits (case-insensitive; kept lowercase).
std::vector<std::string> parse_revoked(const YAML::Node& n, const std::string& path) {
    as_sequence(n, path, "node IDs (64 hex digits, the id `meshctl peers --json` shows)");
    if (n.size() > meshd_config::max_revoked) {
        fail(path, n,
             "has " + std::to_string(n.size()) + " entries; at most " +
                 std::to_string(meshd_config::max_revoked) + " are supported");
    }
    std::vector<std::string> out;
    for (size_t i = 0; i < n.size(); ++i) {
        std::string p = item_path(path, i);
        std::string text = as_string(n[i], p);
        std::string id;
        for (char ch : text) id += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        bool hex = id.size() == 64 && std::all_of(id.begin(), id.end(), [](char ch) {
                       return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
                   });
        if (!hex) {
            fail(p, n[i],
                 quoted(text) +
                     " is not a node ID: want the 64 hex digits `meshctl peers --json` "
                     "shows as \"id\" (not a name: names are claims, IDs are keys)");
        }
        if (std::find(out.begin(), out.end(), id) != out.end())
            fail(p, n[i], quoted(text) + " is listed twice");
        out.push_back(std::move(id));
    }
    return out;
}

// dht.bootstrap: IP addresses of other meshd (their listenPort, which is the cluster's).
std::vector<ip_address> parse_bootstrap(const YAML::Node& n, const std::string& path) {
    as_sequence(n, path, "IP addresses of other nodes, e.g. [203.0.113.11]");
    if (n.size() > meshd_config::max_bootstrap) {
        fail(path, n,
             "has " + std::to_string(n.size()) + " entries; at most " +
                 std::to_string(meshd_config::max_bootstrap) + " are supported");
    }
    std::vector<ip_address> out;
    for (size_t i = 0; i < n.size(); ++i) {
        std::string p = item_path(path, i);
        std::string text = as_string(n[i], p);
        auto a = ip_address::parse(text);
        if (!a) fail(p, n[i], quoted(text) + " is not an IP address");
        if (a->to_u128() == 0) fail(p, n[i], quoted(text) + " is the unspecified address");
        if (std::find(out.begin(), out.end(), *a) != out.end())
            fail(p, n[i], quoted(text) + " is listed twice");
        out.push_back(*a);
    }
    return out;
}

// Documents in a YAML stream: a "---" marker at column 0 after content starts another one, as
// does content after a "..." end marker. Markers can only appear at column 0 (the spec forbids
// them inside scalars), so a line scan is exact enough; directives and comments are not content.
size_t count_documents(std::string_view text) {
    size_t docs = 0;
    bool in_doc = false;  // content seen since the last marker
    auto marker = [](std::string_view line, std::string_view m) {
        return line.substr(0, 3) == m && (line.size() == 3 || line[3] == ' ' || line[3] == '\t');
    };
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (marker(line, "---")) {
            ++docs;
            in_doc = true;
            continue;
        }
        if (marker(line, "...")) {
            in_doc = false;
            continue;
        }
        size_t first = line.find_first_not_of(" \t");
        if (first == std::string_view::npos || line[first] == '#' || (line[0] == '%' && !in_doc))
            continue;
        if (!in_doc) {
            ++docs;  // an implicit document (no "---"), or content after "..."
            in_doc = true;
        }
    }
    return docs;
}

// Why other nodes would refuse to route this node's pod CIDR (the route authority's rules), as the
// end of a sentence, or nothing.
std::optional<std::string> pod_cidr_problem(const meshd_config& c, const ip_prefix& pc) {
    const int mask = pc.is_v4() ? c.node_cidr_mask_v4 : c.node_cidr_mask_v6;
    const std::string key = pc.is_v4() ? "ipv4" : "ipv6";
    if (!c.cluster_cidrs.empty()) {
        bool inside =
            std::any_of(c.cluster_cidrs.begin(), c.cluster_cidrs.end(), [&](const ip_prefix& cc) {
                return cc.family() == pc.family() && cc.length() <= pc.length() &&
                       cc.contains(pc.address());
            });
        if (!inside) return " is outside clusterCIDRs; other nodes would refuse to route it";
        if (pc.length() != mask) {
            return " is not a /" + std::to_string(mask) + " (nodeCIDRMaskSize." + key +
                   "); other nodes would refuse to route it";
        }
    } else if (pc.length() < mask) {
        return " is larger than a /" + std::to_string(mask) + " (nodeCIDRMaskSize." + key +
               "); other nodes would refuse to route it";
    }
    return std::nullopt;
}

meshd_config parse_tree(const YAML::Node& root, const config_environment& env) {
    meshd_config c;
    if (root.IsNull())
        fail("", root, "the config is empty: at least psk.path and podCIDRs are required");
    mapping top(root, "",
                {"nodeName",
                 "podCIDRs",
                 "clusterCIDRs",
                 "nodeCIDRMaskSize",
                 "interface",
                 "wireguard",
                 "listenPort",
                 "psk",
                 "relayNodes",
                 "stateDir",
                 "runDir",
                 "socket",
                 "mtu",
                 "mdns",
                 "dht",
                 "kubernetes",
                 "metrics",
                 "logLevel",
                 "revokedNodes",
                 "relayService",
                 "pathMtuDiscovery"});

    if (auto n = top.get("nodeName")) {
        c.node_name = as_string(*n, "nodeName");
        if (!valid_node_name(c.node_name)) {
            fail("nodeName", *n,
                 quoted(c.node_name) + " is not a valid node name (1-253 of A-Z a-z 0-9 . _ -)");
        }
    } else if (env.node_name_env && !env.node_name_env->empty()) {
        c.node_name = *env.node_name_env;
        if (!valid_node_name(c.node_name)) {
            fail("nodeName", root,
                 "not set, and $NODE_NAME " + quoted(c.node_name) +
                     " is not a valid node name (1-253 of A-Z a-z 0-9 . _ -)");
        }
    } else {
        c.node_name = env.hostname;
        if (!valid_node_name(c.node_name)) {
            fail("nodeName", root,
                 "not set, $NODE_NAME is unset, and the hostname " + quoted(c.node_name) +
                     " is not a valid node name");
        }
    }

    // Required unless kubernetes.enable: then this node's Node (spec.podCIDRs) gives them.
    bool k8s = false;
    if (auto n = top.get("kubernetes");
        n && n->IsMap() && (*n)["enable"] && (*n)["enable"].IsScalar()) {
        k8s = (*n)["enable"].as<std::string>() == "true";
    }
    auto cidrs = top.get("podCIDRs");
    if (!cidrs && !k8s)
        fail("podCIDRs", root,
             "is required (this node's pod CIDRs, e.g. [10.244.1.0/24, fd00:244:1::/64]) unless "
             "kubernetes.enable is true");
    if (cidrs && !(k8s && cidrs->IsSequence() && cidrs->size() == 0))
        c.pod_cidrs = parse_pod_cidrs(*cidrs, "podCIDRs");

    // The route authority's bounds; this node's own blocks must satisfy them, or every other node
    // would refuse to route them.
    auto cluster = top.get("clusterCIDRs");
    if (cluster) c.cluster_cidrs = parse_cluster_cidrs(*cluster, "clusterCIDRs");
    auto masks = top.get("nodeCIDRMaskSize");
    if (masks) {
        mapping m(*masks, "nodeCIDRMaskSize", {"ipv4", "ipv6"});
        if (auto v = m.get("ipv4"))
            c.node_cidr_mask_v4 = static_cast<int>(as_integer(*v, m.path("ipv4"), 1, 30));
        if (auto v = m.get("ipv6"))
            c.node_cidr_mask_v6 = static_cast<int>(as_integer(*v, m.path("ipv6"), 1, 126));
    }
    for (size_t i = 0; i < c.cluster_cidrs.size(); ++i) {
        const auto& cc = c.cluster_cidrs[i];
        const int mask = cc.is_v4() ? c.node_cidr_mask_v4 : c.node_cidr_mask_v6;
        if (mask < cc.length()) {
            fail(std::string("nodeCIDRMaskSize.") + (cc.is_v4() ? "ipv4" : "ipv6"),
                 masks ? *masks : *cluster,
                 "/" + std::to_string(mask) + " is larger than clusterCIDRs[" + std::to_string(i) +
                     "] " + cc.str() + " (a node's block must fit inside it)");
        }
    }
    for (size_t i = 0; i < c.pod_cidrs.size(); ++i) {
        if (auto why = pod_cidr_problem(c, c.pod_cidrs[i]))
            fail(item_path("podCIDRs", i), (*cidrs)[i], quoted(c.pod_cidrs[i].str()) + *why);
    }

    if (auto n = top.get("interface")) {
        c.interface = as_string(*n, "interface");
        if (!valid_ifname(c.interface)) {
            fail("interface", *n,
                 quoted(c.interface) +
                     " is not a valid interface name (1-15 characters, no '/', ':' or spaces)");
        }
    }

    if (auto n = top.get("wireguard")) {
        mapping m(*n, "wireguard", {"backend", "listenPort"});
        if (auto b = m.get("backend")) {
            std::string s = as_string(*b, m.path("backend"));
            if (s == "auto") {
                c.wg_backend = wg_backend_kind::auto_select;
            } else if (s == "kernel") {
                c.wg_backend = wg_backend_kind::kernel;
            } else if (s == "userspace") {
                c.wg_backend = wg_backend_kind::userspace;
            } else {
                fail(m.path("backend"), *b, quoted(s) + " is not one of auto, kernel, userspace");
            }
        }
        if (auto p = m.get("listenPort")) c.wg_listen_port = as_port(*p, m.path("listenPort"));
    }
    if (auto n = top.get("listenPort")) c.listen_port = as_port(*n, "listenPort");
    if (c.listen_port == c.wg_listen_port) {
        auto n = top.get("listenPort");
        fail("listenPort", n ? *n : root,
             std::to_string(c.listen_port) +
                 " is also wireguard.listenPort; the control/relay port and the WireGuard port "
                 "must differ");
    }

    auto psk = top.get("psk");
    if (!psk) fail("psk.path", root, "is required (a file holding the cluster pre-shared key)");
    {
        mapping m(*psk, "psk", {"path", "acceptPaths"});
        auto p = m.get("path");
        if (!p) fail("psk.path", *psk, "is required (a file holding the cluster pre-shared key)");
        c.psk_path = as_absolute_path(*p, "psk.path");
        if (auto a = m.get("acceptPaths")) {
            const std::string path = m.path("acceptPaths");
            as_sequence(*a, path,
                        "PSK files accepted during a key roll, e.g. [/etc/meshwire/psk.new]");
            if (a->size() > meshd_config::max_accept_paths) {
                fail(path, *a,
                     "has " + std::to_string(a->size()) + " entries; at most " +
                         std::to_string(meshd_config::max_accept_paths) +
                         " are supported (each one costs a decryption per forged datagram; a "
                         "roll needs one)");
            }
            for (size_t i = 0; i < a->size(); ++i) {
                const std::string ip = path + "[" + std::to_string(i) + "]";
                auto f = as_absolute_path((*a)[i], ip);
                if (f == c.psk_path) fail(ip, (*a)[i], "is psk.path itself");
                for (const auto& o : c.psk_accept_paths) {
                    if (o == f) fail(ip, (*a)[i], "is listed twice");
                }
                c.psk_accept_paths.push_back(f);
            }
        }
    }

    if (auto n = top.get("relayNodes")) c.relay_nodes = parse_relay_nodes(*n, "relayNodes");
    if (auto n = top.get("relayService")) {
        mapping m(*n, "relayService", {"maxSessions", "maxSessionsPerNode"});
        auto total = m.get("maxSessions");
        if (total) {
            c.relay_max_sessions = size_t(as_integer(*total, m.path("maxSessions"), 1,
                                                     meshd_config::max_relay_sessions_limit));
        }
        if (auto per = m.get("maxSessionsPerNode")) {
            c.relay_max_sessions_per_node = size_t(as_integer(
                *per, m.path("maxSessionsPerNode"), 1, meshd_config::max_relay_sessions_limit));
            if (c.relay_max_sessions_per_node > c.relay_max_sessions) {
                fail(m.path("maxSessionsPerNode"), *per,
                     std::to_string(c.relay_max_sessions_per_node) +
                         " is more than relayService.maxSessions (" +
                         std::to_string(c.relay_max_sessions) + "): one node could fill the table");
            }
        } else {
            // Unset: the default, but never more than the table holds.
            c.relay_max_sessions_per_node =
                std::min(c.relay_max_sessions_per_node, c.relay_max_sessions);
        }
    }
    if (auto n = top.get("stateDir")) c.state_dir = as_absolute_path(*n, "stateDir");
    if (auto n = top.get("runDir")) c.run_dir = as_absolute_path(*n, "runDir");
    // The socket follows runDir unless set, so two meshd with different runDirs never collide.
    c.socket = c.run_dir + "/meshd.sock";
    if (auto n = top.get("socket")) c.socket = as_absolute_path(*n, "socket");
    if (c.socket.size() >= 108) {  // sizeof(sockaddr_un::sun_path), including the NUL
        auto n = top.get("socket");
        fail("socket", n ? *n : root,
             quoted(c.socket) + " is too long for a unix socket path (at most 107 bytes)");
    }
    if (auto n = top.get("mtu")) c.mtu = static_cast<unsigned>(as_integer(*n, "mtu", 1280, 65535));
    if (auto n = top.get("pathMtuDiscovery"))
        c.path_mtu_discovery = as_bool(*n, "pathMtuDiscovery");

    if (auto n = top.get("mdns")) {
        mapping m(*n, "mdns", {"enable", "interfaces", "linkLocal"});
        if (auto e = m.get("enable")) c.mdns_enable = as_bool(*e, m.path("enable"));
        if (auto l = m.get("linkLocal")) c.mdns_link_local = as_bool(*l, m.path("linkLocal"));
        if (auto i = m.get("interfaces")) {
            std::string path = m.path("interfaces");
            as_sequence(*i, path, "interface names");
            if (i->size() > meshd_config::max_mdns_interfaces) {
                fail(path, *i,
                     "has " + std::to_string(i->size()) + " entries; at most " +
                         std::to_string(meshd_config::max_mdns_interfaces) + " are supported");
            }
            for (size_t k = 0; k < i->size(); ++k) {
                std::string p = item_path(path, k);
                std::string name = as_string((*i)[k], p);
                if (!valid_ifname(name)) {
                    fail(p, (*i)[k],
                         quoted(name) +
                             " is not a valid interface name (1-15 characters, no '/', ':' or "
                             "spaces)");
                }
                if (std::find(c.mdns_interfaces.begin(), c.mdns_interfaces.end(), name) !=
                    c.mdns_interfaces.end())
                    fail(p, (*i)[k], quoted(name) + " is listed twice");
                c.mdns_interfaces.push_back(std::move(name));
            }
        }
    }
    if (auto n = top.get("revokedNodes")) c.revoked_nodes = parse_revoked(*n, "revokedNodes");
    if (auto n = top.get("dht")) {
        mapping m(*n, "dht", {"enable", "bootstrap"});
        if (auto e = m.get("enable")) c.dht_enable = as_bool(*e, m.path("enable"));
        if (auto b = m.get("bootstrap")) c.dht_bootstrap = parse_bootstrap(*b, m.path("bootstrap"));
    }

    if (auto n = top.get("kubernetes")) {
        mapping m(*n, "kubernetes",
                  {"enable", "apiServer", "metaServer", "kubeConfig", "caFile", "certFile",
                   "keyFile", "tokenFile", "requireNode", "routeAuthority"});
        if (auto e = m.get("enable")) c.kubernetes_enable = as_bool(*e, m.path("enable"));
        // BRIEF: the Kubernetes API is spoken over verified HTTPS; plain http:// only to a
        // loopback endpoint the operator names (KubeEdge's edge endpoint without TLS).
        for (auto [key, out] : {std::pair{"apiServer", &c.kubernetes_api_server},
                                std::pair{"metaServer", &c.kubernetes_meta_server}}) {
            auto a = m.get(key);
            if (!a) continue;
            *out = as_string(*a, m.path(key));
            if (out->empty()) continue;  // print_yaml's "not set"
            kube_access probe;
            if (auto s = parse_kube_url(*out, m.path(key), probe); !s)
                fail(m.path(key), *a, s.err().message.substr(m.path(key).size() + 2));
        }
        if (!c.kubernetes_api_server.empty() && !c.kubernetes_meta_server.empty()) {
            fail(m.path("metaServer"), *n, "and apiServer are both set; give one of them");
        }
        for (auto [key, out] : {std::pair{"kubeConfig", &c.kubernetes_kube_config},
                                std::pair{"caFile", &c.kubernetes_ca_file},
                                std::pair{"certFile", &c.kubernetes_cert_file},
                                std::pair{"keyFile", &c.kubernetes_key_file},
                                std::pair{"tokenFile", &c.kubernetes_token_file}}) {
            auto k = m.get(key);
            if (!k) continue;
            if (k->IsScalar() && k->as<std::string>().empty()) continue;  // "not set"
            *out = as_absolute_path(*k, m.path(key));
        }
        if (c.kubernetes_cert_file.empty() != c.kubernetes_key_file.empty()) {
            const bool cert = !c.kubernetes_cert_file.empty();
            fail(m.path(cert ? "certFile" : "keyFile"), *n,
                 std::string("is set without ") + (cert ? "keyFile" : "certFile") +
                     " (a client certificate needs both)");
        }
        if (auto r = m.get("requireNode"))
            c.kubernetes_require_node = as_bool(*r, m.path("requireNode"));
        if (auto r = m.get("routeAuthority")) {
            c.kubernetes_route_authority = as_string(*r, m.path("routeAuthority"));
            if (c.kubernetes_route_authority != "node" && c.kubernetes_route_authority != "config")
                fail(m.path("routeAuthority"), *r,
                     quoted(c.kubernetes_route_authority) + " is not one of node, config");
        }
    }

    if (auto n = top.get("metrics")) {
        mapping m(*n, "metrics", {"listen"});
        if (auto l = m.get("listen")) {
            c.metrics_listen = as_string(*l, m.path("listen"));
            // An empty string is how print_yaml() writes "disabled".
            if (!c.metrics_listen.empty() && !valid_listen_address(c.metrics_listen)) {
                fail(m.path("listen"), *l,
                     quoted(c.metrics_listen) +
                         " is not IP:PORT (e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::]:9464)");
            }
        }
    }

    if (auto n = top.get("logLevel")) {
        c.log_level = as_string(*n, "logLevel");
        if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" &&
            c.log_level != "error") {
            fail("logLevel", *n, quoted(c.log_level) + " is not one of debug, info, warn, error");
        }
    }
    return c;
}

}  // namespace

std::string_view to_string(wg_backend_kind k) {
    switch (k) {
        case wg_backend_kind::auto_select:
            return "auto";
        case wg_backend_kind::kernel:
            return "kernel";
        case wg_backend_kind::userspace:
            return "userspace";
    }
    return "auto";
}

const relay_node* meshd_config::self_relay() const {
    for (const auto& r : relay_nodes) {
        if (r.node_name == node_name) return &r;
    }
    return nullptr;
}

config_environment config_environment::from_process() {
    config_environment env;
    if (const char* n = std::getenv("NODE_NAME")) env.node_name_env = n;
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) == 0) env.hostname = host;
    return env;
}

status check_node_pod_cidrs(const meshd_config& c, const std::vector<ip_prefix>& cidrs) {
    const std::string where = "Node " + quoted(c.node_name) + " spec.podCIDRs";
    if (cidrs.empty()) return error(errc::invalid_argument, where + " is empty");
    if (cidrs.size() > meshd_config::max_pod_cidrs) {
        return error(errc::invalid_argument,
                     where + " has " + std::to_string(cidrs.size()) + " entries; at most " +
                         std::to_string(meshd_config::max_pod_cidrs) + " are supported");
    }
    for (size_t i = 0; i < cidrs.size(); ++i) {
        const auto& pc = cidrs[i];
        const std::string p = where + "[" + std::to_string(i) + "] " + quoted(pc.str());
        if (!(pc.network() == pc)) return error(errc::invalid_argument, p + " has host bits set");
        if (pc.length() > (pc.is_v4() ? 30 : 126))
            return error(errc::invalid_argument, p + " is too small to hold pods");
        for (size_t j = 0; j < i; ++j) {
            if (cidrs[j].contains(pc.address()) || pc.contains(cidrs[j].address()))
                return error(errc::invalid_argument, p + " overlaps " + cidrs[j].str());
        }
        if (auto why = pod_cidr_problem(c, pc)) return error(errc::invalid_argument, p + *why);
    }
    return {};
}

bool valid_node_name(std::string_view name) {
    if (name.empty() || name.size() > 253) return false;
    return std::all_of(name.begin(), name.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               ch == '.' || ch == '_' || ch == '-';
    });
}

result<meshd_config> parse_meshd_config(std::string_view yaml_text, const config_environment& env) {
    try {
        // Load reads only the first document and would silently ignore the rest. LoadAll is not
        // used to count them: yaml-cpp 0.7's LoadAll loops forever on some malformed input (found
        // by fuzz_meshd_config), so the count comes from a scan for document markers instead.
        if (auto n = count_documents(yaml_text); n > 1) {
            return error(errc::invalid_argument,
                         "the config has " + std::to_string(n) +
                             " YAML documents (separated by ---); meshd reads exactly one");
        }
        YAML::Node root = YAML::Load(std::string(yaml_text));
        return parse_tree(root, env);
    } catch (const field_error& e) {
        return error(e.code, e.message);
    } catch (const YAML::ParserException& e) {
        return error(errc::parse_error, "YAML syntax error at line " +
                                            std::to_string(e.mark.line + 1) + ", column " +
                                            std::to_string(e.mark.column + 1) + ": " + e.msg);
    } catch (const YAML::Exception& e) {
        return error(errc::parse_error, std::string("YAML error: ") + e.what());
    } catch (const std::exception& e) {
        return error(errc::parse_error, std::string("cannot parse the config: ") + e.what());
    }
}

result<meshd_config> load_meshd_config(const std::string& path, const config_environment& env) {
    std::ifstream in(path);
    if (!in) {
        int e = errno;
        if (e == ENOENT) return error(errc::not_found, "config file " + path + " does not exist");
        return error::from_errno(e, "cannot read config file " + path);
    }
    // A config is a few kilobytes; refusing huge files keeps a wrong --config path (a log, an
    // image) from being slurped into memory.
    constexpr std::streamsize max_size = 1 << 20;
    std::string text(static_cast<size_t>(max_size) + 1, '\0');
    in.read(text.data(), max_size + 1);
    if (in.bad()) return error(errc::io_error, "cannot read config file " + path);
    if (in.gcount() > max_size) {
        return error(errc::invalid_argument, "config file " + path + " is larger than 1 MiB");
    }
    text.resize(static_cast<size_t>(in.gcount()));
    auto c = parse_meshd_config(text, env);
    if (!c) return c.err().wrap(path);
    return c;
}

std::string print_yaml(const meshd_config& c) {
    std::ostringstream o;
    o << "nodeName: " << quoted(c.node_name) << "\n";
    if (c.pod_cidrs.empty()) {
        o << "podCIDRs: []\n";  // from the Node (kubernetes.enable)
    } else {
        o << "podCIDRs:\n";
        for (const auto& p : c.pod_cidrs) o << "  - " << quoted(p.str()) << "\n";
    }
    o << "clusterCIDRs: [";
    for (size_t i = 0; i < c.cluster_cidrs.size(); ++i)
        o << (i ? ", " : "") << quoted(c.cluster_cidrs[i].str());
    o << "]\n";
    o << "nodeCIDRMaskSize:\n  ipv4: " << c.node_cidr_mask_v4 << "\n  ipv6: " << c.node_cidr_mask_v6
      << "\n";
    o << "interface: " << quoted(c.interface) << "\n";
    o << "wireguard:\n  backend: " << to_string(c.wg_backend)
      << "\n  listenPort: " << c.wg_listen_port << "\n";
    o << "listenPort: " << c.listen_port << "\n";
    o << "psk:\n  path: " << quoted(c.psk_path) << "\n  acceptPaths: [";
    for (size_t i = 0; i < c.psk_accept_paths.size(); ++i)
        o << (i ? ", " : "") << quoted(c.psk_accept_paths[i]);
    o << "]\n";
    if (c.relay_nodes.empty()) {
        o << "relayNodes: []\n";
    } else {
        o << "relayNodes:\n";
        for (const auto& r : c.relay_nodes) {
            o << "  - nodeName: " << quoted(r.node_name) << "\n    advertiseAddress: [";
            for (size_t i = 0; i < r.advertise_address.size(); ++i) {
                o << (i ? ", " : "") << quoted(r.advertise_address[i].str());
            }
            o << "]\n";
        }
    }
    o << "relayService:\n  maxSessions: " << c.relay_max_sessions
      << "\n  maxSessionsPerNode: " << c.relay_max_sessions_per_node << "\n";
    o << "stateDir: " << quoted(c.state_dir) << "\n";
    o << "runDir: " << quoted(c.run_dir) << "\n";
    o << "socket: " << quoted(c.socket) << "\n";
    if (c.mtu) o << "mtu: " << *c.mtu << "\n";
    o << "pathMtuDiscovery: " << (c.path_mtu_discovery ? "true" : "false") << "\n";
    o << "mdns:\n  enable: " << (c.mdns_enable ? "true" : "false") << "\n";
    o << "  interfaces: [";
    for (size_t i = 0; i < c.mdns_interfaces.size(); ++i)
        o << (i ? ", " : "") << quoted(c.mdns_interfaces[i]);
    o << "]\n";
    o << "  linkLocal: " << (c.mdns_link_local ? "true" : "false") << "\n";
    o << "dht:\n  enable: " << (c.dht_enable ? "true" : "false") << "\n";
    o << "  bootstrap: [";
    for (size_t i = 0; i < c.dht_bootstrap.size(); ++i)
        o << (i ? ", " : "") << quoted(c.dht_bootstrap[i].str());
    o << "]\n";
    o << "revokedNodes: [";
    for (size_t i = 0; i < c.revoked_nodes.size(); ++i)
        o << (i ? ", " : "") << quoted(c.revoked_nodes[i]);
    o << "]\n";
    o << "kubernetes:\n  enable: " << (c.kubernetes_enable ? "true" : "false") << "\n";
    o << "  apiServer: " << quoted(c.kubernetes_api_server) << "\n";
    o << "  metaServer: " << quoted(c.kubernetes_meta_server) << "\n";
    o << "  kubeConfig: " << quoted(c.kubernetes_kube_config) << "\n";
    o << "  caFile: " << quoted(c.kubernetes_ca_file) << "\n";
    o << "  certFile: " << quoted(c.kubernetes_cert_file) << "\n";
    o << "  keyFile: " << quoted(c.kubernetes_key_file) << "\n";
    o << "  tokenFile: " << quoted(c.kubernetes_token_file) << "\n";
    o << "  requireNode: " << (c.kubernetes_require_node ? "true" : "false") << "\n";
    o << "  routeAuthority: " << c.kubernetes_route_authority << "\n";
    o << "metrics:\n  listen: " << quoted(c.metrics_listen) << "\n";
    o << "logLevel: " << c.log_level << "\n";
    return o.str();
}

}  // namespace mw::meshd
