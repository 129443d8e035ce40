// meshd's configuration file (DESIGN §8): YAML, field names as in the EdgeMesh ConfigMap where
// they exist (relayNodes[].nodeName, relayNodes[].advertiseAddress). Parsing is strict: an unknown
// field or a value of the wrong shape is an error that names the field path and what is expected,
// e.g. `relayNodes[1].advertiseAddress[0]: "1.2.3" is not an IP address (line 14)`, because a
// silently ignored typo in a ConfigMap ("relayNode:") is far harder to debug than a refusal.
//
// Every default is filled in here, so the rest of meshd never deals with "unset"; print_yaml()
// shows exactly what meshd will use (`meshd --check-config`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.hpp"
#include "common/result.hpp"
#include "meshd/core/relay_session_table.hpp"

namespace mw::meshd {

struct relay_node {
    std::string node_name;
    std::vector<ip_address> advertise_address;

    friend bool operator==(const relay_node&, const relay_node&) = default;
};

enum class wg_backend_kind { auto_select, kernel, userspace };
std::string_view to_string(wg_backend_kind k);

struct meshd_config {
    static constexpr const char* default_path = "/etc/meshwire/meshd.yaml";
    static constexpr uint16_t default_wg_port = 51820;
    static constexpr uint16_t default_control_port = 51821;
    // Mirrors peer_record's limits: this node's pod CIDRs and a relay's addresses go into records.
    static constexpr size_t max_pod_cidrs = 8;
    static constexpr size_t max_advertise_addresses = 8;
    static constexpr size_t max_bootstrap = 16;
    static constexpr size_t max_revoked = 4096;

    std::string node_name;
    std::vector<ip_prefix> pod_cidrs;
    // Route authority (docs/architecture.md "Route authority"): the cluster's pod address space
    // (kube-controller-manager --cluster-cidr) and the block each node gets from it
    // (--node-cidr-mask-size-ipv4/-ipv6). Other nodes' pod CIDRs outside it or of another size are
    // never routed. Empty: only prefixes shorter than the block size are refused (a warning).
    static constexpr size_t max_cluster_cidrs = 8;
    std::vector<ip_prefix> cluster_cidrs;
    int node_cidr_mask_v4 = 24;
    int node_cidr_mask_v6 = 64;
    std::string interface = "meshwire0";
    wg_backend_kind wg_backend = wg_backend_kind::auto_select;
    uint16_t wg_listen_port = default_wg_port;
    uint16_t listen_port = default_control_port;  // control protocol and relay service
    std::string psk_path;
    // psk.acceptPaths: keys accepted besides psk.path's during a key roll (at most
    // max_accept_paths: each is one more decryption per forged datagram).
    std::vector<std::string> psk_accept_paths;
    static constexpr size_t max_accept_paths = 2;
    std::vector<relay_node> relay_nodes;
    // relayService: the relay's session table (relay_session_table.hpp), used while this node
    // serves as a relay. Fixed-size, all memory reserved when the relay service starts (~230
    // bytes a session; 4.2 MB at the default), so a change takes effect at the next restart (a
    // live edit is not applied: the table would have to be rebuilt, dropping every session).
    // max_relay_sessions_limit bounds that memory (~240 MB).
    static constexpr size_t max_relay_sessions_limit = 1'048'576;
    size_t relay_max_sessions = relay_table_limits{}.max_sessions;
    size_t relay_max_sessions_per_node = relay_table_limits{}.max_sessions_per_node;
    std::string state_dir = "/var/lib/meshwire";
    std::string run_dir = "/run/meshwire";
    std::string socket;           // default <runDir>/meshd.sock
    std::optional<unsigned> mtu;  // written to node.json for the CNI plugin when set
    // Path MTU search on relayed pairs in use, applied as route MTUs (issue 15; default on).
    bool path_mtu_discovery = true;
    // mDNS (docs/architecture.md "mDNS"): on these interfaces; empty = every up, non-loopback
    // interface with an address except our WireGuard interface, pod veths and container/virtual
    // bridges. Link-local addresses are advertised only with mdns_link_local.
    static constexpr size_t max_mdns_interfaces = 32;
    bool mdns_enable = true;
    std::vector<std::string> mdns_interfaces;
    bool mdns_link_local = false;
    bool dht_enable = true;
    // Other nodes asked for the cluster's records when relayNodes is empty (their listenPort).
    std::vector<ip_address> dht_bootstrap;
    // Node IDs (64 lowercase hex digits, as `meshctl peers` shows them) refused everywhere: their
    // records, messages and relay sessions (a stolen node; see README "Revoking a node"). Live.
    std::vector<std::string> revoked_nodes;
    // Kubernetes (kube_access.hpp for how the way in is chosen; README "Kubernetes").
    bool kubernetes_enable = false;
    std::string kubernetes_api_server;   // https:// URL (http:// only to loopback)
    std::string kubernetes_meta_server;  // KubeEdge's edge endpoint (EdgeMesh's metaServer)
    std::string kubernetes_kube_config;  // absolute path of a kubeconfig
    std::string kubernetes_ca_file, kubernetes_cert_file, kubernetes_key_file,
        kubernetes_token_file;  // absolute paths; add to / override the way in
    // Refuse mesh peers whose Node (by the meshwire.io/node-id annotation) is not in the API.
    bool kubernetes_require_node = false;
    // routeAuthority: "node" (default): once the API is listed, other nodes' pod CIDRs are routed
    // only inside their Node's spec.podCIDRs (a node no Node carries gets none); "config": the
    // clusterCIDRs checks alone (route_authority.hpp).
    std::string kubernetes_route_authority = "node";
    std::string metrics_listen;  // "IP:PORT"; empty: no metrics endpoint
    std::string log_level = "info";

    std::string node_file_path() const { return run_dir + "/node.json"; }
    // The relay entry naming this node, if any (this node then runs the relay service).
    const relay_node* self_relay() const;
};

// What the defaults depend on outside the file; injected so that parsing stays pure and testable.
struct config_environment {
    std::optional<std::string> node_name_env;  // $NODE_NAME
    std::string hostname;

    static config_environment from_process();
};

// Parses and validates YAML text. Never throws; errors are errc::invalid_argument (a field) or
// errc::parse_error (YAML syntax), with the field path and line in the message.
result<meshd_config> parse_meshd_config(std::string_view yaml_text, const config_environment& env);

// Reads the file at path and parses it; the message is prefixed with the path.
result<meshd_config> load_meshd_config(const std::string& path, const config_environment& env);

// The effective configuration (defaults included) as YAML that parse_meshd_config accepts again.
std::string print_yaml(const meshd_config& c);

// Pod CIDRs from this node's Node object (spec.podCIDRs) when the config has none: the config's
// rules (the CNI plugin's, clusterCIDRs, nodeCIDRMaskSize) applied to them. errc::invalid_argument
// naming the Node field.
status check_node_pod_cidrs(const meshd_config& c, const std::vector<ip_prefix>& cidrs);

// True for names a peer record can carry: 1-253 of [A-Za-z0-9._-] (Kubernetes node names fit).
bool valid_node_name(std::string_view name);

}  // namespace mw::meshd
