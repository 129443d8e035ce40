// The meshwire network configuration (the plugin's stdin), validated. Parsing never throws: every
// problem becomes a CNI error with the spec's code and a message naming the field to fix.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cni-plugin/cni_error.hpp"
#include "cni-plugin/cni_result.hpp"
#include "common/ip_address.hpp"

namespace mw::cni {

inline constexpr const char* k_default_data_dir = "/var/lib/cni/networks";
inline constexpr const char* k_default_node_file = "/run/meshwire/node.json";

struct attachment {
    std::string container_id;
    std::string ifname;
    friend bool operator<(const attachment& a, const attachment& b) {
        return std::tie(a.container_id, a.ifname) < std::tie(b.container_id, b.ifname);
    }
};

struct net_conf {
    std::string cni_version;
    std::string name;
    std::string type;
    std::vector<ip_prefix> pod_cidrs;  // empty: read node_file when needed
    unsigned mtu = 0;                  // 0: node_file's "mtu", else derive from the underlay
    std::string data_dir = k_default_data_dir;
    std::string node_file = k_default_node_file;
    std::optional<nlohmann::json> ipam;  // delegate IPAM to ipam.type when set
    std::string ipam_type;
    nlohmann::json dns = nlohmann::json::object();
    std::optional<cni_result> prev_result;
    std::string log_file;
    std::string log_level;
    std::optional<std::vector<attachment>> valid_attachments;  // GC: cni.dev/valid-attachments
};

struct conf_result {
    std::optional<net_conf> conf;
    cni_error err;
};

// Decodes stdin. Codes: 6 malformed JSON, 1 missing/unsupported cniVersion, 7 invalid fields.
conf_result parse_net_conf(const std::string& raw);

// Only the cniVersion (for VERSION, which must answer even for configs we cannot otherwise use).
std::optional<std::string> peek_version(const std::string& raw);

// Reads pod CIDRs from meshd's node file ({"podCIDRs": [...]}). errc::not_found when absent.
result<std::vector<ip_prefix>> read_node_file(const std::string& path);
// meshd's MTU from the node file ({"mtu": N}, the same value meshd gives the WireGuard interface),
// when the file exists and holds one from 576 to 65535.
std::optional<unsigned> read_node_file_mtu(const std::string& path);

// Validates one pod CIDR list (shared by the config and the node file).
result<std::vector<ip_prefix>> parse_pod_cidrs(const nlohmann::json& j, const std::string& where);

}  // namespace mw::cni
