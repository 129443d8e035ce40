#include "meshd/meshd_cli.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string_view>
#include <thread>

#include "common/log.hpp"
#include "common/rtnl.hpp"
#include "common/tunnel_mtu.hpp"
#include "meshd/cluster_keys.hpp"
#include "meshd/core/wire_codec.hpp"
#include "meshd/identity_store.hpp"
#include "meshd/kube_access.hpp"
#include "meshd/kube_client.hpp"
#include "meshd/meshd_config.hpp"
#include "meshd/meshd_runtime.hpp"
#include "meshd/node_file.hpp"
#include "meshd/psk_file.hpp"

#ifndef MESHWIRE_VERSION
#define MESHWIRE_VERSION "unknown"
#endif

namespace mw::meshd {

static_assert(relay_data_header_size == k_relay_header_overhead,
              "common/tunnel_mtu.hpp must account for the whole relay data header");

namespace {

const char* const k_help = R"(NAME
    meshd - the meshwire node daemon (WireGuard mesh, relays, discovery)

SYNOPSIS
    meshd [--config FILE]
    meshd --check-config [--config FILE]
    meshd --help | --version

DESCRIPTION
    meshd runs on every node of a meshwire cluster. It owns the node's WireGuard interface,
    finds the other nodes, sets up direct or relayed paths to them, runs the relay service on
    nodes listed in relayNodes, and writes <runDir>/node.json for the meshwire CNI plugin.

    Membership: every node registers its signed peer record with every relay in relayNodes
    (UDP listenPort) and learns the other nodes' records from them. Paths: a peer that answers
    on one of its advertised addresses is reached directly (WireGuard endpoint = that address);
    otherwise through a relay both nodes are attached to, chosen so that both
    ends agree without talking; relays are ranked by the RTT sum both nodes publish, and a warm
    standby session is kept at the second-best. Relays in use are probed every 100 ms and
    dropped after 400 ms of silence (failover to the standby). Relayed packets stay WireGuard
    ciphertext; the relay forwards
    only for sessions the two nodes asked for, from the addresses they asked from. Every path
    is checked end to end once a second (relayed paths by probes inside the relay session);
    a path that stops answering for 3.5 s is replaced (direct -> relay, relay -> other relay),
    and a relayed pair moves back to direct as soon as direct answers again.

    A node listed in relayNodes serves only after another node has dialled back one of its
    advertiseAddresses (else it refuses the role, says why in meshctl status and the log, and
    checks again after 1, 2, 4, ... up to 16 minutes).
    Without relayNodes, nodes meet through dht.bootstrap: those addresses are asked for the
    cluster's records. Every node with a public (not RFC 1918, CGNAT, ULA or link-local) IPv4
    address (IPv6 if it has no IPv4) offers to relay, serves once a node at a public address has
    dialled it back, and says so in its signed record; the other nodes then use it (at most 16)
    like a configured relay (meshctl relays shows ORIGIN bootstrap or discovered).
    The config file is re-read every 2 s: relayNodes, dht.bootstrap, revokedNodes and logLevel
    edits apply live; other edits are logged as needing a restart. metrics.listen serves Prometheus text at /metrics.

    Not implemented yet: the Kademlia DHT (dht.enable is accepted and ignored; across LANs nodes
    meet only through relays or dht.bootstrap nodes).

    Kubernetes (kubernetes.enable): meshd lists and watches the API's Nodes (its own thread;
    410 Gone re-lists, errors back off 1-15 s with jitter; no discovery endpoint is used, so
    KubeEdge's edge endpoint works). It publishes meshwire.io/node-id,
    meshwire.io/wireguard-public-key and meshwire.io/control-port on its own Node (merge PATCH;
    RBAC: get, list, watch and patch on nodes). Other Nodes carrying meshwire.io/node-id are a
    discovery source (learnedVia "kubernetes"): their InternalIP and ExternalIP addresses at
    their control port are path candidates (records still come signed from the mesh). Without
    podCIDRs in the config they are taken from the own Node's spec.podCIDRs at startup (meshd
    waits for them); with both, the config wins and a difference is logged. The API being
    unreachable tears nothing down. The way in, first match: apiServer or metaServer (with
    caFile, certFile + keyFile, tokenFile), else kubeConfig, else in-cluster (the service
    account's token, re-read as it rotates, and CA). https is always verified (no insecure
    mode); http:// only to a loopback address named explicitly.

OPTIONS
    -c, --config FILE   The YAML configuration (default /etc/meshwire/meshd.yaml).
    --check-config      Parse and validate the configuration and the PSK file, then print the
                        effective configuration (every default filled in) as YAML on stdout.
                        Also reports the node identity if one exists. Writes nothing.
    -h, --help          This text.
    -V, --version       The version.

CONFIGURATION (YAML; unknown fields are errors; an annotated example is conf/meshd.yaml)
    nodeName            This node's name (default: $NODE_NAME, else the hostname);
                        1-253 characters of A-Z a-z 0-9 . _ -
    podCIDRs            This node's pod CIDRs, at most 8, e.g. [10.244.1.0/24, fd00:244:1::/64];
                        required unless kubernetes.enable (then default: the Node's spec.podCIDRs)
    clusterCIDRs        The cluster's pod address space, e.g. [10.244.0.0/16, fd00:244::/32]: other
                        nodes' pod CIDRs are routed only if inside it with exactly the block size
                        (strongly advised; without it a warning is logged at startup)
    nodeCIDRMaskSize    The block size of each node's pod CIDRs (default {ipv4: 24, ipv6: 64})
    interface           WireGuard interface name (default meshwire0)
    wireguard.backend   auto | kernel | userspace (default auto: kernel if the module exists)
    wireguard.listenPort  WireGuard UDP port (default 51820)
    listenPort          Control protocol and relay UDP port (default 51821); the same on
                        every node (record addresses at other ports are never sent to)
    psk.path            Required. File holding the cluster pre-shared key, not accessible by
                        others (chmod 600); its bytes are the key (trailing newlines ignored):
                        at least 32, text at least 44 characters, not a repeated pattern.
                        Generate: head -c 32 /dev/urandom | base64 > FILE
                        This is the key the node seals with; re-read every 2 s (live).
    psk.acceptPaths     [FILE, ...] at most 2 more keys accepted (never sealed with), checked
                        like psk.path, re-read every 2 s: for a key roll without downtime
                        (README "Rotating the cluster key"). Default []
    relayNodes          Relays: [{nodeName: NAME, advertiseAddress: [IP, ...]}]; the node whose
                        name is listed runs the relay service
    stateDir            Persistent state, holds the node identity (default /var/lib/meshwire)
    runDir              Runtime files, holds node.json (default /run/meshwire)
    socket              Control socket for meshctl (default <runDir>/meshd.sock)
    mtu                 MTU of the WireGuard interface and of the pods (node.json) (1280-65535;
                        default: the default route device's MTU - 92)
    pathMtuDiscovery    measure the path MTU of relayed peers in use with padded probes and
                        give it to their pod-CIDR routes as a route MTU (default true)
    mdns.enable         LAN discovery by mDNS on UDP 5353 (default true)
    mdns.interfaces     [name, ...] interfaces for mDNS (default []: every up interface with an
                        address but the WireGuard one, pod veths and container/virtual devices)
    mdns.linkLocal      also advertise 169.254/16 and fe80:: addresses (default false)
    dht.enable          Discovery across LANs by a DHT (default true; not implemented yet)
    dht.bootstrap       [IP, ...] other nodes (on listenPort) asked for the cluster's records;
                        used when relayNodes is empty (default [])
    revokedNodes        [node ID, ...] 64 hex digits each (meshctl peers --json "id"): their
                        records, messages and sessions are refused (a stolen node; also rotate
                        the PSK). Applies live (default [])
    kubernetes.enable   Kubernetes integration (default false; see DESCRIPTION)
    kubernetes.apiServer  the API's URL, https://HOST[:PORT] (http:// only to loopback)
    kubernetes.metaServer KubeEdge's edge endpoint (EdgeMesh's name), e.g. http://127.0.0.1:10550
                        (its default) or https://127.0.0.1:10550 with caFile/certFile/keyFile
    kubernetes.kubeConfig a kubeconfig (absolute path): current-context's server, CA, token,
                        tokenFile or client certificate; exec plugins are not supported
    kubernetes.caFile, .certFile, .keyFile, .tokenFile   absolute paths (PEM CA bundle, client
                        certificate and key, bearer token re-read before each request)
    kubernetes.requireNode  refuse mesh peers whose node ID no Node carries (default false;
                        applies from the first node list on, follows the API live)
    kubernetes.routeAuthority  node | config (default node): node routes another node's pod
                        CIDRs only inside its Node's spec.podCIDRs (none for a node no Node
                        carries), from the first node list on, live; config: clusterCIDRs only
    metrics.listen      Prometheus endpoint IP:PORT (default: none)
    logLevel            debug | info | warn | error (default info)

FILES
    /etc/meshwire/meshd.yaml        the configuration
    <stateDir>/node.seed            the node identity: a 32-byte secret seed, mode 0600, created
                                    once; the node ID and WireGuard key derive from it. Deleting
                                    it gives the node a new identity.
    <runDir>/node.json              {"nodeName", "podCIDRs", "mtu"} for the CNI plugin
    <runDir>/meshd.sock             control socket (meshctl)

EXIT STATUS
    0    success (--help, --version, --check-config with a valid configuration)
    1    runtime failure (state directory, node identity, node.json, the WireGuard interface,
         the UDP or control socket)
    64   command-line usage error
    78   invalid configuration or PSK file; the message names the field
    With systemd use RestartPreventExitStatus=64 78.

LOGS
    logfmt lines on stderr: ts=... level=... component=meshd msg="..." key=value...
    The node's private key material is never logged.
)";

std::string join_relays(const meshd_config& c) {
    std::string s;
    for (const auto& r : c.relay_nodes) {
        if (!s.empty()) s += ",";
        s += r.node_name + "(";
        for (size_t i = 0; i < r.advertise_address.size(); ++i) {
            s += (i ? " " : "") + r.advertise_address[i].str();
        }
        s += ")";
    }
    return s;
}

std::string join_cidrs(const meshd_config& c) {
    std::string s;
    for (const auto& p : c.pod_cidrs) s += (s.empty() ? "" : ",") + p.str();
    return s;
}

kube_settings kube_settings_of(const meshd_config& c) {
    return kube_settings{c.kubernetes_api_server,  c.kubernetes_meta_server,
                         c.kubernetes_kube_config, c.kubernetes_ca_file,
                         c.kubernetes_cert_file,   c.kubernetes_key_file,
                         c.kubernetes_token_file};
}

// podCIDRs omitted with kubernetes.enable: our Node's spec.podCIDRs, asked for until the API
// answers with valid ones (node.json and our record need them before anything else starts).
// Returns false only when stopped by a signal meanwhile.
bool pod_cidrs_from_node(meshd_config& c) {
    auto a = resolve_kube_access(kube_settings_of(c), kube_environment::from_process());
    if (!a) return false;  // checked by load_checked already
    std::chrono::milliseconds wait(1000);
    while (true) {
        auto n = kube_client::get_node(*a, c.node_name, std::chrono::seconds(30));
        std::string why;
        if (!n) {
            why = n.err().message;
        } else if (auto s = check_node_pod_cidrs(c, n->pod_cidrs); !s) {
            why = s.err().message;
            for (const auto& b : n->bad_pod_cidrs) why += "; not a CIDR: " + b;
        } else {
            c.pod_cidrs = n->pod_cidrs;
            log::info("podCIDRs taken from our Node's spec.podCIDRs",
                      {{"node", c.node_name}, {"pod_cidrs", join_cidrs(c)}});
            return true;
        }
        log::warn(
            "waiting for our Node's spec.podCIDRs (podCIDRs is not in the config)",
            {{"node", c.node_name}, {"error", why}, {"retry_in_ms", std::to_string(wait.count())}});
        std::this_thread::sleep_for(wait);
        wait = std::min<std::chrono::milliseconds>(wait * 2, std::chrono::seconds(15));
    }
}

// The config and the PSK file it names: both must be valid for meshd to start, so --check-config
// checks both.
result<meshd_config> load_checked(const std::string& path) {
    auto c = load_meshd_config(path, config_environment::from_process());
    if (!c) return c;
    auto keys = cluster_keys::load(*c);
    if (!keys) return keys.err();
    for (const auto& w : keys->warnings) log::warn(w, {});
    if (c->kubernetes_enable) {
        // The way in, its files and certificates: a bad path or certificate is a config error
        // naming the field, here rather than in the client's retry loop.
        auto a = resolve_kube_access(kube_settings_of(*c), kube_environment::from_process());
        if (!a) return a.err();
    }
    return c;
}

int check_config(const std::string& path, std::FILE* out) {
    auto c = load_checked(path);
    if (!c) {
        std::fprintf(stderr, "meshd: invalid configuration: %s\n", c.err().message.c_str());
        return exit_config;
    }
    std::string text = "# effective configuration of " + path + " (defaults included)\n";
    text += print_yaml(*c);
    // Read-only: --check-config never creates the identity.
    identity_store store(c->state_dir);
    auto id = store.load();
    if (id) {
        text += "# node identity " + id->path + ": node ID " + id->identity.id().hex() +
                ", WireGuard public key " + id->identity.wg_public_key().to_base64() + "\n";
    } else if (id.err().is(errc::not_found)) {
        text += "# node identity " + store.path() +
                " does not exist yet; meshd creates it on first start\n";
    } else {
        std::fputs(text.c_str(), out);
        std::fprintf(stderr, "meshd: %s\n", id.err().message.c_str());
        return exit_failure;
    }
    std::fputs(text.c_str(), out);
    return exit_ok;
}

int run(const std::string& path) {
    auto c = load_checked(path);
    if (!c) {
        log::error("invalid configuration", {{"error", c.err().message}});
        return exit_config;
    }
    log::level lvl = log::level::info;
    if (log::parse_level(c->log_level, lvl)) log::set_level(lvl);

    auto id = identity_store(c->state_dir).load_or_create();
    if (!id) {
        log::error("cannot load the node identity", {{"error", id.err().message}});
        return exit_failure;
    }
    if (id->created) log::info("created a new node identity", {{"path", id->path}});
    if (c->pod_cidrs.empty() && !pod_cidrs_from_node(*c)) return exit_config;

    // One MTU for the WireGuard interface and the pods (node.json): the config's, or the underlay's
    // minus everything meshwire adds (common/tunnel_mtu.hpp). Derived once, at start.
    unsigned mtu = 0;
    if (c->mtu) {
        mtu = *c->mtu;
    } else if (auto nl = rtnl::open()) {
        mtu = default_tunnel_mtu(*nl);
    } else {
        mtu = tunnel_mtu_for(k_default_underlay_mtu);
    }
    node_file nf{c->node_name, c->pod_cidrs, mtu};
    if (auto w = nf.write(c->node_file_path()); !w) {
        log::error("cannot write node.json", {{"error", w.err().message}});
        return exit_failure;
    }

    const relay_node* self = c->self_relay();
    log::info("meshd starting", {{"node", c->node_name},
                                 {"node_id", id->identity.id().hex()},
                                 {"wg_public_key", id->identity.wg_public_key().to_base64()},
                                 {"pod_cidrs", join_cidrs(*c)},
                                 {"interface", c->interface},
                                 {"relays", join_relays(*c)},
                                 {"relay_role", self ? "yes" : "no"},
                                 {"node_file", c->node_file_path()},
                                 {"mtu", std::to_string(mtu)}});
    if (c->cluster_cidrs.empty()) {
        log::warn(
            "clusterCIDRs is not set: any node holding the PSK can get an unused block of "
            "any address range routed to itself (prefixes shorter than nodeCIDRMaskSize "
            "and those covering known host, relay and record addresses are still refused); "
            "set clusterCIDRs to the cluster's pod address space",
            {{"example", "clusterCIDRs: [10.244.0.0/16, fd00:244::/32]"}});
    }
    auto keys = cluster_keys::load(*c);
    if (!keys) {
        log::error("cannot read the PSK file", {{"error", keys.err().message}});
        return exit_config;
    }
    log::info("cluster keys", {{"count", std::to_string(keys->fingerprints.size())},
                               {"seal", keys->fingerprints[0]},
                               {"accept", keys->accepted_list()}});
    return run_daemon(*c, path, id->identity, *keys, mtu);
}

}  // namespace

result<cli_options> parse_cli(int argc, const char* const* argv) {
    cli_options o;
    bool help = false, version = false, check = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "-h" || a == "--help") {
            help = true;
        } else if (a == "-V" || a == "--version") {
            version = true;
        } else if (a == "--check-config") {
            check = true;
        } else if (a == "-c" || a == "--config") {
            if (i + 1 >= argc)
                return error(errc::invalid_argument, std::string(a) + " needs a FILE");
            if (!o.config_path.empty())
                return error(errc::invalid_argument, "--config given twice");
            o.config_path = argv[++i];
        } else if (a.rfind("--config=", 0) == 0) {
            if (!o.config_path.empty())
                return error(errc::invalid_argument, "--config given twice");
            o.config_path = std::string(a.substr(9));
        } else {
            return error(errc::invalid_argument, "unknown argument \"" + std::string(a) + "\"");
        }
    }
    if (o.config_path.empty()) o.config_path = meshd_config::default_path;
    o.what = help      ? cli_options::mode::help
             : version ? cli_options::mode::version
             : check   ? cli_options::mode::check_config
                       : cli_options::mode::run;
    return o;
}

const char* help_text() {
    return k_help;
}

std::string version_text() {
    return std::string("meshd ") + MESHWIRE_VERSION + "\n";
}

int run_meshd(const cli_options& options, std::FILE* out) {
    log::set_component("meshd");
    switch (options.what) {
        case cli_options::mode::help:
            std::fputs(help_text(), out);
            return exit_ok;
        case cli_options::mode::version:
            std::fputs(version_text().c_str(), out);
            return exit_ok;
        case cli_options::mode::check_config:
            return check_config(options.config_path, out);
        case cli_options::mode::run:
            return run(options.config_path);
    }
    return exit_failure;
}

}  // namespace mw::meshd
