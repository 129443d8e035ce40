// meshd's YAML config: the example file, defaults, and one test per error message, because the
// messages are the interface an operator debugging a ConfigMap actually sees.
#include <doctest/doctest.h>

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "meshd/meshd_config.hpp"

using mw::meshd::config_environment;
using mw::meshd::meshd_config;
using mw::meshd::parse_meshd_config;

namespace {

config_environment env(std::optional<std::string> node_name = std::nullopt,
                       std::string host = "host-a") {
    config_environment e;
    e.node_name_env = std::move(node_name);
    e.hostname = std::move(host);
    return e;
}

// The smallest valid config, plus extra lines.
std::string minimal(const std::string& extra = "") {
    return "podCIDRs: [10.244.1.0/24]\npsk: {path: /etc/meshwire/psk}\n" + extra;
}

meshd_config ok(const std::string& yaml, const config_environment& e = env()) {
    auto r = parse_meshd_config(yaml, e);
    if (!r) FAIL_CHECK("unexpected error: ", r.err().message);
    REQUIRE(r.ok());
    return *r;
}

std::string err(const std::string& yaml, const config_environment& e = env()) {
    auto r = parse_meshd_config(yaml, e);
    REQUIRE_MESSAGE(!r.ok(), "config was accepted:\n" << yaml);
    return r.err().message;
}

#define CHECK_ERR(yaml, expected)                                  \
    do {                                                           \
        std::string m_ = err(yaml);                                \
        CHECK_MESSAGE(m_.find(expected) != std::string::npos, m_); \
    } while (0)

}  // namespace

TEST_CASE("meshd config: the example conf/meshd.yaml parses to what it documents") {
    std::ifstream in(std::string(MESHWIRE_SOURCE_DIR) + "/conf/meshd.yaml");
    REQUIRE(in);
    std::stringstream ss;
    ss << in.rdbuf();
    auto c = ok(ss.str());
    CHECK(c.node_name == "edge-sh-1");
    REQUIRE(c.pod_cidrs.size() == 2);
    CHECK(c.pod_cidrs[0].str() == "10.244.1.0/24");
    CHECK(c.pod_cidrs[1].str() == "fd00:244:1::/64");
    REQUIRE(c.cluster_cidrs.size() == 2);
    CHECK(c.cluster_cidrs[0].str() == "10.244.0.0/16");
    CHECK(c.cluster_cidrs[1].str() == "fd00:244::/32");
    CHECK(c.node_cidr_mask_v4 == 24);
    CHECK(c.node_cidr_mask_v6 == 64);
    CHECK(c.interface == "meshwire0");
    CHECK(c.wg_backend == mw::meshd::wg_backend_kind::auto_select);
    CHECK(c.wg_listen_port == 51820);
    CHECK(c.listen_port == 51821);
    CHECK(c.psk_path == "/etc/meshwire/psk");
    REQUIRE(c.relay_nodes.size() == 2);
    CHECK(c.relay_nodes[0].node_name == "k8s-master");
    REQUIRE(c.relay_nodes[0].advertise_address.size() == 1);
    CHECK(c.relay_nodes[0].advertise_address[0].str() == "1.1.1.1");
    CHECK(c.relay_nodes[1].node_name == "cloud-relay-2");
    REQUIRE(c.relay_nodes[1].advertise_address.size() == 2);
    CHECK(c.relay_nodes[1].advertise_address[1].str() == "2001:db8::2");
    CHECK(c.state_dir == "/var/lib/meshwire");
    CHECK(c.run_dir == "/run/meshwire");
    CHECK(c.socket == "/run/meshwire/meshd.sock");
    CHECK_FALSE(c.mtu.has_value());
    CHECK(c.mdns_enable);
    CHECK(c.dht_enable);
    CHECK_FALSE(c.kubernetes_enable);
    CHECK(c.metrics_listen == "127.0.0.1:9464");
    CHECK(c.log_level == "info");
    CHECK(c.self_relay() == nullptr);
}

TEST_CASE("meshd config: defaults") {
    auto c = ok(minimal());
    CHECK(c.node_name == "host-a");  // no nodeName, no $NODE_NAME: the hostname
    CHECK(c.interface == "meshwire0");
    CHECK(c.wg_backend == mw::meshd::wg_backend_kind::auto_select);
    CHECK(c.wg_listen_port == 51820);
    CHECK(c.listen_port == 51821);
    CHECK(c.relay_nodes.empty());
    CHECK(c.state_dir == "/var/lib/meshwire");
    CHECK(c.run_dir == "/run/meshwire");
    CHECK(c.socket == "/run/meshwire/meshd.sock");
    CHECK(c.node_file_path() == "/run/meshwire/node.json");
    CHECK_FALSE(c.mtu.has_value());
    CHECK(c.mdns_enable);
    CHECK(c.dht_enable);
    CHECK_FALSE(c.kubernetes_enable);
    CHECK(c.metrics_listen.empty());
    CHECK(c.log_level == "info");

    SUBCASE("$NODE_NAME wins over the hostname, nodeName over both") {
        CHECK(ok(minimal(), env("from-env")).node_name == "from-env");
        CHECK(ok(minimal(), env("")).node_name == "host-a");  // empty counts as unset
        CHECK(ok(minimal("nodeName: explicit\n"), env("from-env")).node_name == "explicit");
    }
    SUBCASE("the socket follows runDir unless set") {
        CHECK(ok(minimal("runDir: /run/mw-a\n")).socket == "/run/mw-a/meshd.sock");
        CHECK(ok(minimal("runDir: /run/mw-a\nsocket: /tmp/s.sock\n")).socket == "/tmp/s.sock");
    }
    SUBCASE("null values mean the default") {
        auto n = ok(minimal("interface:\nrelayNodes: ~\nwireguard:\n"));
        CHECK(n.interface == "meshwire0");
        CHECK(n.relay_nodes.empty());
    }
    SUBCASE("explicit values") {
        auto e = ok(minimal(
            "wireguard: {backend: userspace, listenPort: 1000}\nlistenPort: 1001\nmtu: 1380\n"
            "mdns: {enable: false}\ndht: {enable: False, bootstrap: [203.0.113.11, "
            "'2001:db8::11']}\n"
            "logLevel: debug\n"
            "kubernetes: {enable: true, apiServer: 'https://10.96.0.1:443', kubeConfig: /etc/k}\n"
            "metrics: {listen: '[::]:9464'}\n"));
        CHECK(e.wg_backend == mw::meshd::wg_backend_kind::userspace);
        CHECK(e.wg_listen_port == 1000);
        CHECK(e.listen_port == 1001);
        CHECK(e.mtu == 1380u);
        CHECK_FALSE(e.mdns_enable);
        CHECK(e.mdns_interfaces.empty());
        CHECK_FALSE(e.mdns_link_local);
        CHECK_FALSE(e.dht_enable);
        REQUIRE(e.dht_bootstrap.size() == 2);
        CHECK(e.dht_bootstrap[1].str() == "2001:db8::11");
        CHECK(e.log_level == "debug");
        CHECK(e.kubernetes_enable);
        CHECK(e.kubernetes_api_server == "https://10.96.0.1:443");
        CHECK(e.kubernetes_kube_config == "/etc/k");
        CHECK(e.metrics_listen == "[::]:9464");
    }
}

TEST_CASE("meshd config: kubernetes (podCIDRs from the Node, the ways in, requireNode)") {
    auto c =
        ok("psk: {path: /p}\nkubernetes: {enable: true, metaServer: 'http://127.0.0.1:10550',"
           " requireNode: true}\n");
    CHECK(c.pod_cidrs.empty());  // from the Node's spec.podCIDRs at start
    CHECK(c.kubernetes_meta_server == "http://127.0.0.1:10550");
    CHECK(c.kubernetes_require_node);
    CHECK(c.kubernetes_route_authority == "node");  // the default: Node spec.podCIDRs decide
    auto again = ok(print_yaml(c));
    CHECK(print_yaml(again) == print_yaml(c));
    CHECK(again.pod_cidrs.empty());
    c = ok("psk: {path: /p}\npodCIDRs: []\nkubernetes: {enable: true}\n");
    CHECK(c.pod_cidrs.empty());
    c =
        ok(minimal("kubernetes: {enable: true, apiServer: 'https://[fd00::1]:6443', caFile: /ca,"
                   " certFile: /c, keyFile: /k, tokenFile: /t}\n"));
    CHECK(c.kubernetes_ca_file == "/ca");
    CHECK(c.kubernetes_token_file == "/t");
    c = ok(minimal("kubernetes: {enable: true, routeAuthority: config}\n"));
    CHECK(c.kubernetes_route_authority == "config");
    CHECK(ok(print_yaml(c)).kubernetes_route_authority == "config");
    CHECK_ERR(minimal("kubernetes: {routeAuthority: nodes}\n"),
              "kubernetes.routeAuthority: \"nodes\" is not one of node, config");

    // The Node's pod CIDRs are held to the config's rules.
    c = ok("psk: {path: /p}\nclusterCIDRs: [10.244.0.0/16]\nkubernetes: {enable: true}\n");
    CHECK(check_node_pod_cidrs(c, {*mw::ip_prefix::parse("10.244.3.0/24")}));
    auto e = check_node_pod_cidrs(c, {*mw::ip_prefix::parse("10.9.3.0/24")});
    REQUIRE_FALSE(e);
    CHECK(e.err().message.find("spec.podCIDRs[0] \"10.9.3.0/24\" is outside clusterCIDRs") !=
          std::string::npos);
    CHECK_FALSE(check_node_pod_cidrs(c, {*mw::ip_prefix::parse("10.244.0.0/23")}));
    CHECK_FALSE(check_node_pod_cidrs(c, {}));
}

TEST_CASE("meshd config: print_yaml is the effective config and parses back to the same") {
    std::ifstream in(std::string(MESHWIRE_SOURCE_DIR) + "/conf/meshd.yaml");
    std::stringstream ss;
    ss << in.rdbuf();
    for (const std::string& text :
         {ss.str(), minimal(), minimal("mtu: 1400\nkubernetes: {apiServer: 'https://k:6443'}\n"),
          minimal("dht: {bootstrap: [203.0.113.11, 'fd00::1']}\n"),
          minimal(
              "revokedNodes: ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', "
              "'0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF']\n")}) {
        auto c = ok(text);
        std::string printed = print_yaml(c);
        auto again = ok(printed);
        CHECK(print_yaml(again) == printed);
        CHECK(again.relay_nodes == c.relay_nodes);
        CHECK(again.pod_cidrs == c.pod_cidrs);
        CHECK(again.dht_bootstrap == c.dht_bootstrap);
        CHECK(again.revoked_nodes == c.revoked_nodes);
    }
    // Node IDs are kept lowercase, as meshctl shows them.
    CHECK(ok(minimal("revokedNodes: "
                     "['0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF']\n"))
              .revoked_nodes ==
          std::vector<std::string>{
              "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"});
    CHECK(print_yaml(ok(minimal())).find("socket: \"/run/meshwire/meshd.sock\"") !=
          std::string::npos);
}

TEST_CASE("meshd config: unknown and repeated fields are errors naming the field") {
    CHECK_ERR(minimal("relayNode: []\n"),
              "relayNode: unknown field (expected one of: nodeName, podCIDRs");
    CHECK_ERR(minimal("wireguard: {port: 1}\n"),
              "wireguard.port: unknown field (expected one of: backend, listenPort)");
    CHECK_ERR(minimal("relayNodes: [{nodeName: a, advertiseAddress: [1.1.1.1], port: 1}]\n"),
              "relayNodes[0].port: unknown field (expected one of: nodeName, advertiseAddress)");
    CHECK_ERR(minimal("mdns: {enabled: true}\n"),
              "mdns.enabled: unknown field (expected one of: enable, interfaces, linkLocal)");
    CHECK_ERR(minimal("kubernetes: {master: x}\n"), "kubernetes.master: unknown field");
    CHECK_ERR(minimal("metrics: {address: x}\n"),
              "metrics.address: unknown field (expected one of: listen)");
    CHECK_ERR(minimal("psk: {file: /x}\n"), "appears more than once");
    CHECK_ERR("psk: {file: /x}\npodCIDRs: [10.0.0.0/24]\n",
              "psk.file: unknown field (expected one of: path, acceptPaths)");
    CHECK_ERR(minimal("interface: a\ninterface: b\n"), "interface: appears more than once");
    // The line number of the offending field is in the message.
    CHECK_ERR(minimal("logLevel: info\nbogus: 1\n"), "bogus: unknown field");
    CHECK_ERR(minimal("logLevel: info\nbogus: 1\n"), "(line 4)");
}

TEST_CASE("meshd config: invalid values, one message each") {
    // Document level.
    CHECK_ERR("", "the config is empty");
    CHECK_ERR("- a\n- b\n", "must be a mapping with the fields nodeName");
    CHECK_ERR("podCIDRs: [10.0.0.0/24\n", "YAML syntax error at line");
    CHECK_ERR("# only a comment\n", "the config is empty");
    CHECK_ERR("hello\n", "the config must be a mapping with the fields nodeName");
    CHECK_ERR(minimal() + "---\n" + minimal(), "the config has 2 YAML documents");
    CHECK_ERR("---\n" + minimal() + "...\n" + minimal(), "the config has 2 YAML documents");
    CHECK(ok("%YAML 1.2\n# comment\n---\n" + minimal() + "...\n").node_name == "host-a");
    CHECK(ok(minimal("interface: >-\n  ---x\n")).interface == "---x");  // indented: not a marker
    CHECK_ERR(std::string(5000, '[') + "\n", "YAML");  // deep nesting: an error, not a crash

    // nodeName and its defaults.
    CHECK_ERR(minimal("nodeName: 'bad name'\n"), "nodeName: \"bad name\" is not a valid node name");
    CHECK_ERR(minimal("nodeName: [a]\n"), "nodeName: must be a string");
    CHECK_ERR(minimal("nodeName: " + std::string(254, 'a') + "\n"), "is not a valid node name");
    {
        auto r = parse_meshd_config(minimal(), env("bad/name"));
        REQUIRE_FALSE(r.ok());
        CHECK(r.err().message.find(
                  "nodeName: not set, and $NODE_NAME \"bad/name\" is not a valid") == 0);
        auto h = parse_meshd_config(minimal(), env(std::nullopt, ""));
        REQUIRE_FALSE(h.ok());
        CHECK(h.err().message.find("the hostname \"\" is not a valid node name") !=
              std::string::npos);
    }

    // podCIDRs.
    CHECK_ERR("psk: {path: /p}\n", "podCIDRs: is required");
    CHECK_ERR("psk: {path: /p}\nkubernetes: {enable: false}\n", "podCIDRs: is required");
    CHECK_ERR("psk: {path: /p}\npodCIDRs: 10.0.0.0/24\n", "podCIDRs: must be a list of CIDRs");
    CHECK_ERR("psk: {path: /p}\npodCIDRs: []\n", "podCIDRs: is empty");
    CHECK_ERR("psk: {path: /p}\npodCIDRs: [nope]\n", "podCIDRs[0]: \"nope\" is not a CIDR");
    CHECK_ERR("psk: {path: /p}\npodCIDRs: [10.0.0.1/24]\n",
              "podCIDRs[0]: \"10.0.0.1/24\" has host bits set (did you mean 10.0.0.0/24?)");
    CHECK_ERR("psk: {path: /p}\npodCIDRs: [10.0.0.0/31]\n", "too small to hold pods (at most /30)");
    CHECK_ERR("psk: {path: /p}\npodCIDRs: ['fd00::/127']\n", "at most /126");
    CHECK_ERR("psk: {path: /p}\npodCIDRs: [10.0.0.0/16, 10.0.1.0/24]\n",
              "podCIDRs[1]: \"10.0.1.0/24\" overlaps 10.0.0.0/16");
    CHECK_ERR(
        "psk: {path: /p}\npodCIDRs: [10.0.0.0/24, 10.0.1.0/24, 10.0.2.0/24, 10.0.3.0/24, "
        "10.0.4.0/24, 10.0.5.0/24, 10.0.6.0/24, 10.0.7.0/24, 10.0.8.0/24]\n",
        "podCIDRs: has 9 entries; at most 8 are supported");

    // interface, ports.
    CHECK_ERR(minimal("interface: meshwire-too-long\n"),
              "interface: \"meshwire-too-long\" is not a valid interface name");
    CHECK_ERR(minimal("interface: 'a/b'\n"), "is not a valid interface name");
    CHECK_ERR(minimal("wireguard: {backend: magic}\n"),
              "wireguard.backend: \"magic\" is not one of auto, kernel, userspace");
    CHECK_ERR(minimal("wireguard: kernel\n"),
              "wireguard: must be a mapping with the fields backend, listenPort");
    CHECK_ERR(minimal("wireguard: {listenPort: 0}\n"),
              "wireguard.listenPort: 0 is out of range (expected an integer from 1 to 65535)");
    CHECK_ERR(minimal("wireguard: {listenPort: 70000}\n"), "70000 is out of range");
    CHECK_ERR(minimal("listenPort: abc\n"),
              "listenPort: \"abc\" is not an integer from 1 to 65535");
    CHECK_ERR(minimal("listenPort: 1.5\n"), "listenPort: \"1.5\" is not an integer");
    CHECK_ERR(minimal("listenPort: 51820\n"),
              "listenPort: 51820 is also wireguard.listenPort; the control/relay port and the "
              "WireGuard port must differ");

    // psk.
    CHECK_ERR("podCIDRs: [10.0.0.0/24]\n", "psk.path: is required");
    CHECK_ERR("podCIDRs: [10.0.0.0/24]\npsk: {}\n", "psk.path: is required");
    CHECK_ERR("podCIDRs: [10.0.0.0/24]\npsk: /etc/psk\n",
              "psk: must be a mapping with the fields path");
    CHECK_ERR("podCIDRs: [10.0.0.0/24]\npsk: {path: psk.txt}\n",
              "psk.path: \"psk.txt\" must be an absolute path");

    // relayNodes.
    CHECK_ERR(minimal("relayNodes: {nodeName: a}\n"), "relayNodes: must be a list of relays");
    CHECK_ERR(minimal("relayNodes: [a]\n"),
              "relayNodes[0]: must be a mapping with the fields nodeName, advertiseAddress");
    CHECK_ERR(minimal("relayNodes: [{advertiseAddress: [1.1.1.1]}]\n"),
              "relayNodes[0].nodeName: is required");
    CHECK_ERR(minimal("relayNodes: [{nodeName: 'r 1', advertiseAddress: [1.1.1.1]}]\n"),
              "relayNodes[0].nodeName: \"r 1\" is not a valid node name");
    CHECK_ERR(minimal("relayNodes: [{nodeName: a, advertiseAddress: [1.1.1.1]}, "
                      "{nodeName: a, advertiseAddress: [2.2.2.2]}]\n"),
              "relayNodes[1].nodeName: \"a\" is already listed as relayNodes[0]");
    CHECK_ERR(minimal("relayNodes: [{nodeName: a}]\n"),
              "relayNodes[0].advertiseAddress: is required");
    CHECK_ERR(minimal("relayNodes: [{nodeName: a, advertiseAddress: 1.1.1.1}]\n"),
              "relayNodes[0].advertiseAddress: must be a list of IP addresses");
    CHECK_ERR(minimal("relayNodes: [{nodeName: a, advertiseAddress: []}]\n"),
              "relayNodes[0].advertiseAddress: is empty");
    CHECK_ERR(minimal("relayNodes:\n  - nodeName: a\n    advertiseAddress: [1.1.1.1]\n"
                      "  - nodeName: b\n    advertiseAddress: [\"1.2.3\"]\n"),
              "relayNodes[1].advertiseAddress[0]: \"1.2.3\" is not an IP address (line 7)");
    CHECK_ERR(minimal("relayNodes: [{nodeName: a, advertiseAddress: [relay.example.com]}]\n"),
              "\"relay.example.com\" is not an IP address");
    CHECK_ERR(minimal("relayNodes: [{nodeName: a, advertiseAddress: [0.0.0.0]}]\n"),
              "relayNodes[0].advertiseAddress[0]: \"0.0.0.0\" is the unspecified address");
    CHECK_ERR(minimal("relayNodes: [{nodeName: a, advertiseAddress: [1.1.1.1, 1.1.1.1]}]\n"),
              "relayNodes[0].advertiseAddress[1]: \"1.1.1.1\" is listed twice");
    CHECK_ERR(minimal("relayNodes: [{nodeName: a, advertiseAddress: [1.1.1.1, 1.1.1.2, 1.1.1.3, "
                      "1.1.1.4, 1.1.1.5, 1.1.1.6, 1.1.1.7, 1.1.1.8, 1.1.1.9]}]\n"),
              "relayNodes[0].advertiseAddress: has 9 entries; at most 8");

    // Paths.
    CHECK_ERR(minimal("stateDir: var/lib/meshwire\n"),
              "stateDir: \"var/lib/meshwire\" must be an absolute path");
    CHECK_ERR(minimal("runDir: ''\n"), "runDir: \"\" must be an absolute path");
    CHECK_ERR(minimal("socket: meshd.sock\n"), "socket: \"meshd.sock\" must be an absolute path");
    CHECK_ERR(minimal("socket: /" + std::string(120, 's') + "\n"),
              "is too long for a unix socket path (at most 107 bytes)");

    // mtu, feature sections, metrics, logLevel.
    CHECK_ERR(minimal("mtu: 1000\n"),
              "mtu: 1000 is out of range (expected an integer from 1280 to 65535)");
    CHECK_ERR(minimal("mdns: true\n"),
              "mdns: must be a mapping with the fields enable, interfaces, linkLocal");
    CHECK_ERR(minimal("mdns: {interfaces: eth0}\n"), "mdns.interfaces: ");
    CHECK_ERR(minimal("mdns: {interfaces: [eth0, 'a b']}\n"),
              "mdns.interfaces[1]: \"a b\" is not a valid interface name");
    CHECK_ERR(minimal("mdns: {interfaces: [eth0, eth0]}\n"),
              "mdns.interfaces[1]: \"eth0\" is listed twice");
    CHECK_ERR(minimal("mdns: {linkLocal: 2}\n"), "mdns.linkLocal: ");
    CHECK_ERR(minimal("mdns: {enable: maybe}\n"),
              "mdns.enable: \"maybe\" is not a boolean (expected true or false)");
    CHECK_ERR(minimal("dht: {enable: [1]}\n"), "dht.enable: must be true or false");
    CHECK_ERR(minimal("dht: {bootstrap: 1.2.3.4}\n"), "dht.bootstrap: ");
    CHECK_ERR(minimal("dht: {bootstrap: [1.2.3]}\n"),
              "dht.bootstrap[0]: \"1.2.3\" is not an IP address");
    CHECK_ERR(minimal("dht: {bootstrap: [1.2.3.4, 1.2.3.4]}\n"),
              "dht.bootstrap[1]: \"1.2.3.4\" is listed twice");
    CHECK_ERR(minimal("dht: {bootstrap: ['::']}\n"), "is the unspecified address");
    CHECK_ERR(minimal("dht: {seeds: []}\n"), "dht.seeds: unknown field");
    CHECK_ERR(minimal("relayNodes: [{nodeName: a, advertiseAddress: [1.1.1.1]},\n"
                      "             {nodeName: b, advertiseAddress: [2.2.2.2, 1.1.1.1]}]\n"),
              "relayNodes[1].advertiseAddress[1]: \"1.1.1.1\" is already an address of "
              "relayNodes[0]");
    CHECK_ERR(minimal("kubernetes: {enable: yes}\n"),
              "kubernetes.enable: \"yes\" is not a boolean");
    CHECK_ERR(minimal("kubernetes: {apiServer: 'http://10.96.0.1'}\n"),
              "kubernetes.apiServer: \"http://10.96.0.1\": plain http:// is only accepted for a "
              "loopback address");
    CHECK_ERR(minimal("kubernetes: {apiServer: '10.96.0.1:443'}\n"),
              "kubernetes.apiServer: \"10.96.0.1:443\" is not an https:// URL");
    CHECK_ERR(minimal("kubernetes: {apiServer: 'https://a', metaServer: 'https://b'}\n"),
              "kubernetes.metaServer: and apiServer are both set");
    CHECK_ERR(minimal("kubernetes: {certFile: /c.crt}\n"),
              "kubernetes.certFile: is set without keyFile");
    CHECK_ERR(minimal("kubernetes: {tokenFile: token}\n"),
              "kubernetes.tokenFile: \"token\" must be an absolute path");
    CHECK_ERR(minimal("kubernetes: {kubeConfig: kube.yaml}\n"),
              "kubernetes.kubeConfig: \"kube.yaml\" must be an absolute path");
    CHECK_ERR(minimal("metrics: {listen: 'localhost:9464'}\n"),
              "metrics.listen: \"localhost:9464\" is not IP:PORT");
    CHECK_ERR(minimal("metrics: {listen: '1.2.3.4'}\n"), "is not IP:PORT");
    CHECK_ERR(minimal("metrics: {listen: '1.2.3.4:0'}\n"), "is not IP:PORT");
    CHECK_ERR(minimal("metrics: {listen: '::1:9464'}\n"), "is not IP:PORT");
    CHECK_ERR(
        minimal("revokedNodes: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"),
        "revokedNodes: ");
    CHECK_ERR(minimal("revokedNodes: [lan1a]\n"),
              "revokedNodes[0]: \"lan1a\" is not a node ID: want the 64 hex digits");
    CHECK_ERR(
        minimal(
            "revokedNodes: ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa']\n"),
        "is not a node ID");
    CHECK_ERR(
        minimal(
            "revokedNodes: ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaag']\n"),
        "is not a node ID");
    CHECK_ERR(
        minimal(
            "revokedNodes: ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', "
            "'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA']\n"),
        "revokedNodes[1]: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\" is "
        "listed twice");
    CHECK_ERR(minimal("logLevel: verbose\n"),
              "logLevel: \"verbose\" is not one of debug, info, warn, error");
}

TEST_CASE("meshd config: self_relay finds this node in relayNodes") {
    auto c =
        ok(minimal("nodeName: r2\nrelayNodes: [{nodeName: r1, advertiseAddress: [1.1.1.1]}, "
                   "{nodeName: r2, advertiseAddress: [2.2.2.2]}]\n"));
    REQUIRE(c.self_relay() != nullptr);
    CHECK(c.self_relay()->advertise_address[0].str() == "2.2.2.2");
}

TEST_CASE("meshd config: load_meshd_config prefixes the path and reports a missing file") {
    auto r = mw::meshd::load_meshd_config("/nonexistent/meshd.yaml", env());
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().is(mw::errc::not_found));
    CHECK(r.err().message == "config file /nonexistent/meshd.yaml does not exist");

    char tmpl[] = "/tmp/mw-meshd-config-XXXXXX";
    int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    std::string text = minimal("logLevel: loud\n");
    REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    close(fd);
    auto bad = mw::meshd::load_meshd_config(tmpl, env());
    unlink(tmpl);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.err().message ==
          std::string(tmpl) +
              ": logLevel: \"loud\" is not one of debug, info, warn, error (line 3)");
}

TEST_CASE("meshd config: clusterCIDRs and nodeCIDRMaskSize (the route authority's bounds)") {
    auto d = ok(minimal());
    CHECK(d.cluster_cidrs.empty());
    CHECK(d.node_cidr_mask_v4 == 24);
    CHECK(d.node_cidr_mask_v6 == 64);
    auto c =
        ok("podCIDRs: [10.244.1.0/24, 'fd00:244:1::/64']\npsk: {path: /p}\n"
           "clusterCIDRs: [10.244.0.0/16, 'fd00:244::/32']\n");
    REQUIRE(c.cluster_cidrs.size() == 2);
    CHECK(c.cluster_cidrs[1].str() == "fd00:244::/32");
    auto m =
        ok("podCIDRs: [10.244.1.0/26]\npsk: {path: /p}\nclusterCIDRs: [10.244.0.0/16]\n"
           "nodeCIDRMaskSize: {ipv4: 26, ipv6: 80}\n");
    CHECK(m.node_cidr_mask_v4 == 26);
    CHECK(m.node_cidr_mask_v6 == 80);
    // print_yaml writes both, and they parse back.
    auto again = ok(print_yaml(m));
    CHECK(again.cluster_cidrs == m.cluster_cidrs);
    CHECK(again.node_cidr_mask_v4 == 26);
    CHECK(again.node_cidr_mask_v6 == 80);

    // The node's own blocks must be what the others accept.
    CHECK_ERR("podCIDRs: [10.245.1.0/24]\npsk: {path: /p}\nclusterCIDRs: [10.244.0.0/16]\n",
              "podCIDRs[0]: \"10.245.1.0/24\" is outside clusterCIDRs");
    CHECK_ERR("podCIDRs: [10.244.1.0/25]\npsk: {path: /p}\nclusterCIDRs: [10.244.0.0/16]\n",
              "podCIDRs[0]: \"10.244.1.0/25\" is not a /24 (nodeCIDRMaskSize.ipv4)");
    CHECK_ERR(
        "podCIDRs: [10.244.1.0/24, 'fd00:244:1::/64']\npsk: {path: /p}\n"
        "clusterCIDRs: [10.244.0.0/16]\n",
        "podCIDRs[1]: \"fd00:244:1::/64\" is outside clusterCIDRs");
    // Without clusterCIDRs, a block larger than the block size is refused too.
    CHECK_ERR("podCIDRs: [10.244.0.0/16]\npsk: {path: /p}\n",
              "podCIDRs[0]: \"10.244.0.0/16\" is larger than a /24 (nodeCIDRMaskSize.ipv4)");
    CHECK(ok("podCIDRs: [10.244.0.0/16]\npsk: {path: /p}\nnodeCIDRMaskSize: {ipv4: 16}\n")
              .node_cidr_mask_v4 == 16);
    // The lists themselves.
    CHECK_ERR(minimal("clusterCIDRs: 10.244.0.0/16\n"), "clusterCIDRs: must be a list");
    CHECK_ERR(minimal("clusterCIDRs: [10.244.0.1/16]\n"),
              "clusterCIDRs[0]: \"10.244.0.1/16\" has host bits set (did you mean 10.244.0.0/16?)");
    CHECK_ERR(minimal("clusterCIDRs: [10.244.0.0/16, 10.244.128.0/17]\n"),
              "clusterCIDRs[1]: \"10.244.128.0/17\" overlaps 10.244.0.0/16");
    CHECK_ERR(minimal("clusterCIDRs: [banana]\n"), "clusterCIDRs[0]: \"banana\" is not a CIDR");
    CHECK_ERR(minimal("nodeCIDRMaskSize: {ipv4: 31}\n"), "nodeCIDRMaskSize.ipv4");
    CHECK_ERR(minimal("nodeCIDRMaskSize: {ipv5: 24}\n"), "ipv5");
    CHECK_ERR(minimal("clusterCIDRs: [10.244.0.0/25]\nnodeCIDRMaskSize: {ipv4: 24}\n"),
              "nodeCIDRMaskSize.ipv4: /24 is larger than clusterCIDRs[0] 10.244.0.0/25");
}

TEST_CASE("meshd config: psk.acceptPaths (key roll): parsed, bounded, clear errors") {
    auto psk = [](const std::string& inner) {
        return "podCIDRs: [10.244.1.0/24]\npsk: {path: /etc/meshwire/psk" + inner + "}\n";
    };
    CHECK(ok(psk("")).psk_accept_paths.empty());
    auto c = ok(psk(", acceptPaths: [/etc/meshwire/psk.new]"));
    CHECK(c.psk_accept_paths == std::vector<std::string>{"/etc/meshwire/psk.new"});
    CHECK(ok(psk(", acceptPaths: [/a, /b]")).psk_accept_paths.size() == 2);
    CHECK(ok(psk(", acceptPaths: []")).psk_accept_paths.empty());
    CHECK_ERR(psk(", acceptPaths: [/a, /b, /c]"),
              "psk.acceptPaths: has 3 entries; at most 2 are supported");
    CHECK_ERR(psk(", acceptPaths: [rel/psk]"),
              "psk.acceptPaths[0]: \"rel/psk\" must be an absolute path");
    CHECK_ERR(psk(", acceptPaths: [/etc/meshwire/psk]"), "psk.acceptPaths[0]: is psk.path itself");
    CHECK_ERR(psk(", acceptPaths: [/a, /a]"), "psk.acceptPaths[1]: is listed twice");
    CHECK_ERR(psk(", acceptPaths: /a"), "psk.acceptPaths: must be a list of PSK files");
    // print_yaml writes it and reads back the same.
    auto again = ok(mw::meshd::print_yaml(c));
    CHECK(again.psk_accept_paths == c.psk_accept_paths);
}

TEST_CASE("meshd config: relayService session caps: defaults, range, per node within total") {
    auto d = ok(minimal());
    CHECK(d.relay_max_sessions == mw::meshd::relay_table_limits{}.max_sessions);
    CHECK(d.relay_max_sessions == 16384);
    CHECK(d.relay_max_sessions_per_node == 1024);
    auto c = ok(minimal("relayService: {maxSessions: 2000, maxSessionsPerNode: 50}\n"));
    CHECK(c.relay_max_sessions == 2000);
    CHECK(c.relay_max_sessions_per_node == 50);
    // Only the total set below the default per-node cap: the per-node cap follows it down.
    auto small = ok(minimal("relayService: {maxSessions: 100}\n"));
    CHECK(small.relay_max_sessions == 100);
    CHECK(small.relay_max_sessions_per_node == 100);
    CHECK(ok(minimal("relayService: {maxSessionsPerNode: 16384}\n")).relay_max_sessions_per_node ==
          16384);
    CHECK(ok(minimal("relayService: {maxSessions: 1048576}\n")).relay_max_sessions == 1048576);
    CHECK_ERR(
        minimal("relayService: {maxSessions: 0}\n"),
        "relayService.maxSessions: 0 is out of range (expected an integer from 1 to 1048576)");
    CHECK_ERR(minimal("relayService: {maxSessions: 1048577}\n"), "relayService.maxSessions:");
    CHECK_ERR(minimal("relayService: {maxSessions: many}\n"),
              "relayService.maxSessions: \"many\" is not an integer from 1 to 1048576");
    CHECK_ERR(minimal("relayService: {maxSessionsPerNode: -1}\n"),
              "relayService.maxSessionsPerNode: -1 is out of range");
    CHECK_ERR(minimal("relayService: {maxSessions: 10, maxSessionsPerNode: 11}\n"),
              "relayService.maxSessionsPerNode: 11 is more than relayService.maxSessions (10)");
    CHECK_ERR(minimal("relayService: {maxSession: 10}\n"), "relayService.maxSession");
    // print_yaml writes both and reads back the same; a change is restart-only (not live).
    auto again = ok(mw::meshd::print_yaml(c));
    CHECK(again.relay_max_sessions == 2000);
    CHECK(again.relay_max_sessions_per_node == 50);
}
