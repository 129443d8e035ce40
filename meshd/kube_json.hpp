// The Kubernetes JSON meshd reads and writes (issue 11 §3): Node objects, a NodeList, the lines of
// a Node watch, the merge patch that publishes our annotations, and a Status. Pure; parsed with
// nlohmann (no exceptions leave this file: every malformed input is an errc::parse_error value).
//
// Only the fields meshd uses are read, and unknown ones are ignored (the API adds fields between
// versions). Watch events are accepted without `kind`/`apiVersion` (KubeEdge's edge endpoint
// sends them so: kubeedge#2616); what makes an event usable is its type and its object's name.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.hpp"
#include "common/result.hpp"

namespace mw::meshd {

// Annotations meshd publishes on its own Node and reads from the others'.
inline constexpr const char* k_annotation_node_id = "meshwire.io/node-id";
inline constexpr const char* k_annotation_wg_key = "meshwire.io/wireguard-public-key";
inline constexpr const char* k_annotation_control_port = "meshwire.io/control-port";

struct kube_node {
    std::string name;
    std::string resource_version;
    std::vector<ip_prefix> pod_cidrs;  // spec.podCIDRs, else spec.podCIDR; invalid ones dropped
    std::vector<std::string> bad_pod_cidrs;  // text of the ones dropped (logged by the caller)
    std::vector<ip_address> internal_ips, external_ips;  // status.addresses
    std::map<std::string, std::string> annotations;      // only the meshwire.io/ ones

    friend bool operator==(const kube_node&, const kube_node&) = default;
};

struct kube_node_list {
    std::string resource_version;  // metadata.resourceVersion: where the watch starts
    std::vector<kube_node> items;
};

enum class kube_event_type { added, modified, deleted, bookmark, error };

struct kube_watch_event {
    kube_event_type type = kube_event_type::added;
    kube_node node;              // added/modified/deleted; bookmark: only resource_version
    int status_code = 0;         // error: the Status object's code (410: resourceVersion too old)
    std::string status_message;  // error
};

result<kube_node> parse_kube_node(std::string_view json_text);
result<kube_node_list> parse_kube_node_list(std::string_view json_text);
// One line of a watch stream (a JSON object, newline-terminated on the wire).
result<kube_watch_event> parse_kube_watch_event(std::string_view json_line);
// A Status object (an error response body): code and message; parse_error if it is none.
result<std::pair<int, std::string>> parse_kube_status(std::string_view json_text);

// The merge patch (RFC 7386; also a valid strategic merge patch) setting `annotations` on a Node.
std::string annotation_patch(const std::map<std::string, std::string>& annotations);

}  // namespace mw::meshd
