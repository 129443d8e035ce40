// Live config (meshd/config_watcher.hpp): which edits apply live and which need a restart, derived
// from print_yaml so that no field's change goes unreported; and the file watch itself.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "meshd/config_watcher.hpp"

using namespace mw::meshd;

namespace {

config_environment watch_env() {
    config_environment e;
    e.hostname = "host-a";
    return e;
}

const std::string base =
    "nodeName: a\npodCIDRs: [10.244.1.0/24]\npsk: {path: /etc/meshwire/psk}\n"
    "relayNodes: [{nodeName: r1, advertiseAddress: [192.0.2.1]}]\n";

meshd_config parse(const std::string& yaml) {
    auto r = parse_meshd_config(yaml, watch_env());
    if (!r) FAIL_CHECK("config does not parse: ", r.err().message, "\n", yaml);
    REQUIRE(r.ok());
    return *r;
}

config_change change_of(const std::string& extra) {
    return compare_configs(parse(base), parse(base + extra));
}

}  // namespace

TEST_CASE("config watcher: the same configuration is no change") {
    CHECK(compare_configs(parse(base), parse(base)).empty());
    // Defaults written out are the same configuration.
    CHECK(change_of("interface: meshwire0\nlogLevel: info\nmdns: {enable: true}\n").empty());
}

TEST_CASE("config watcher: every restart-only field is named, including mdns, dht, kubernetes") {
    struct edit {
        const char* yaml;
        const char* field;
    };
    // One edit per leaf print_yaml writes (besides the live ones).
    for (auto [yaml, field] : {
             edit{"nodeName: b\n", "nodeName"},
             edit{"podCIDRs: [10.244.2.0/24]\n", "podCIDRs"},
             edit{"interface: mw1\n", "interface"},
             edit{"wireguard: {backend: userspace}\n", "wireguard.backend"},
             edit{"wireguard: {listenPort: 51900}\n", "wireguard.listenPort"},
             edit{"listenPort: 51999\n", "listenPort"},
             edit{"relayService: {maxSessions: 100}\n", "relayService.maxSessions"},
             edit{"relayService: {maxSessionsPerNode: 10}\n", "relayService.maxSessionsPerNode"},
             edit{"stateDir: /var/lib/other\n", "stateDir"},
             edit{"socket: /run/other.sock\n", "socket"},
             edit{"mtu: 1380\n", "mtu"},
             edit{"mdns: {enable: false}\n", "mdns.enable"},
             edit{"mdns: {interfaces: [eth0]}\n", "mdns.interfaces"},
             edit{"mdns: {linkLocal: true}\n", "mdns.linkLocal"},
             edit{"dht: {enable: false}\n", "dht.enable"},
             edit{"kubernetes: {enable: true}\n", "kubernetes.enable"},
             edit{"kubernetes: {apiServer: \"https://10.0.0.1:6443\"}\n", "kubernetes.apiServer"},
             edit{"kubernetes: {kubeConfig: /etc/kube.conf}\n", "kubernetes.kubeConfig"},
             edit{"kubernetes: {metaServer: \"http://127.0.0.1:10550\"}\n",
                  "kubernetes.metaServer"},
             edit{"kubernetes: {caFile: /etc/ca.crt}\n", "kubernetes.caFile"},
             edit{"kubernetes: {tokenFile: /etc/token}\n", "kubernetes.tokenFile"},
             edit{"kubernetes: {requireNode: true}\n", "kubernetes.requireNode"},
             edit{"kubernetes: {routeAuthority: config}\n", "kubernetes.routeAuthority"},
             edit{"metrics: {listen: \"127.0.0.1:9100\"}\n", "metrics.listen"},
         }) {
        // CAPTURE takes a reference in a lambda: not of the structured binding itself, which
        // clang 14 (the sanitizer build) refuses.
        const auto& edit_yaml = yaml;
        CAPTURE(edit_yaml);
        // A key the base has already is replaced (the parser refuses duplicate keys).
        std::string b = base, n;
        auto key = std::string(yaml).substr(0, std::string(yaml).find(':'));
        if (b.find(key + ":") == 0 || b.find("\n" + key + ":") != std::string::npos) {
            size_t at = b.find(key + ":") == 0 ? 0 : b.find("\n" + key + ":") + 1;
            size_t end = b.find('\n', at);
            n = b.substr(0, at) + yaml + b.substr(end + 1);
        } else {
            n = b + yaml;
        }
        auto ch = compare_configs(parse(b), parse(n));
        CHECK_FALSE(ch.relay_nodes);
        CHECK_FALSE(ch.dht_bootstrap);
        CHECK_FALSE(ch.log_level);
        REQUIRE(ch.restart_only.size() >= 1);
        CHECK(ch.restart_only[0] == field);
    }
    // The cluster keys are live (a key roll, issue 14 §2): psk.path and psk.acceptPaths.
    for (const char* yaml :
         {"psk: {path: /etc/meshwire/other}\n",
          "psk: {path: /etc/meshwire/psk, acceptPaths: [/etc/meshwire/new]}\n"}) {
        CAPTURE(yaml);
        std::string b = base;
        size_t at = b.find("psk:");
        auto ch = compare_configs(parse(b),
                                  parse(b.substr(0, at) + yaml + b.substr(b.find('\n', at) + 1)));
        CHECK(ch.psk);
        CHECK(ch.restart_only.empty());
    }
    // runDir moves the default socket with it: both are named.
    auto ch = change_of("runDir: /run/other\n");
    CHECK(ch.restart_only == std::vector<std::string>{"runDir", "socket"});
}

TEST_CASE(
    "config watcher: relayNodes, dht.bootstrap, logLevel, revokedNodes are live, nothing else") {
    auto ch = compare_configs(
        parse(base),
        parse("nodeName: a\npodCIDRs: [10.244.1.0/24]\n"
              "psk: {path: /etc/meshwire/psk}\n"
              "relayNodes: []\n"
              "dht: {bootstrap: [198.51.100.7]}\n"
              "logLevel: debug\n"
              "revokedNodes: "
              "['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa']\n"));
    CHECK(ch.revoked_nodes);
    CHECK(ch.relay_nodes);
    CHECK(ch.dht_bootstrap);
    CHECK(ch.log_level);
    CHECK(ch.restart_only.empty());
    // Live and restart-only edits together are told apart.
    ch = change_of("logLevel: warn\nmdns: {enable: false}\n");
    CHECK(ch.log_level);
    CHECK(ch.restart_only == std::vector<std::string>{"mdns.enable"});
}

TEST_CASE("config watcher: reports a file's new configuration once per change") {
    char dir[] = "/tmp/meshd-config-watcher-XXXXXX";
    REQUIRE(::mkdtemp(dir));
    std::string path = std::string(dir) + "/meshd.yaml";
    auto write = [&](const std::string& text) {
        std::ofstream out(path, std::ios::trunc);
        out << text;
    };
    write(base);
    config_watcher w(path);
    w.prime();
    CHECK_FALSE(w.poll());  // unchanged since start

    write(base + "logLevel: debug\n");
    auto next = w.poll();
    REQUIRE(next);
    CHECK(next->log_level == "debug");
    CHECK_FALSE(w.poll());  // reported once

    write(base + "logLevel: loud\n");  // refused (logged), the running configuration stays
    CHECK_FALSE(w.poll());
    CHECK_FALSE(w.poll());

    ::unlink(path.c_str());  // mid-swap of a ConfigMap's symlinks: nothing, no error
    CHECK_FALSE(w.poll());
    write(base);
    next = w.poll();
    REQUIRE(next);
    CHECK(next->log_level == "info");
    ::unlink(path.c_str());
    ::rmdir(dir);
}

// kubelet updates a mounted ConfigMap atomically: the files live in a timestamped directory
// (..2026_01_01_00_00_00.1), ..data is a symlink to it, and meshd.yaml is a symlink to
// ..data/meshd.yaml. An update writes a new timestamped directory, creates a new symlink
// ..data_tmp to it and rename()s it over ..data, then removes the old directory. This is that
// sequence, step by step, against the watcher meshd runs (it reads the path every poll).
TEST_CASE("config watcher: follows kubelet's ConfigMap update (..data symlink swap)") {
    char dir[] = "/tmp/meshd-configmap-XXXXXX";
    REQUIRE(::mkdtemp(dir));
    const std::string d = dir;
    auto write_version = [&](const std::string& ts, const std::string& text) {
        const std::string vd = d + "/" + ts;
        REQUIRE(::mkdir(vd.c_str(), 0755) == 0);
        std::ofstream out(vd + "/meshd.yaml", std::ios::trunc);
        out << text;
    };
    const std::string v1 = "..2026_01_01_00_00_00.1", v2 = "..2026_01_01_00_01_00.2";
    write_version(v1, base);
    REQUIRE(::symlink(v1.c_str(), (d + "/..data").c_str()) == 0);
    REQUIRE(::symlink("..data/meshd.yaml", (d + "/meshd.yaml").c_str()) == 0);

    config_watcher w(d + "/meshd.yaml");
    w.prime();
    CHECK_FALSE(w.poll());

    // relayNodes edited in the ConfigMap: a second relay.
    std::string edited = base;
    edited.replace(edited.find("relayNodes:"), std::string::npos,
                   "relayNodes: [{nodeName: r1, advertiseAddress: [192.0.2.1]}, "
                   "{nodeName: r2, advertiseAddress: [192.0.2.2]}]\n");
    write_version(v2, edited);
    CHECK_FALSE(w.poll());  // written, not yet swapped: the old version is still what is mounted
    REQUIRE(::symlink(v2.c_str(), (d + "/..data_tmp").c_str()) == 0);
    REQUIRE(::rename((d + "/..data_tmp").c_str(), (d + "/..data").c_str()) == 0);
    auto next = w.poll();
    REQUIRE(next);
    REQUIRE(next->relay_nodes.size() == 2);
    CHECK(next->relay_nodes[1].node_name == "r2");
    CHECK(compare_configs(parse(base), *next).relay_nodes);  // applied live by the daemon
    // The old version removed afterwards: nothing changes, nothing is reported.
    ::unlink((d + "/" + v1 + "/meshd.yaml").c_str());
    ::rmdir((d + "/" + v1).c_str());
    CHECK_FALSE(w.poll());

    for (const char* f : {"/meshd.yaml", "/..data"}) ::unlink((d + f).c_str());
    ::unlink((d + "/" + v2 + "/meshd.yaml").c_str());
    ::rmdir((d + "/" + v2).c_str());
    ::rmdir(dir);
}
