// `<runDir>/node.json`: what the CNI plugin needs from meshd, in the format its reader accepts
// (cni-plugin/net_conf.cpp read_node_file): {"nodeName": "...", "podCIDRs": [...], "mtu": N}.
// "mtu" is written only when meshd knows it; the plugin derives one otherwise.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.hpp"
#include "common/result.hpp"

namespace mw::meshd {

struct node_file {
    std::string node_name;
    std::vector<ip_prefix> pod_cidrs;
    std::optional<unsigned> mtu;

    std::string to_json() const;
    // Atomic replace (temp file in the same directory, fsync, rename): a plugin running at the
    // same moment reads the old file or the new one, never half of one. Creates the directory
    // (0755) when missing; the file is 0644 because it holds nothing secret.
    status write(const std::string& path) const;
};

}  // namespace mw::meshd
