#include <doctest/doctest.h>

#include "cni-plugin/pod_wiring.hpp"

using namespace mw;
using namespace mw::cni;

namespace {
link_info veth(std::string name, std::string alias = {}, std::string kind = "veth") {
    link_info l;
    l.name = std::move(name);
    l.alias = std::move(alias);
    l.kind = std::move(kind);
    return l;
}
}  // namespace

TEST_CASE("a veth without alias under an attachment's name is that attachment's half-made one") {
    std::string name = host_veth_name("ctr1", "eth0");
    CHECK(is_half_created_veth(veth(name), name));
    CHECK_FALSE(is_half_created_veth(veth(name), host_veth_name("ctr2", "eth0")));
    // an alias (ours for any attachment, or anyone's) means it is complete or not ours
    CHECK_FALSE(is_half_created_veth(veth(name, host_veth_alias("n", "ctr1", "eth0")), name));
    CHECK_FALSE(is_half_created_veth(veth(name, "someone else's"), name));
    CHECK_FALSE(is_half_created_veth(veth(name, "", "dummy"), name));
}

TEST_CASE("GC recognises half-made veths only by our naming scheme") {
    CHECK(looks_half_created_veth(veth(host_veth_name("ctr1", "eth0"))));
    CHECK_FALSE(looks_half_created_veth(veth("mw0123456789ab", "meshwire/n/c/eth0")));
    CHECK_FALSE(looks_half_created_veth(veth("mw0123456789a")));    // too short
    CHECK_FALSE(looks_half_created_veth(veth("mw0123456789abc")));  // too long
    CHECK_FALSE(looks_half_created_veth(veth("mw0123456789aG")));   // not hex
    CHECK_FALSE(looks_half_created_veth(veth("xx0123456789ab")));
    CHECK_FALSE(looks_half_created_veth(veth("eth0")));
    CHECK_FALSE(looks_half_created_veth(veth(host_veth_name("c", "eth0"), "", "")));
}
