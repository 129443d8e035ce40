// nat_behaviour (issue 13): the NAT's mapping behaviour per family from the relays' reports.
#include <doctest/doctest.h>

#include <vector>

#include "meshd/core/nat_behaviour.hpp"

using namespace mw;
using namespace mw::meshd;

namespace {

wg_endpoint ep(const char* s) {
    return wg_endpoint::parse(s).value();
}
ip_address ip(const char* s) {
    return ip_address::parse(s).value();
}

const std::vector<wg_endpoint> own = {ep("192.168.1.10:51821"), ep("[2001:db8:1::10]:51821")};

}  // namespace

TEST_CASE("nat: no report on a family is unknown") {
    auto v = classify_nat({}, own, 51821);
    CHECK(v.ipv4.mapping == nat_mapping::unknown);
    CHECK(v.ipv6.mapping == nat_mapping::unknown);
    CHECK_FALSE(v.ipv4.reflexive);
    CHECK(v.ipv4.observers == 0);
}

TEST_CASE("nat: two relays see the same mapping: endpoint-independent; port kept or not") {
    std::vector<nat_observation> obs = {{ip("203.0.113.1"), ep("198.51.100.1:51821")},
                                        {ip("203.0.113.2"), ep("198.51.100.1:51821")}};
    auto v = classify_nat(obs, own, 51821);
    CHECK(v.ipv4.mapping == nat_mapping::endpoint_independent);
    CHECK(v.ipv4.reflexive == ep("198.51.100.1:51821"));
    CHECK(v.ipv4.observers == 2);
    CHECK(v.ipv4.port_preserved);
    CHECK(v.ipv6.mapping == nat_mapping::unknown);  // the other family is not judged by these
    obs[0].seen = obs[1].seen = ep("198.51.100.1:20001");
    v = classify_nat(obs, own, 51821);
    CHECK(v.ipv4.mapping == nat_mapping::endpoint_independent);
    CHECK_FALSE(v.ipv4.port_preserved);
}

TEST_CASE("nat: relays see different mappings: endpoint-dependent") {
    std::vector<nat_observation> obs = {{ip("203.0.113.1"), ep("198.51.100.2:20000")},
                                        {ip("203.0.113.2"), ep("198.51.100.2:20001")}};
    CHECK(classify_nat(obs, own, 51821).ipv4.mapping == nat_mapping::endpoint_dependent);
    // Another public address for another destination (a NAT with an address pool): dependent.
    obs[1].seen = ep("198.51.100.3:20000");
    CHECK(classify_nat(obs, own, 51821).ipv4.mapping == nat_mapping::endpoint_dependent);
}

TEST_CASE("nat: one relay address: behind a NAT, mapping not known; two reports of one address") {
    std::vector<nat_observation> obs = {{ip("2001:db8::1"), ep("[2001:db8:ff::1]:40000")}};
    auto v = classify_nat(obs, own, 51821);
    CHECK(v.ipv6.mapping == nat_mapping::single_observer);
    CHECK(v.ipv6.observers == 1);
    // The same relay address twice (a relay listed under two names) is one observer.
    obs.push_back({ip("2001:db8::1"), ep("[2001:db8:ff::1]:40000")});
    CHECK(classify_nat(obs, own, 51821).ipv6.mapping == nat_mapping::single_observer);
}

TEST_CASE("nat: a relay that sees our own endpoint means no NAT on that family") {
    std::vector<nat_observation> obs = {{ip("2001:db8::1"), ep("[2001:db8:1::10]:51821")},
                                        {ip("203.0.113.1"), ep("198.51.100.1:51821")}};
    auto v = classify_nat(obs, own, 51821);
    CHECK(v.ipv6.mapping == nat_mapping::none);
    CHECK(v.ipv6.reflexive == ep("[2001:db8:1::10]:51821"));
    CHECK(v.ipv4.mapping == nat_mapping::single_observer);
    // A dual-stack socket's v4-mapped forms are the IPv4 ones.
    std::vector<nat_observation> mapped = {
        {ip("::ffff:203.0.113.1"), ep("[::ffff:192.168.1.10]:51821")}};
    v = classify_nat(mapped, own, 51821);
    CHECK(v.ipv4.mapping == nat_mapping::none);
    CHECK(v.ipv6.mapping == nat_mapping::unknown);
}

TEST_CASE("nat: a report outdated by another relay's newer, differing one is left out") {
    // relay1 last confirmed 198.51.100.1:20000 at t=100; relay2 sees :20001 since t=150 (the
    // NAT rebooted in between): relay1's report predates the change, one observer is left.
    std::vector<nat_observation> obs = {{ip("203.0.113.1"), ep("198.51.100.1:20000"), 10, 100},
                                        {ip("203.0.113.2"), ep("198.51.100.1:20001"), 150, 160}};
    auto v = classify_nat(obs, own, 51821);
    CHECK(v.ipv4.mapping == nat_mapping::single_observer);
    CHECK(v.ipv4.reflexive == ep("198.51.100.1:20001"));
    // relay1 answers again with its old mapping after the change: both count, and they differ.
    obs[0].last_ms = 170;
    CHECK(classify_nat(obs, own, 51821).ipv4.mapping == nat_mapping::endpoint_dependent);
    // ... or with the new one: one mapping.
    obs[0].seen = ep("198.51.100.1:20001");
    obs[0].since_ms = 165;
    CHECK(classify_nat(obs, own, 51821).ipv4.mapping == nat_mapping::endpoint_independent);
    // Another family's newer report outdates nothing here.
    obs.push_back({ip("2001:db8::1"), ep("[2001:db8:ff::1]:40000"), 500, 500});
    CHECK(classify_nat(obs, own, 51821).ipv4.mapping == nat_mapping::endpoint_independent);
}

TEST_CASE("nat: mapping names") {
    CHECK(std::string(to_string(nat_mapping::endpoint_independent)) == "endpoint-independent");
    CHECK(std::string(to_string(nat_mapping::endpoint_dependent)) == "endpoint-dependent");
    CHECK(std::string(to_string(nat_mapping::single_observer)) == "single-observer");
    CHECK(std::string(to_string(nat_mapping::none)) == "none");
    CHECK(std::string(to_string(nat_mapping::unknown)) == "unknown");
}
