// Which endpoints a record, an offer or a request can make a node send to (endpoint_filter), the
// per-destination send budget (send_budget), and both inside node_core: a fake record listing a
// victim's port range or loopback makes the node send nothing there; many records naming one
// address get at most the budget; a dial-back request cannot aim a probe at a non-unicast
// address. The sim test "a fake record listing a victim's ports" checks the same across a mesh.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "meshd/core/endpoint_filter.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd/core/send_budget.hpp"
#include "meshd_test_util.hpp"

using meshd_test::ep;
using namespace mw::meshd;
using meshd_test::identity;
using meshd_test::psk;
using meshd_test::sealer;
using meshd_test::t0;
using mw::ip_address;
using mw::wg_endpoint;

namespace {

endpoint_refusal cls(const char* a) {
    return endpoint_filter::classify(ip_address::parse(a).value());
}

node_core make_core() {
    node_core_config c;
    c.node_name = "me";
    c.endpoints = {ep("192.168.1.50:51821")};
    return node_core(c, identity(50), sealer(), meshd_test::test_rng());
}

// A record of identity(n) listing `eps`.
peer_record record_with(uint8_t n, std::vector<wg_endpoint> eps, uint64_t seq = 1) {
    peer_record r = meshd_test::record(n, seq, 600'000);
    r.endpoints = std::move(eps);
    REQUIRE(r.sign(identity(n)));
    return r;
}

// Datagrams the core sent, by destination address.
std::map<ip_address, size_t> sent_by_address(node_core& core) {
    std::map<ip_address, size_t> m;
    for (const auto& d : core.take_outgoing()) ++m[normalize_endpoint(d.to).address];
    return m;
}

}  // namespace

TEST_CASE("endpoint_filter: unicast addresses only, at the cluster's port") {
    for (const char* ok : {"192.168.1.1", "10.0.0.1", "203.0.113.9", "100.64.0.1", "8.8.8.8",
                           "2001:db8::1", "fd00::1", "::ffff:203.0.113.9", "1.0.0.0"}) {
        CHECK_MESSAGE(cls(ok) == endpoint_refusal::none, ok);
    }
    CHECK(cls("0.0.0.0") == endpoint_refusal::unspecified);
    CHECK(cls("0.1.2.3") == endpoint_refusal::unspecified);
    CHECK(cls("::") == endpoint_refusal::unspecified);
    CHECK(cls("127.0.0.1") == endpoint_refusal::loopback);
    CHECK(cls("127.255.0.9") == endpoint_refusal::loopback);
    CHECK(cls("::1") == endpoint_refusal::loopback);
    CHECK(cls("::ffff:127.0.0.1") == endpoint_refusal::loopback);
    CHECK(cls("169.254.169.254") == endpoint_refusal::link_local);
    CHECK(cls("fe80::1") == endpoint_refusal::link_local);
    CHECK(cls("febf::1") == endpoint_refusal::link_local);
    CHECK(cls("fec0::1") == endpoint_refusal::none);  // deprecated site-local: plain unicast
    CHECK(cls("224.0.0.1") == endpoint_refusal::multicast);
    CHECK(cls("239.255.255.250") == endpoint_refusal::multicast);
    CHECK(cls("ff02::1") == endpoint_refusal::multicast);
    CHECK(cls("::ffff:224.0.0.251") == endpoint_refusal::multicast);
    CHECK(cls("255.255.255.255") == endpoint_refusal::broadcast);
    CHECK(cls("240.0.0.1") == endpoint_refusal::reserved);
    CHECK(cls("255.255.255.254") == endpoint_refusal::reserved);

    CHECK(endpoint_filter::check(ep("192.168.1.1:51821"), 51821) == endpoint_refusal::none);
    CHECK(endpoint_filter::check(ep("192.168.1.1:53"), 51821) == endpoint_refusal::port);
    CHECK(endpoint_filter::check(ep("192.168.1.1:51820"), 51821) == endpoint_refusal::port);
    CHECK(endpoint_filter::check(ep("127.0.0.1:51821"), 51821) == endpoint_refusal::loopback);
    CHECK(std::string(to_string(endpoint_refusal::link_local)) == "link_local");
    CHECK(std::string(to_string(endpoint_refusal::budget)) == "budget");
}

TEST_CASE("send_budget: a burst, then the rate, per destination address; bounded memory") {
    send_budget b(16, 32, 3);
    auto a = ip_address::parse("203.0.113.1").value();
    auto c = ip_address::parse("203.0.113.2").value();
    int sent = 0;
    for (int i = 0; i < 100; ++i) sent += b.take(a, t0);
    CHECK(sent == 32);
    CHECK(b.take(c, t0));  // another address has its own budget
    // One second later: 16 more.
    sent = 0;
    for (int i = 0; i < 100; ++i) sent += b.take(a, t0 + 1000);
    CHECK(sent == 16);
    // Over 10 s at 100 tries/s: 16/s.
    sent = 0;
    for (uint64_t t = t0 + 1010; t < t0 + 11010; t += 10) sent += b.take(a, t);
    CHECK(sent >= 159);
    CHECK(sent <= 161);
    // At most 3 addresses tracked; the one idle longest is forgotten.
    CHECK(b.take(ip_address::parse("203.0.113.3").value(), t0 + 11000));
    CHECK(b.tracked() == 3);
    CHECK(b.take(ip_address::parse("203.0.113.4").value(), t0 + 11000));
    CHECK(b.tracked() == 3);
}

TEST_CASE(
    "node_core: a record listing a victim's ports, loopback or multicast sends them nothing") {
    // Before: every endpoint of a record was probed (at least once per upgrade_interval, each
    // datagram ~100 bytes), so one fake record aimed every node at any address and port.
    node_core core = make_core();
    uint64_t now = t0;
    core.start(now);
    (void)core.take_outgoing();
    std::vector<wg_endpoint> fake;
    for (uint16_t port = 1; port <= 5; ++port)
        fake.push_back(ep("198.51.100.7:" + std::to_string(port)));  // the victim's services
    fake.push_back(ep("127.0.0.1:51821"));
    fake.push_back(ep("[ff02::1]:51821"));
    fake.push_back(ep("169.254.169.254:51821"));
    REQUIRE(core.offer_record(record_with(1, fake), learned_via::relay, now));
    // An honest record next to it: its endpoint at the cluster's port is probed.
    REQUIRE(core.offer_record(record_with(2, {ep("192.168.1.2:51821")}), learned_via::relay, now));
    std::map<ip_address, size_t> total;
    for (int s = 0; s < 30; ++s) {
        core.tick(now);
        for (auto [a, n] : sent_by_address(core)) total[a] += n;
        now += 1000;
    }
    for (const char* victim : {"198.51.100.7", "127.0.0.1", "ff02::1", "169.254.169.254"}) {
        CHECK_MESSAGE(total[ip_address::parse(victim).value()] == 0, victim);
    }
    CHECK(total[ip_address::parse("192.168.1.2").value()] >= 5);
    const auto& r = core.endpoint_refusals();
    CHECK(r[static_cast<size_t>(endpoint_refusal::port)] == 5);
    CHECK(r[static_cast<size_t>(endpoint_refusal::loopback)] == 1);
    CHECK(r[static_cast<size_t>(endpoint_refusal::multicast)] == 1);
    CHECK(r[static_cast<size_t>(endpoint_refusal::link_local)] == 1);
    // Logged once per reason, not per endpoint.
    size_t lines = 0;
    for (const auto& e : core.take_log()) lines += e.msg.starts_with("endpoint refused") ? 1 : 0;
    CHECK(lines == 4);
    // An endpoint offered for a known node by a discovery source follows the same rules.
    core.offer_endpoint(identity(2).id(), ep("198.51.100.7:22"), learned_via::mdns, now);
    core.offer_endpoint(std::nullopt, ep("[fe80::1]:51821"), learned_via::mdns, now);
    CHECK(core.relays().empty());
    CHECK(r[static_cast<size_t>(endpoint_refusal::port)] == 6);
    CHECK(r[static_cast<size_t>(endpoint_refusal::link_local)] == 2);
}

TEST_CASE("node_core: many records naming one address get at most its send budget") {
    // Before: 64 records listing 203.0.113.66:51821 made 64 PINGs per probe round to it.
    node_core core = make_core();
    uint64_t now = t0;
    core.start(now);
    (void)core.take_outgoing();
    const auto victim = ip_address::parse("203.0.113.66").value();
    for (uint8_t n = 100; n < 164; ++n) {  // identity(50) is the core's own
        REQUIRE(
            core.offer_record(record_with(n, {ep("203.0.113.66:51821")}), learned_via::relay, now));
    }
    size_t first_s = 0, total = 0;
    for (int ms = 0; ms < 10'000; ms += 20) {
        core.tick(now);
        size_t n = sent_by_address(core)[victim];
        total += n;
        if (ms < 1000) first_s += n;
        now += 20;
    }
    MESSAGE("64 records naming one address: " << first_s << " datagrams in the first second, "
                                              << total << " in 10 s");
    CHECK(first_s <= send_budget::default_burst + send_budget::default_rate_per_s);
    CHECK(total <= send_budget::default_burst + 10 * send_budget::default_rate_per_s + 1);
    CHECK(total >= 10 * send_budget::default_rate_per_s);  // the budget is used, not more
    CHECK(core.endpoint_refusals()[static_cast<size_t>(endpoint_refusal::budget)] > 0);
}

TEST_CASE("node_core: a dial-back request aims a probe only at a unicast address, on budget") {
    node_core core = make_core();
    uint64_t now = t0;
    core.start(now);
    (void)core.take_outgoing();
    control_channel requester(identity(9), sealer(), 1);
    const auto core_id = core.id();
    requester.set_key_source(
        [](const node_id&) -> std::optional<mw::wg_key> { return identity(50).wg_public_key(); });
    aead_nonce nonce{};
    uint8_t k = 0;
    auto request = [&](const wg_endpoint& target) {
        for (auto& b : nonce) b = ++k;
        auto d = requester.send(dialback_request_msg{k, target}, core_id, nonce);
        REQUIRE(d);
        core.on_datagram(*d, ep("192.168.1.9:51821"), 0, 0, now);
        ++now;
    };
    // Dial-back probes (sent from a fresh socket) since the last call.
    auto probes = [&] {
        std::vector<wg_endpoint> v;
        for (const auto& d : core.take_outgoing())
            if (d.fresh_socket) v.push_back(normalize_endpoint(d.to));
        return v;
    };
    request(ep("127.0.0.1:51821"));
    request(ep("[ff02::1]:51821"));
    request(ep("0.0.0.0:51821"));
    request(ep("169.254.169.254:51821"));
    request(ep("198.51.100.7:22"));
    CHECK(probes().empty());
    CHECK(core.endpoint_refusals()[static_cast<size_t>(endpoint_refusal::loopback)] == 1);
    request(ep("198.51.100.7:51821"));
    CHECK(probes() == std::vector<wg_endpoint>{ep("198.51.100.7:51821")});
    // Over many seconds, one destination gets at most its budget (the global 20/s cap of
    // dialback_probes_per_s alone would let one requester spend all of it on one victim).
    size_t n = 0;
    for (int s = 0; s < 10; ++s) {
        for (int i = 0; i < 20; ++i) request(ep("198.51.100.7:51821"));
        now += 1000 - 20;
        n += probes().size();
    }
    // Before: 200 (all the global cap allowed).
    MESSAGE("200 dial-back requests at one address over 10 s: " << n << " probes sent");
    CHECK(n <= 4 + 10 * 2);
    CHECK(n >= 10 * 2 - 1);
}
