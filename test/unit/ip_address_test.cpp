#include <doctest/doctest.h>

#include "common/ip_address.hpp"

using namespace mw;

TEST_CASE("ip_address parses and prints v4 and v6") {
    CHECK(ip_address::parse("10.1.2.3")->str() == "10.1.2.3");
    CHECK(ip_address::parse("fd00:0:0::1")->str() == "fd00::1");
    CHECK(ip_address::parse("10.1.2.3")->is_v4());
    CHECK(ip_address::parse("::")->is_v6());
    CHECK_FALSE(ip_address::parse(""));
    CHECK_FALSE(ip_address::parse("10.1.2"));
    CHECK_FALSE(ip_address::parse("10.1.2.256"));
    CHECK_FALSE(ip_address::parse("fd00:::1"));
    CHECK_FALSE(ip_address::parse(std::string(200, '1')));
}

TEST_CASE("ip_prefix parsing rejects bad lengths and keeps host bits") {
    auto p = ip_prefix::parse("10.0.0.5/24");
    REQUIRE(p);
    CHECK(p->str() == "10.0.0.5/24");
    CHECK(p->network().str() == "10.0.0.0/24");
    CHECK(p->last().str() == "10.0.0.255");
    CHECK_FALSE(ip_prefix::parse("10.0.0.0/33"));
    CHECK_FALSE(ip_prefix::parse("10.0.0.0/"));
    CHECK_FALSE(ip_prefix::parse("10.0.0.0/-1"));
    CHECK_FALSE(ip_prefix::parse("10.0.0.0/2x"));
    CHECK_FALSE(ip_prefix::parse("10.0.0.0"));
    CHECK(ip_prefix::parse("10.0.0.1", true)->length() == 32);
    CHECK(ip_prefix::parse("fd00::/129").ok() == false);
    CHECK(ip_prefix::parse("fd00::/0")->size() == (u128(1) << 127));
}

TEST_CASE("ip_prefix contains and arithmetic") {
    auto p = *ip_prefix::parse("fd00:1::/64");
    CHECK(p.contains(*ip_address::parse("fd00:1::ffff")));
    CHECK_FALSE(p.contains(*ip_address::parse("fd00:2::1")));
    CHECK_FALSE(p.contains(*ip_address::parse("10.0.0.1")));
    auto a = *ip_address::parse("10.0.0.255");
    CHECK(ip_address::from_u128(AF_INET, a.to_u128() + 1).str() == "10.0.1.0");
    CHECK(ip_prefix::parse("0.0.0.0/0")->contains(a));
}

TEST_CASE("ip_address::is_private: private-use, shared, local ranges; public ones are not") {
    auto priv = [](const char* s) { return mw::ip_address::parse(s).value().is_private(); };
    for (const char* s : {"10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.11.10", "100.64.0.1",
                          "100.127.255.254", "127.0.0.1", "169.254.1.1", "0.0.0.0", "fd01::10",
                          "fc00::1", "fe80::1", "::1", "::", "::ffff:192.168.1.1"}) {
        CAPTURE(s);
        CHECK(priv(s));
    }
    for (const char* s :
         {"203.0.113.11", "172.32.0.1", "172.15.255.255", "100.128.0.1", "100.63.255.255",
          "8.8.8.8", "2001:db8::11", "2a00::1", "::ffff:203.0.113.5", "::2"}) {
        CAPTURE(s);
        CHECK_FALSE(priv(s));
    }
}
