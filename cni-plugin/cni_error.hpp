// CNI error results (spec "Error" section): well-known codes 1–99 as the spec defines them, and
// meshwire's own codes from 100 (documented in the README).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace mw::cni {

enum code : int {
    incompatible_version = 1,   // unsupported or missing cniVersion, or command not allowed at it
    unsupported_field = 2,      // a config field we understand but do not support
    container_unknown = 3,      // CNI_NETNS does not exist
    invalid_env = 4,            // missing or invalid CNI_* variables
    io_failure = 5,             // reading stdin, the IPAM store or node.json failed
    decode_failure = 6,         // stdin is not valid JSON
    invalid_config = 7,         // the network configuration is wrong
    try_again_later = 11,       // transient: e.g. meshd has not written node.json yet
    plugin_not_available = 50,  // STATUS: cannot serve ADDs
    // meshwire's own
    internal = 100,        // netlink or OS failure while wiring (message has errno + kernel text)
    ipam_exhausted = 101,  // no free address left in the pod CIDR
    ipam_delegate_failed = 102,  // the delegated IPAM plugin failed (its message is included)
    check_failed = 103,          // CHECK found the interface, addresses or routes not as recorded
    interface_exists = 104,      // CNI_IFNAME already exists in the container's namespace
};

struct cni_error {
    int code = internal;
    std::string msg;
    std::string details;

    nlohmann::json to_json(const std::string& cni_version) const;
};

}  // namespace mw::cni
