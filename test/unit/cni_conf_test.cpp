#include <doctest/doctest.h>

#include "cni-plugin/cni_env.hpp"
#include "cni-plugin/net_conf.hpp"

using namespace mw;
using namespace mw::cni;

TEST_CASE("a full config parses") {
    auto r = parse_net_conf(R"({"cniVersion":"1.0.0","name":"mesh","type":"meshwire",
        "podCIDRs":["10.244.1.0/24","fd00:244:1::/64"],"mtu":1400,"dataDir":"/tmp/x",
        "dns":{"nameservers":["10.96.0.10"]}, "runtimeConfig": {"portMappings": []}})");
    REQUIRE(r.conf);
    CHECK(r.conf->name == "mesh");
    CHECK(r.conf->pod_cidrs.size() == 2);
    CHECK(r.conf->mtu == 1400);
    CHECK(r.conf->data_dir == "/tmp/x");
    CHECK(r.conf->dns["nameservers"][0] == "10.96.0.10");
    CHECK_FALSE(r.conf->ipam);
}

TEST_CASE("config errors carry the spec's codes and name the field") {
    struct tc {
        const char* json;
        int code;
        const char* needle;
    };
    tc cases[] = {
        {"", decode_failure, "no network configuration"},
        {"{\"cniVersion\":", decode_failure, "not valid JSON"},
        {"[1,2]", decode_failure, "JSON object"},
        {R"({"name":"x"})", incompatible_version, "cniVersion is missing"},
        {R"({"cniVersion":"0.2.0","name":"x"})", incompatible_version, "0.2.0"},
        {R"({"cniVersion":"9.9.9","name":"x"})", incompatible_version, "not supported"},
        {R"({"cniVersion":"1.0.0"})", invalid_config, "\"name\" is required"},
        {R"({"cniVersion":"1.0.0","name":"../etc"})", invalid_config, "name"},
        {R"({"cniVersion":"1.0.0","name":"n","podCIDRs":"10.0.0.0/24"})", invalid_config, "array"},
        {R"({"cniVersion":"1.0.0","name":"n","podCIDRs":[]})", invalid_config, "empty"},
        {R"({"cniVersion":"1.0.0","name":"n","podCIDRs":["10.0.0.0/33"]})", invalid_config,
         "podCIDRs[0]"},
        {R"({"cniVersion":"1.0.0","name":"n","podCIDRs":["10.0.0.1/24"]})", invalid_config,
         "host bits"},
        {R"({"cniVersion":"1.0.0","name":"n","podCIDRs":["10.0.0.0/31"]})", invalid_config,
         "too small"},
        {R"({"cniVersion":"1.0.0","name":"n","podCIDRs":["10.0.0.0/16","10.0.1.0/24"]})",
         invalid_config, "overlaps"},
        {R"({"cniVersion":"1.0.0","name":"n","mtu":"1400"})", invalid_config, "mtu"},
        {R"({"cniVersion":"1.0.0","name":"n","mtu":100})", invalid_config, "mtu"},
        {R"({"cniVersion":"1.0.0","name":"n","dataDir":"rel/dir"})", invalid_config, "absolute"},
        {R"({"cniVersion":"1.0.0","name":"n","ipam":{}})", 0, ""},
        {R"({"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"x"}})", invalid_config, "ipam.type"},
        {R"({"cniVersion":"1.0.0","name":"n","ipam":{"type":"../x"}})", invalid_config,
         "plugin name"},
        {R"({"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"},"podCIDRs":["10.0.0.0/24"]})",
         invalid_config, "not both"},
        {R"({"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"bogus"}]}})",
         invalid_config, "prevResult"},
        {R"({"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":1}]})",
         invalid_config, "valid-attachments"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.json);
        auto r = parse_net_conf(c.json);
        if (c.code == 0) {
            CHECK(r.conf);
            continue;
        }
        REQUIRE_FALSE(r.conf);
        CHECK(r.err.code == c.code);
        CHECK(r.err.msg.find(c.needle) != std::string::npos);
    }
}

TEST_CASE("peek_version tolerates garbage") {
    CHECK(peek_version(R"({"cniVersion":"0.4.0"})") == "0.4.0");
    CHECK_FALSE(peek_version("{"));
    CHECK_FALSE(peek_version(R"({"cniVersion":4})"));
}

TEST_CASE("CNI environment validation") {
    std::map<std::string, std::string> vars = {{"CNI_COMMAND", "ADD"},
                                               {"CNI_CONTAINERID", "abc-1.x_y"},
                                               {"CNI_NETNS", "/var/run/netns/x"},
                                               {"CNI_IFNAME", "eth0"},
                                               {"CNI_PATH", "/opt/cni/bin:/usr/lib/cni"},
                                               {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p"}};
    auto lookup = [&](const char* k) -> std::optional<std::string> {
        auto it = vars.find(k);
        if (it == vars.end()) return std::nullopt;
        return it->second;
    };
    auto ok = parse_env(lookup);
    REQUIRE(ok.env);
    CHECK(ok.env->path.size() == 2);
    CHECK(ok.env->args["K8S_POD_NAME"] == "p");

    auto expect_fail = [&](const char* key, std::optional<std::string> value, const char* needle) {
        auto saved = vars;
        if (value)
            vars[key] = *value;
        else
            vars.erase(key);
        auto r = parse_env(lookup);
        CAPTURE(key);
        CHECK_FALSE(r.env);
        CHECK(r.err.code == invalid_env);
        CHECK(r.err.msg.find(needle) != std::string::npos);
        vars = saved;
    };
    expect_fail("CNI_COMMAND", std::nullopt, "CNI_COMMAND");
    expect_fail("CNI_COMMAND", "FROB", "unknown CNI_COMMAND");
    expect_fail("CNI_CONTAINERID", std::nullopt, "CNI_CONTAINERID");
    expect_fail("CNI_CONTAINERID", "-bad", "invalid");
    expect_fail("CNI_CONTAINERID", "a/b", "invalid");
    expect_fail("CNI_IFNAME", "this-name-is-too-long", "CNI_IFNAME");
    expect_fail("CNI_IFNAME", "a b", "CNI_IFNAME");
    expect_fail("CNI_IFNAME", "..", "CNI_IFNAME");
    expect_fail("CNI_NETNS", std::nullopt, "CNI_NETNS");
    expect_fail("CNI_PATH", std::nullopt, "CNI_PATH");
    expect_fail("CNI_ARGS", "novalue", "CNI_ARGS");

    vars = {{"CNI_COMMAND", "DEL"},
            {"CNI_CONTAINERID", "c"},
            {"CNI_IFNAME", "eth0"},
            {"CNI_PATH", "/x"}};
    CHECK(parse_env(lookup).env);  // DEL without CNI_NETNS is fine
    vars = {{"CNI_COMMAND", "VERSION"}};
    CHECK(parse_env(lookup).env);
}
