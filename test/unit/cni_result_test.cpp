#include <doctest/doctest.h>

#include "cni-plugin/cni_result.hpp"
#include "cni-plugin/cni_version.hpp"

using namespace mw;
using namespace mw::cni;
using nlohmann::json;

static cni_result cni_sample() {
    cni_result r;
    r.interfaces.push_back({"mw0123456789ab", "aa:bb:cc:dd:ee:01", "", 1420});
    r.interfaces.push_back({"eth0", "aa:bb:cc:dd:ee:02", "/var/run/netns/p", 1420});
    r.ips.push_back({*ip_prefix::parse("10.0.0.2/32"), *ip_address::parse("169.254.1.1"), 1});
    r.ips.push_back({*ip_prefix::parse("fd00::2/128"), *ip_address::parse("fe80::1"), 1});
    r.routes.push_back({*ip_prefix::parse("0.0.0.0/0"), *ip_address::parse("169.254.1.1")});
    r.routes.push_back({*ip_prefix::parse("::/0"), *ip_address::parse("fe80::1")});
    r.dns = json{{"nameservers", {"10.96.0.10"}}};
    return r;
}

TEST_CASE("result encoding follows each spec version") {
    for (auto v : k_supported_versions) {
        std::string ver(v);
        CAPTURE(ver);
        json j = encode_result(cni_sample(), ver);
        CHECK(j["cniVersion"] == ver);
        CHECK(j["interfaces"].size() == 2);
        CHECK(j["interfaces"][1]["sandbox"] == "/var/run/netns/p");
        CHECK(j["interfaces"][0].contains("sandbox") == false);
        CHECK(j["ips"][0]["address"] == "10.0.0.2/32");
        CHECK(j["ips"][0]["interface"] == 1);
        CHECK(j["ips"][1]["gateway"] == "fe80::1");
        CHECK(j["routes"][1]["dst"] == "::/0");
        CHECK(j["dns"]["nameservers"][0] == "10.96.0.10");
        bool pre1 = compare_versions(ver, "1.0.0") < 0;
        CHECK(j["ips"][0].contains("version") == pre1);
        if (pre1) {
            CHECK(j["ips"][0]["version"] == "4");
            CHECK(j["ips"][1]["version"] == "6");
        }
        CHECK(j["interfaces"][1].contains("mtu") == (ver == "1.1.0"));
    }
}

TEST_CASE("results round-trip and malformed results are rejected") {
    for (auto v : k_supported_versions) {
        auto back = decode_result(encode_result(cni_sample(), std::string(v)));
        REQUIRE(back);
        CHECK(back->ips.size() == 2);
        CHECK(back->ips[1].address.str() == "fd00::2/128");
        CHECK(back->interfaces[1].mac == "aa:bb:cc:dd:ee:02");
        CHECK(back->routes[0].gw->str() == "169.254.1.1");
    }
    CHECK_FALSE(decode_result(json::array()));
    CHECK_FALSE(decode_result(json::parse(R"({"ips":{}})")));
    CHECK_FALSE(decode_result(json::parse(R"({"ips":[{"address":5}]})")));
    CHECK_FALSE(decode_result(json::parse(R"({"ips":[{"address":"10.0.0.1/24","interface":3}]})")));
    CHECK_FALSE(decode_result(json::parse(R"({"ips":[{"address":"10.0.0.1/24","gateway":"x"}]})")));
    CHECK_FALSE(decode_result(json::parse(R"({"routes":[{"gw":"10.0.0.1"}]})")));
    CHECK_FALSE(decode_result(json::parse(R"({"interfaces":[{"mac":"x"}]})")));
    CHECK_FALSE(decode_result(json::parse(R"({"dns":[]})")));
    // host-local style result without interfaces
    auto hl = decode_result(json::parse(
        R"({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.5/24","gateway":"10.1.0.1"}],"dns":{}})"));
    REQUIRE(hl);
    CHECK(hl->ips[0].address.str() == "10.1.0.5/24");
    CHECK_FALSE(hl->ips[0].interface);
}

TEST_CASE("version comparison") {
    CHECK(compare_versions("0.3.1", "0.4.0") < 0);
    CHECK(compare_versions("1.1.0", "1.0.0") > 0);
    CHECK(compare_versions("1.0.0", "1.0.0") == 0);
    CHECK(compare_versions("0.10.0", "0.9.0") > 0);
    CHECK(is_supported_version("0.3.0"));
    CHECK_FALSE(is_supported_version("0.2.0"));
    CHECK_FALSE(is_supported_version("1.0"));
}
