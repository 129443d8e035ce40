// The Kubernetes side of meshd (issue 11 §3): how the way in is resolved (kube_access: URLs,
// kubeconfigs and their errors, in-cluster), the JSON it reads (kube_json), and what a node set
// means for the core (kube_discovery).
#include <doctest/doctest.h>

#include <sodium.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "meshd/kube_access.hpp"
#include "meshd/kube_discovery.hpp"
#include "meshd/kube_json.hpp"

using namespace mw;
using namespace mw::meshd;

namespace {

// A self-signed test certificate with its key, and an unrelated key (fixed: only parsed here).
const char* const k_cert = R"(-----BEGIN CERTIFICATE-----
MIIBgDCCASWgAwIBAgIUeog5MPeyFL9ty0qI8EzmdQLuvCYwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJdW5pdC10ZXN0MCAXDTI2MTIwNjAzMjE1M1oYDzIxMjYxMTEy
MDMyMTUzWjAUMRIwEAYDVQQDDAl1bml0LXRlc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAT6Rt6Mnqv6Ihr8tvA5oTx0d9k+kqxaWVjsot5u3ApUGv8LsJm+lXun
ftQvyixlBgkPEeEbrsa0lT8DYHp8fyNGo1MwUTAdBgNVHQ4EFgQU+WRTyY3gCRRx
CqveoX7Vf5g4sWswHwYDVR0jBBgwFoAU+WRTyY3gCRRxCqveoX7Vf5g4sWswDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAoEFmdJgceiVwPDTcQt7x
/lFv2Bo34AtFdDp0zSICTz4CIQDbqDFmEZezxli88d2Yy5p3aOvHW09vLqGBWrYp
/e9g/A==
-----END CERTIFICATE-----
)";
const char* const k_key = R"(-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7WXtlP0tS1qh2e07
SXRnQ9wvn1oZ9ekDfeu8ENRQJ56hRANCAAT6Rt6Mnqv6Ihr8tvA5oTx0d9k+kqxa
WVjsot5u3ApUGv8LsJm+lXunftQvyixlBgkPEeEbrsa0lT8DYHp8fyNG
-----END PRIVATE KEY-----
)";
const char* const k_other_key = R"(-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgNEppXCTm45zlMHwJ
yBTMRvKYxnHR/dxGUfgPfsIHW2+hRANCAASTbMbDLrTzECwqoDGfF4Hx7uwQur06
pEYcuRfmv5fdS9huVzOVfMofGJsy0DFoNVVJQO4MyKO9M1SCx/c0i4M0
-----END PRIVATE KEY-----
)";

std::string b64(const std::string& s) {
    std::string out(sodium_base64_encoded_len(s.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
    sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(s.data()),
                      s.size(), sodium_base64_VARIANT_ORIGINAL);
    out.resize(out.size() - 1);  // the terminating NUL
    return out;
}

struct temp_dir {
    std::string path;
    temp_dir() {
        char t[] = "/tmp/meshd-kube-test-XXXXXX";
        REQUIRE(::mkdtemp(t));
        path = t;
    }
    ~temp_dir() { std::system(("rm -rf '" + path + "'").c_str()); }
    std::string write(const std::string& name, const std::string& text) const {
        std::ofstream(path + "/" + name) << text;
        return path + "/" + name;
    }
};

std::string kubeconfig(const std::string& cluster, const std::string& user) {
    return "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
           "contexts:\n- name: c\n  context: {cluster: k, user: u}\n"
           "clusters:\n- name: k\n  cluster:\n" +
           cluster + "users:\n- name: u\n  user:\n" + user;
}

}  // namespace

TEST_CASE("kube access: URLs (https, explicit http to loopback only, ports, IPv6)") {
    kube_access a;
    REQUIRE(parse_kube_url("https://10.0.0.1:6443", "f", a));
    CHECK(a.tls);
    CHECK(a.host == "10.0.0.1");
    CHECK(a.port == 6443);
    REQUIRE(parse_kube_url("https://[fd00::1]/", "f", a));
    CHECK(a.host == "fd00::1");
    CHECK(a.port == 443);
    CHECK(a.url() == "https://[fd00::1]:443");
    REQUIRE(parse_kube_url("http://127.0.0.1:10550", "f", a));
    CHECK_FALSE(a.tls);
    CHECK(parse_kube_url("http://localhost:10550", "f", a));
    auto e = parse_kube_url("http://10.0.0.1:10550", "kubernetes.metaServer", a);
    REQUIRE_FALSE(e);
    CHECK(e.err().message.find("kubernetes.metaServer") == 0);
    CHECK(e.err().message.find("loopback") != std::string::npos);
    CHECK_FALSE(parse_kube_url("ftp://x", "f", a));
    CHECK_FALSE(parse_kube_url("https://x:0", "f", a));
    CHECK_FALSE(parse_kube_url("https://x:70000", "f", a));
    CHECK_FALSE(parse_kube_url("https://x/k8s/clusters/c-1", "f", a));
    CHECK_FALSE(parse_kube_url("https://", "f", a));
}

TEST_CASE("kube access: a valid kubeconfig (CA data, client certificate files, token)") {
    temp_dir d;
    d.write("c.crt", k_cert);
    d.write("c.key", k_key);
    auto text = kubeconfig(
        "    server: https://192.0.2.10:6443\n"
        "    certificate-authority-data: " +
            b64(k_cert) + "\n",
        "    client-certificate: c.crt\n    client-key: c.key\n"
        "    token: abc\n");
    auto a = parse_kubeconfig(text, d.path, "kc");
    REQUIRE_MESSAGE(a, a.err().message);
    CHECK(a->host == "192.0.2.10");
    CHECK(a->port == 6443);
    CHECK(a->ca_pem == k_cert);
    CHECK(a->cert_pem == k_cert);  // relative paths: relative to the kubeconfig's directory
    CHECK(a->key_pem == k_key);
    CHECK(a->token == "abc");
}

TEST_CASE("kube access: kubeconfig errors name the field") {
    temp_dir d;
    d.write("c.crt", k_cert);
    d.write("c.key", k_key);
    d.write("other.key", k_other_key);
    d.write("garbage.crt", "not a certificate\n");
    const std::string srv = "    server: https://192.0.2.10:6443\n";
    struct bad {
        std::string text;
        const char* field;  // must appear in the message
        const char* why;
    };
    for (const auto& [text, field, why] : {
             bad{kubeconfig(srv + "    certificate-authority: /nonexistent/ca.crt\n", ""),
                 "clusters[0].cluster.certificate-authority", "No such file"},
             bad{kubeconfig(srv + "    certificate-authority: garbage.crt\n", ""),
                 "clusters[0].cluster.certificate-authority", "not a PEM certificate"},
             bad{kubeconfig(srv + "    certificate-authority-data: '%%%'\n", ""),
                 "clusters[0].cluster.certificate-authority-data", "not base64"},
             bad{kubeconfig(srv, "    client-certificate: missing.crt\n    client-key: c.key\n"),
                 "users[0].user.client-certificate", "No such file"},
             bad{kubeconfig(srv, "    client-certificate: c.crt\n    client-key: other.key\n"),
                 "users[0].user.client-key", "does not belong"},
             bad{kubeconfig(srv, "    client-certificate: garbage.crt\n    client-key: c.key\n"),
                 "users[0].user.client-certificate", "not a PEM certificate"},
             bad{kubeconfig(srv, "    client-certificate: c.crt\n"), "users[0].user",
                 "without client-key"},
             bad{kubeconfig(srv, "    tokenFile: /nonexistent/token\n"), "users[0].user.tokenFile",
                 "No such file"},
             bad{kubeconfig(srv, "    exec: {command: aws}\n"), "users[0].user.exec",
                 "not supported"},
             bad{kubeconfig(srv + "    insecure-skip-tls-verify: true\n", ""),
                 "insecure-skip-tls-verify", "not supported"},
             bad{kubeconfig("    server: http://192.0.2.10:8080\n", ""),
                 "clusters[0].cluster.server", "loopback"},
             bad{kubeconfig("    foo: bar\n", ""), "clusters[0].cluster.server", "not set"},
             bad{"apiVersion: v1\nkind: Config\n", "current-context", "not set"},
             bad{"apiVersion: v1\ncurrent-context: nope\ncontexts: []\n", "current-context",
                 "no context named"},
             bad{"[unclosed", "kc", "not YAML"},
         }) {
        // CAPTURE takes a reference in a lambda: not of the structured binding itself, which
        // clang 14 (the sanitizer build) refuses.
        const auto& kubeconfig_text = text;
        CAPTURE(kubeconfig_text);
        auto a = parse_kubeconfig(text, d.path, "kc");
        REQUIRE_FALSE(a);
        CAPTURE(a.err().message);
        CHECK(a.err().message.find(field) != std::string::npos);
        CHECK(a.err().message.find(why) != std::string::npos);
        CHECK(a.err().message.find("kc") == 0);
    }
}

TEST_CASE("kube access: resolve (explicit endpoint, kubeconfig file, in-cluster, precedence)") {
    temp_dir d;
    const auto ca = d.write("ca.crt", k_cert);
    const auto tok = d.write("token", "t1\n");
    kube_environment none;
    none.service_account_dir = d.path + "/nosa";

    kube_settings s;
    s.api_server = "https://192.0.2.1:6443";
    s.ca_file = ca;
    s.token_file = tok;
    auto a = resolve_kube_access(s, none);
    REQUIRE_MESSAGE(a, a.err().message);
    CHECK(a->ca_pem == k_cert);
    CHECK(a->token_file == tok);

    s.ca_file = d.path + "/missing.crt";
    a = resolve_kube_access(s, none);
    REQUIRE_FALSE(a);
    CHECK(a.err().message.find("kubernetes.caFile") == 0);

    // Credentials never go over plain http.
    s = {};
    s.meta_server = "http://127.0.0.1:10550";
    CHECK(resolve_kube_access(s, none));
    s.token_file = tok;
    CHECK_FALSE(resolve_kube_access(s, none));

    // A kubeconfig file: its errors carry the setting and the path.
    s = {};
    s.kube_config = d.path + "/missing.kubeconfig";
    a = resolve_kube_access(s, none);
    REQUIRE_FALSE(a);
    CHECK(a.err().message.find("kubernetes.kubeConfig") == 0);

    // In-cluster: the service env and the service account's CA and token.
    s = {};
    a = resolve_kube_access(s, none);
    REQUIRE_FALSE(a);
    CHECK(a.err().message.find("KUBERNETES_SERVICE_HOST") != std::string::npos);
    kube_environment pod;
    pod.service_host = "fd00:96::1";
    pod.service_port = "443";
    pod.service_account_dir = d.path + "/sa";
    REQUIRE(::mkdir(pod.service_account_dir.c_str(), 0700) == 0);
    a = resolve_kube_access(s, pod);
    REQUIRE_FALSE(a);  // no CA yet
    CHECK(a.err().message.find("service account CA") != std::string::npos);
    d.write("sa/ca.crt", k_cert);
    d.write("sa/token", "sa-token");
    a = resolve_kube_access(s, pod);
    REQUIRE_MESSAGE(a, a.err().message);
    CHECK(a->host == "fd00:96::1");
    CHECK(a->tls);
    CHECK(a->token_file == pod.service_account_dir + "/token");
}

TEST_CASE("kube json: Node, NodeList, watch events, Status, patch") {
    auto n = parse_kube_node(R"({"kind":"Node","apiVersion":"v1",
        "metadata":{"name":"n1","resourceVersion":"42","annotations":{
            "meshwire.io/node-id":"ab","other.io/x":"y"}},
        "spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24","fd00:244:1::/64","bad",
                "10.1.2.3/8"]},
        "status":{"addresses":[{"type":"InternalIP","address":"192.0.2.1"},
            {"type":"Hostname","address":"n1"},{"type":"ExternalIP","address":"2001:db8::1"}]}})");
    REQUIRE(n);
    CHECK(n->name == "n1");
    CHECK(n->resource_version == "42");
    CHECK(n->pod_cidrs.size() == 2);
    CHECK(n->bad_pod_cidrs == std::vector<std::string>{"bad", "10.1.2.3/8"});
    CHECK(n->internal_ips.size() == 1);
    CHECK(n->external_ips.size() == 1);
    CHECK(n->annotations.size() == 1);  // only meshwire.io/ ones are kept

    // podCIDR alone (clusters before dual-stack).
    n = parse_kube_node(R"({"metadata":{"name":"n2"},"spec":{"podCIDR":"10.244.2.0/24"}})");
    REQUIRE(n);
    CHECK(n->pod_cidrs.size() == 1);
    CHECK_FALSE(parse_kube_node(R"({"metadata":{}})"));
    CHECK_FALSE(parse_kube_node("[1,2"));

    auto l = parse_kube_node_list(
        R"({"kind":"NodeList","metadata":{"resourceVersion":"7"},"items":[{"metadata":{"name":"a"}}]})");
    REQUIRE(l);
    CHECK(l->resource_version == "7");
    CHECK(l->items.size() == 1);
    CHECK(parse_kube_node_list(R"({"metadata":{"resourceVersion":"7"},"items":null})"));
    CHECK_FALSE(parse_kube_node_list(R"({"metadata":{}})"));

    // Events without kind (KubeEdge's edge endpoint) are Nodes.
    auto e = parse_kube_watch_event(
        R"({"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"9"}}})");
    REQUIRE(e);
    CHECK(e->type == kube_event_type::added);
    CHECK(e->node.name == "a");
    e = parse_kube_watch_event(
        R"({"type":"BOOKMARK","object":{"kind":"Node","metadata":{"resourceVersion":"12"}}})");
    REQUIRE(e);
    CHECK(e->type == kube_event_type::bookmark);
    CHECK(e->node.resource_version == "12");
    e = parse_kube_watch_event(
        R"({"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old"}})");
    REQUIRE(e);
    CHECK(e->type == kube_event_type::error);
    CHECK(e->status_code == 410);
    CHECK_FALSE(parse_kube_watch_event(
        R"({"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"p"}}})"));
    CHECK_FALSE(parse_kube_watch_event(R"({"type":"WHAT","object":{}})"));
    CHECK_FALSE(parse_kube_watch_event(R"({"type":"BOOKMARK","object":{"metadata":{}}})"));

    auto st = parse_kube_status(R"({"kind":"Status","code":403,"message":"forbidden"})");
    REQUIRE(st);
    CHECK(st->first == 403);
    CHECK(annotation_patch({{"meshwire.io/node-id", "ab"}}) ==
          R"({"metadata":{"annotations":{"meshwire.io/node-id":"ab"}}})");
}

TEST_CASE("kube discovery: annotated Nodes become offers; ours and unannotated ones do not") {
    const std::string hex_a(64, 'a'), hex_b(64, 'b'), hex_self(64, 'c');
    auto self = *node_id::from_hex(hex_self);
    kube_node_map m;
    auto node = [&](const std::string& name, std::map<std::string, std::string> ann,
                    std::vector<const char*> internal, std::vector<const char*> external) {
        kube_node n;
        n.name = name;
        n.annotations = std::move(ann);
        for (auto* a : internal) n.internal_ips.push_back(*ip_address::parse(a));
        for (auto* a : external) n.external_ips.push_back(*ip_address::parse(a));
        m[name] = n;
    };
    node("self", {{k_annotation_node_id, hex_self}}, {"192.0.2.9"}, {});
    node("a", {{k_annotation_node_id, hex_a}}, {"192.0.2.1"}, {"198.51.100.1", "192.0.2.1"});
    node("b", {{k_annotation_node_id, hex_b}, {k_annotation_control_port, "6000"}}, {"192.0.2.2"},
         {});
    node("plain", {}, {"192.0.2.3"}, {});
    node("broken", {{k_annotation_node_id, "xyz"}}, {"192.0.2.4"}, {});
    node("badport",
         {{k_annotation_node_id, std::string(64, 'd')}, {k_annotation_control_port, "0"}},
         {"192.0.2.5"}, {});
    auto v = read_kube_nodes(m, "self", self, 51821);
    REQUIRE(v.self);
    CHECK(v.self->name == "self");
    REQUIRE(v.offers.size() == 2);
    CHECK(v.offers[0].name == "a");
    CHECK(v.offers[0].endpoints.size() == 2);  // InternalIP first, the duplicate once
    CHECK(v.offers[0].endpoints[0].str() == "192.0.2.1:51821");
    CHECK(v.offers[1].endpoints[0].port == 6000);
    CHECK(v.listed.size() == 4);  // self, a, b, badport (listed, but not offered)
    CHECK(v.bad.size() == 2);
}

TEST_CASE("kube discovery: each annotated node ID but ours with its Node's podCIDRs") {
    const std::string hex_a(64, 'a'), hex_b(64, 'b'), hex_self(64, 'c');
    auto self = *node_id::from_hex(hex_self);
    kube_node_map m;
    auto node = [&](const std::string& name, const std::string& id,
                    std::vector<const char*> cidrs) {
        kube_node n;
        n.name = name;
        if (!id.empty()) n.annotations[k_annotation_node_id] = id;
        for (auto* c : cidrs) n.pod_cidrs.push_back(*ip_prefix::parse(c));
        n.internal_ips.push_back(*ip_address::parse("192.0.2.1"));
        m[name] = n;
    };
    node("self", hex_self, {"10.244.0.0/24"});
    node("a", hex_a, {"10.244.1.0/24", "fd00:244:1::/64"});
    node("b2", hex_b, {"10.244.12.0/24"});  // two Nodes carry one ID: ambiguous, no block
    node("b", hex_b, {});                   // no podCIDRs allocated yet: listed, no blocks
    node("plain", "", {"10.244.3.0/24"});   // no meshd: not an authority for anyone
    auto v = read_kube_nodes(m, "self", self, 51821);
    REQUIRE(v.pod_cidrs.size() == 2);
    const auto& a = v.pod_cidrs.at(*node_id::from_hex(hex_a));
    REQUIRE(a.size() == 2);
    CHECK(a[0].str() == "10.244.1.0/24");
    CHECK(a[1].str() == "fd00:244:1::/64");
    // b's ID is on Nodes b (no podCIDRs yet) and b2: ambiguous, whichever came first.
    CHECK(v.pod_cidrs.at(*node_id::from_hex(hex_b)).empty());
    REQUIRE(v.bad.size() == 1);
    CHECK(v.bad[0] ==
          "b2: meshwire.io/node-id is also on Node b; no pod CIDRs are routed to that "
          "node ID");
    CHECK(v.pod_cidrs.count(self) == 0);
    // The same with the podCIDRs on the first Node: still none.
    m["b"].pod_cidrs = {*ip_prefix::parse("10.244.2.0/24")};
    CHECK(read_kube_nodes(m, "self", self, 51821).pod_cidrs.at(*node_id::from_hex(hex_b)).empty());
}
