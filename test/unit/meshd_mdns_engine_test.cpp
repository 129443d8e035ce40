// The pure mDNS responder, querier and cache (mdns_engine): each RFC 6762 behaviour meshd relies
// on, driven by hand-made packets and `now`, and several engines on a simulated LAN (multicast to
// every engine including the sender, as the kernel's multicast loopback does).
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "meshd/core/mdns_cache.hpp"
#include "meshd/core/mdns_engine.hpp"
#include "meshd_test_util.hpp"

using meshd_test::ep;
using namespace mw;
using namespace mw::meshd;

namespace {

node_id nid(uint8_t n) {
    std::array<uint8_t, 32> b{};
    b.fill(n);
    return node_id::from_bytes(b.data());
}

ip_address ip(const char* s) {
    return ip_address::parse(s).value();
}
mdns_engine_config config(const std::string& name, uint8_t n, std::vector<int> fam = {AF_INET}) {
    mdns_engine_config c;
    c.service.instance = name;
    c.service.host_label = "meshwire-" + nid(n).short_hex();
    c.service.port = 51821;
    c.service.txt = {"id=" + nid(n).hex(), "v=1"};
    c.self = nid(n);
    c.families = std::move(fam);
    c.seed = n;
    return c;
}

struct sent {
    uint64_t at;
    mdns_datagram d;
    mdns_message m;
};

// Runs one engine alone up to `until`, returning what it sent and when.
std::vector<sent> run(mdns_engine& e, uint64_t from, uint64_t until) {
    std::vector<sent> out;
    uint64_t now = from;
    for (;;) {
        for (auto& d : e.take_output()) {
            auto m = mdns_message::parse(d.bytes);
            REQUIRE(m);
            out.push_back({now, d, *m});
        }
        uint64_t next = e.next_deadline();
        if (next > until) break;
        now = std::max(now, next);
        e.on_timer(now);
    }
    return out;
}

// The responder's packets only (probes: queries with an authority section; responses), not the
// querier's browse queries.
std::vector<sent> responder_only(std::vector<sent> v) {
    std::erase_if(v, [](const sent& s) { return !s.m.is_response() && s.m.authorities.empty(); });
    return v;
}

// An engine that has finished probing and announcing (at ~4.3 s); returns the time.
uint64_t settle(mdns_engine& e, std::vector<ip_address> addrs) {
    e.start(std::move(addrs), 0);
    run(e, 0, 10000);
    REQUIRE(e.responder().current_state() == mdns_responder::state::announced);
    return 10000;
}

mdns_message query(const char* name, uint16_t type, bool qu = false) {
    mdns_message q;
    mdns_question question;
    question.name = mdns_name::from_dotted(name);
    question.type = type;
    question.unicast_response = qu;
    q.questions.push_back(question);
    return q;
}

std::vector<uint8_t> bytes(const mdns_message& m) {
    return m.encode().value();
}

mdns_record a_record(const mdns_name& name, std::array<uint8_t, 4> addr) {
    mdns_record a;
    a.name = name;
    a.type = mdns_type::a;
    a.ttl = 120;
    a.data = addr;
    return a;
}

const mdns_record* find(const std::vector<mdns_record>& rs, uint16_t type) {
    for (const auto& r : rs)
        if (r.type == type) return &r;
    return nullptr;
}

// A LAN of engines: each engine's multicast reaches every engine (itself too), unicast reaches
// the engine with that address. Engine i has address 10.0.0.(i+1).
struct lan {
    std::vector<mdns_engine*> engines;
    uint64_t now = 0;
    size_t delivered = 0;

    void step_to(uint64_t until) {
        for (;;) {
            bool any = false;
            for (size_t i = 0; i < engines.size(); ++i) {
                for (auto& d : engines[i]->take_output()) {
                    any = true;
                    wg_endpoint from{ip(("10.0.0." + std::to_string(i + 1)).c_str()), mdns_port};
                    for (size_t j = 0; j < engines.size(); ++j) {
                        bool to_j = is_mdns_group(d.to.address) ||
                                    d.to.address == ip(("10.0.0." + std::to_string(j + 1)).c_str());
                        if (!to_j) continue;
                        engines[j]->on_datagram(d.bytes, from, now);
                        ++delivered;
                    }
                }
            }
            if (any) continue;
            uint64_t next = UINT64_MAX;
            for (auto* e : engines) next = std::min(next, e->next_deadline());
            if (next > until) break;
            now = std::max(now, next);
            for (auto* e : engines) e->on_timer(now);
        }
        now = until;
    }
};

}  // namespace

TEST_CASE("mdns responder: 3 probes 250 ms apart, then announcements 1 s then 2 s apart") {
    mdns_engine e(config("node-a", 1));
    e.start({ip("192.0.2.10")}, 0);
    auto out = responder_only(run(e, 0, 20000));
    REQUIRE(out.size() == 6);
    // Probes: queries for the instance and host names (ANY), the first QU, records in authority.
    CHECK(out[0].at <= 250);
    for (int i = 0; i < 3; ++i) {
        const auto& m = out[i].m;
        CHECK_FALSE(m.is_response());
        REQUIRE(m.questions.size() == 2);
        CHECK(m.questions[0].name.str() == "node-a._meshwire._udp.local");
        CHECK(m.questions[0].type == mdns_type::any);
        CHECK(m.questions[0].unicast_response == (i == 0));
        CHECK(find(m.authorities, mdns_type::srv));
        CHECK(find(m.authorities, mdns_type::a));
        CHECK(out[i].d.to == mdns_group(AF_INET));
        if (i > 0) CHECK(out[i].at - out[i - 1].at == 250);
    }
    // Announcements: 250 ms after the third probe, then +1 s, then +2 s.
    CHECK(out[3].at - out[2].at == 250);
    CHECK(out[4].at - out[3].at == 1000);
    CHECK(out[5].at - out[4].at == 2000);
    for (int i = 3; i < 6; ++i) CHECK(out[i].m.is_response());
    CHECK(e.responder().current_state() == mdns_responder::state::announced);
    CHECK(e.responder().stats().announcements == 3);
    // Then quiet: nothing more is due (the querier's next browse aside).
    CHECK(e.responder().next_deadline() == UINT64_MAX);
}

TEST_CASE("mdns responder: the records, their TTLs and cache-flush bits") {
    mdns_engine e(config("node-a", 1, {AF_INET, AF_INET6}));
    e.start({ip("192.0.2.10"), ip("2001:db8::10")}, 0);
    auto out = responder_only(run(e, 0, 20000));
    REQUIRE(out.size() == 12);  // 6 packets, each on v4 and v6
    CHECK(out[0].d.to == mdns_group(AF_INET));
    CHECK(out[1].d.to == mdns_group(AF_INET6));
    const auto& ann = out.back().m.answers;
    std::map<uint16_t, int> count;
    for (const auto& r : ann) {
        ++count[r.type];
        if (r.type == mdns_type::ptr) {
            CHECK(r.ttl == 4500);
            CHECK_FALSE(r.cache_flush);
        } else {
            CHECK(r.cache_flush);
        }
        if (r.type == mdns_type::srv || r.type == mdns_type::a || r.type == mdns_type::aaaa)
            CHECK(r.ttl == 120);
        if (r.type == mdns_type::txt) CHECK(r.ttl == 4500);
    }
    CHECK(count[mdns_type::ptr] == 2);  // service + _services._dns-sd
    CHECK(count[mdns_type::a] == 1);
    CHECK(count[mdns_type::aaaa] == 1);
    const auto* srv = find(ann, mdns_type::srv);
    REQUIRE(srv);
    CHECK(std::get<mdns_srv>(srv->data).port == 51821);
    CHECK(std::get<mdns_srv>(srv->data).target.str() ==
          "meshwire-" + nid(1).short_hex() + ".local");
    const auto* txt = find(ann, mdns_type::txt);
    REQUIRE(txt);
    CHECK(std::get<mdns_txt>(txt->data).strings ==
          std::vector<std::string>{"id=" + nid(1).hex(), "v=1"});
}

TEST_CASE("mdns responder: a QM question gets a multicast answer with additionals, rate-limited") {
    mdns_engine e(config("node-a", 1));
    uint64_t t = settle(e, {ip("192.0.2.10")});
    e.on_datagram(bytes(query("_meshwire._udp.local", mdns_type::ptr)), ep("192.0.2.99:5353"), t);
    // PTR is shared: the answer waits 20-120 ms.
    CHECK(e.take_output().empty());
    auto out = run(e, t, t + 200);
    auto answers = std::count_if(out.begin(), out.end(), [](auto& s) { return s.m.is_response(); });
    REQUIRE(answers == 1);
    const sent* a = nullptr;
    for (auto& s : out)
        if (s.m.is_response()) a = &s;
    CHECK(a->at >= t + 20);
    CHECK(a->at <= t + 120);
    CHECK(a->d.to == mdns_group(AF_INET));
    REQUIRE(a->m.answers.size() == 1);
    CHECK(std::get<mdns_name>(a->m.answers[0].data).str() == "node-a._meshwire._udp.local");
    CHECK(find(a->m.additionals, mdns_type::srv));
    CHECK(find(a->m.additionals, mdns_type::txt));
    CHECK(find(a->m.additionals, mdns_type::a));
    // The same question 300 ms later: not before a second after the last multicast.
    uint64_t t2 = a->at + 300;
    e.on_datagram(bytes(query("_meshwire._udp.local", mdns_type::ptr)), ep("192.0.2.98:5353"), t2);
    auto out2 = run(e, t2, t2 + 2000);
    const sent* b = nullptr;
    for (auto& s : out2)
        if (s.m.is_response()) b = &s;
    REQUIRE(b);
    CHECK(b->at >= a->at + 1000);
    // A unique record (SRV) is answered at once.
    uint64_t t3 = b->at + 5000;
    e.on_datagram(bytes(query("node-a._meshwire._udp.local", mdns_type::srv)), ep("192.0.2.9:5353"),
                  t3);
    auto now_out = e.take_output();
    REQUIRE(now_out.size() == 1);
    auto m = mdns_message::parse(now_out[0].bytes).value();
    REQUIRE(m.answers.size() == 1);
    CHECK(m.answers[0].type == mdns_type::srv);
    CHECK(find(m.additionals, mdns_type::a));  // the target's address comes along
}

TEST_CASE("mdns responder: QU gets a unicast answer when the record was multicast recently") {
    mdns_engine e(config("node-a", 1));
    uint64_t t = settle(e, {ip("192.0.2.10")});
    // The last announcement was at ~3.5 s: within a quarter of 120 s for the SRV.
    e.on_datagram(bytes(query("node-a._meshwire._udp.local", mdns_type::srv, true)),
                  ep("192.0.2.99:5353"), t);
    auto out = e.take_output();
    REQUIRE(out.size() == 1);
    CHECK(out[0].to == ep("192.0.2.99:5353"));
    // 40 s later (over a quarter of 120 s): multicast instead (§5.4).
    e.on_datagram(bytes(query("node-a._meshwire._udp.local", mdns_type::srv, true)),
                  ep("192.0.2.99:5353"), t + 40000);
    auto out2 = e.take_output();
    REQUIRE(out2.size() == 1);
    CHECK(out2[0].to == mdns_group(AF_INET));
}

TEST_CASE("mdns querier: its browse lists our own PTR, so our responder stays silent on it") {
    mdns_engine e(config("node-a", 1));
    uint64_t t = settle(e, {ip("192.0.2.10")});
    auto out = run(e, t, t + 40000);
    const sent* q = nullptr;
    for (const auto& s : out)
        if (!s.m.is_response() && s.m.authorities.empty()) q = &s;
    REQUIRE(q);
    REQUIRE(q->m.answers.size() == 1);
    CHECK(std::get<mdns_name>(q->m.answers[0].data).str() == "node-a._meshwire._udp.local");
    // Our own query looped back from another address (not recognised by its bytes): no answer.
    e.on_datagram(q->d.bytes, ep("192.0.2.10:5353"), q->at + 6000);
    auto after = run(e, q->at + 6000, q->at + 6500);
    CHECK(std::none_of(after.begin(), after.end(), [](auto& s) { return s.m.is_response(); }));
}

TEST_CASE("mdns responder: legacy unicast (source port != 5353) like dig") {
    mdns_engine e(config("node-a", 1));
    uint64_t t = settle(e, {ip("192.0.2.10")});
    auto q = query("_meshwire._udp.local", mdns_type::ptr);
    q.id = 0xBEEF;
    e.on_datagram(bytes(q), ep("192.0.2.99:40000"), t);
    auto out = e.take_output();
    REQUIRE(out.size() == 1);
    CHECK(out[0].to == ep("192.0.2.99:40000"));
    auto m = mdns_message::parse(out[0].bytes).value();
    CHECK(m.id == 0xBEEF);
    CHECK(m.is_response());
    REQUIRE(m.questions.size() == 1);
    CHECK(m.questions[0].name.str() == "_meshwire._udp.local");
    REQUIRE(m.answers.size() == 1);
    CHECK(m.answers[0].type == mdns_type::ptr);
    CHECK(m.answers[0].ttl <= 10);
    CHECK_FALSE(m.answers[0].cache_flush);
    CHECK_FALSE(m.additionals.empty());
    for (const auto& r : m.additionals) {
        CHECK(r.ttl <= 10);
        CHECK_FALSE(r.cache_flush);
    }
    CHECK(e.responder().stats().legacy_answers == 1);
}

TEST_CASE("mdns responder: known answers with over half their TTL suppress the answer") {
    mdns_engine e(config("node-a", 1));
    uint64_t t = settle(e, {ip("192.0.2.10")});
    auto ptr = e.responder().records();
    const mdns_record* mine = nullptr;
    for (const auto& r : ptr)
        if (r.type == mdns_type::ptr && r.name == mdns_service_type()) mine = &r;
    REQUIRE(mine);
    auto q = query("_meshwire._udp.local", mdns_type::ptr);
    q.answers.push_back(*mine);
    q.answers.back().ttl = 3000;  // over half of 4500
    e.on_datagram(bytes(q), ep("192.0.2.99:5353"), t);
    auto out = run(e, t, t + 500);
    CHECK(std::none_of(out.begin(), out.end(), [](auto& s) { return s.m.is_response(); }));
    q.answers.back().ttl = 2000;  // under half: answered
    e.on_datagram(bytes(q), ep("192.0.2.99:5353"), t + 600);
    auto out2 = run(e, t + 600, t + 1000);
    CHECK(std::any_of(out2.begin(), out2.end(), [](auto& s) { return s.m.is_response(); }));
}

TEST_CASE("mdns responder: answers only for its own names") {
    mdns_engine e(config("node-a", 1));
    uint64_t t = settle(e, {ip("192.0.2.10")});
    for (const char* name : {"other._meshwire._udp.local", "_http._tcp.local", "printer.local",
                             "node-a._http._tcp.local"}) {
        e.on_datagram(bytes(query(name, mdns_type::any)), ep("192.0.2.99:5353"), t);
        e.on_datagram(bytes(query(name, mdns_type::any)), ep("192.0.2.99:4000"), t);
    }
    auto out = run(e, t, t + 2000);
    CHECK(std::none_of(out.begin(), out.end(), [](auto& s) { return s.m.is_response(); }));
    // _services._dns-sd lists our service type.
    e.on_datagram(bytes(query("_services._dns-sd._udp.local", mdns_type::ptr)), ep("192.0.2.99:9"),
                  t + 3000);
    auto out2 = e.take_output();
    REQUIRE(out2.size() == 1);
    auto m = mdns_message::parse(out2[0].bytes).value();
    REQUIRE(m.answers.size() == 1);
    CHECK(std::get<mdns_name>(m.answers[0].data) == mdns_service_type());
}

TEST_CASE("mdns responder: a conflict renames the instance and probes again") {
    SUBCASE("during probing") {
        mdns_engine e(config("node-a", 1));
        e.start({ip("192.0.2.10")}, 0);
        run(e, 0, 300);  // first probe out
        mdns_message r;
        r.flags = mdns_message::flag_response | mdns_message::flag_authoritative;
        mdns_record srv;
        srv.name = mdns_name::from_dotted("node-a._meshwire._udp.local");
        srv.type = mdns_type::srv;
        srv.ttl = 120;
        srv.cache_flush = true;
        srv.data = mdns_srv{0, 0, 9999, mdns_name::from_dotted("elsewhere.local")};
        r.answers.push_back(srv);
        e.on_datagram(bytes(r), ep("192.0.2.50:5353"), 300);
        CHECK(e.responder().instance() == "node-a (2)");
        CHECK(e.responder().current_state() == mdns_responder::state::probing);
        CHECK(e.responder().stats().conflicts == 1);
        auto out = responder_only(run(e, 300, 10000));
        CHECK(e.responder().current_state() == mdns_responder::state::announced);
        REQUIRE_FALSE(out.empty());
        const auto* srv_out = find(out.back().m.answers, mdns_type::srv);
        REQUIRE(srv_out);
        CHECK(srv_out->name.str() == "node-a (2)._meshwire._udp.local");
    }
    SUBCASE("after announcing, and records with our own data are no conflict") {
        mdns_engine e(config("node-a", 1));
        uint64_t t = settle(e, {ip("192.0.2.10")});
        // Our records sent back by someone else (e.g. a proxy, or our packet re-encoded).
        mdns_message same;
        same.flags = mdns_message::flag_response;
        for (const auto& r : e.responder().records()) same.answers.insert(same.answers.begin(), r);
        e.on_datagram(bytes(same), ep("192.0.2.77:5353"), t);
        CHECK(e.responder().stats().conflicts == 0);
        // A different address for our host name is a conflict.
        mdns_message other;
        other.flags = mdns_message::flag_response;
        other.answers.push_back(a_record(e.responder().host_name(), {192, 0, 2, 77}));
        e.on_datagram(bytes(other), ep("192.0.2.77:5353"), t + 10);
        CHECK(e.responder().stats().conflicts == 1);
        CHECK(e.responder().current_state() == mdns_responder::state::probing);
    }
}

TEST_CASE("mdns engine: its own looped-back packets are recognised, never a conflict or answer") {
    mdns_engine e(config("node-a", 1));
    e.start({ip("192.0.2.10")}, 0);
    uint64_t now = 0;
    for (int i = 0; i < 50; ++i) {
        auto out = e.take_output();
        for (auto& d : out) e.on_datagram(d.bytes, ep("192.0.2.10:5353"), now);
        now = std::max(now, e.next_deadline());
        if (now > 20000) break;
        e.on_timer(now);
    }
    CHECK(e.responder().current_state() == mdns_responder::state::announced);
    CHECK(e.responder().stats().conflicts == 0);
    CHECK(e.responder().instance() == "node-a");
    CHECK(e.stats().own_looped >= 6);
    CHECK(e.take_found().empty());
    // What the adapter asks every engine (a host on one LAN through two interfaces).
    e.set_addresses({ip("192.0.2.11")}, now);
    auto bye = e.take_output();
    REQUIRE_FALSE(bye.empty());
    CHECK(e.sent_recently(bye[0].bytes, now + 5000));
    CHECK_FALSE(e.sent_recently(bye[0].bytes, now + 5001));
    auto other = bye[0].bytes;
    other.back() ^= 1;
    CHECK_FALSE(e.sent_recently(other, now));
}

TEST_CASE("mdns responder: simultaneous probes, the lexicographically later data wins") {
    // Two hosts with the same instance name probing at the same time: exactly one keeps it.
    mdns_engine a(config("same", 1)), b(config("same", 2));
    a.start({ip("192.0.2.1")}, 0);
    b.start({ip("192.0.2.2")}, 0);
    lan l;
    l.engines = {&a, &b};
    l.step_to(20000);
    CHECK(a.responder().current_state() == mdns_responder::state::announced);
    CHECK(b.responder().current_state() == mdns_responder::state::announced);
    std::vector<std::string> names{a.responder().instance(), b.responder().instance()};
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"same", "same (2)"});
}

TEST_CASE("mdns responder: goodbye (TTL 0) on stop; re-announce on an address change") {
    mdns_engine e(config("node-a", 1));
    uint64_t t = settle(e, {ip("192.0.2.10"), ip("192.0.2.11")});
    e.set_addresses({ip("192.0.2.10"), ip("192.0.2.12")}, t);
    auto out = run(e, t, t + 10000);
    // First a goodbye for .11, then 3 announcements with .12.
    std::vector<const sent*> resp;
    for (auto& s : out)
        if (s.m.is_response()) resp.push_back(&s);
    REQUIRE(resp.size() >= 4);
    REQUIRE(resp[0]->m.answers.size() == 1);
    CHECK(resp[0]->m.answers[0].ttl == 0);
    CHECK(std::get<std::array<uint8_t, 4>>(resp[0]->m.answers[0].data)[3] == 11);
    CHECK(resp[1]->at == t);
    int a12 = 0;
    for (const auto& r : resp[1]->m.answers)
        if (r.type == mdns_type::a) {
            auto b = std::get<std::array<uint8_t, 4>>(r.data);
            CHECK(b[3] != 11);
            a12 += b[3] == 12;
        }
    CHECK(a12 == 1);
    CHECK(resp[2]->at - resp[1]->at == 1000);
    CHECK(resp[3]->at - resp[2]->at == 2000);

    e.stop(t + 20000);
    auto bye = e.take_output();
    REQUIRE(bye.size() == 1);
    auto m = mdns_message::parse(bye[0].bytes).value();
    CHECK(m.answers.size() >= 5);
    for (const auto& r : m.answers) CHECK(r.ttl == 0);
    CHECK(e.next_deadline() == UINT64_MAX);
}

TEST_CASE("mdns engine: malformed packets and non-mDNS responses are counted and dropped") {
    mdns_engine e(config("node-a", 1));
    settle(e, {ip("192.0.2.10")});
    std::vector<uint8_t> junk{0, 0, 0x84, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12};
    e.on_datagram(junk, ep("192.0.2.9:5353"), 11000);
    CHECK(e.stats().malformed == 1);
    mdns_message r;
    r.flags = mdns_message::flag_response;
    r.answers.push_back(a_record(e.responder().host_name(), {1, 2, 3, 4}));
    e.on_datagram(bytes(r), ep("192.0.2.9:1234"), 11000);  // not from 5353: not mDNS
    r.flags |= 0x0001;                                     // rcode 1
    e.on_datagram(bytes(r), ep("192.0.2.9:5353"), 11000);
    CHECK(e.stats().ignored == 2);
    CHECK(e.responder().stats().conflicts == 0);
}

TEST_CASE("mdns querier: browse backoff 1 s doubling to 60 min, known answers listed") {
    mdns_engine e(config("node-a", 1));
    e.start({}, 0);  // no addresses: querier only
    auto out = run(e, 0, 3 * 3600 * 1000ull);
    REQUIRE(out.size() > 12);
    CHECK(out[0].at >= 20);
    CHECK(out[0].at <= 120);
    CHECK(out[1].at - out[0].at == 1000);
    CHECK(out[2].at - out[1].at == 2000);
    CHECK(out[3].at - out[2].at == 4000);
    uint64_t last_gap = 0;
    for (size_t i = 1; i < out.size(); ++i) last_gap = out[i].at - out[i - 1].at;
    CHECK(last_gap == 3600 * 1000ull);
    for (const auto& s : out) {
        REQUIRE(s.m.questions.size() == 1);
        CHECK(s.m.questions[0].name == mdns_service_type());
        CHECK(s.m.questions[0].type == mdns_type::ptr);
    }
}

TEST_CASE("mdns engines on one LAN find each other, with node ID and endpoint") {
    mdns_engine a(config("node-a", 1)), b(config("node-b", 2)), c(config("node-c", 3));
    a.start({ip("10.0.0.1")}, 0);
    b.start({ip("10.0.0.2")}, 0);
    c.start({ip("10.0.0.3")}, 0);
    lan l;
    l.engines = {&a, &b, &c};
    l.step_to(1500);
    // Probing takes ~1 s; the announcements (at ~1 s) carry everything a browser needs.
    std::map<std::string, mdns_peer> found;
    for (auto& p : a.take_found()) found[p.instance] = p;
    REQUIRE(found.size() == 2);
    CHECK(found["node-b"].id == nid(2));
    CHECK(found["node-b"].endpoints == std::vector<wg_endpoint>{ep("10.0.0.2:51821")});
    CHECK(found["node-c"].id == nid(3));
    CHECK(b.take_found().size() == 2);
    CHECK(c.take_found().size() == 2);
    // Steady state: an hour later, nothing new is reported, and the traffic is quiet: the browse
    // backs off to an hour, and what remains is cache maintenance of the 120 s records (one
    // query and one answer per record every ~96 s, shared by every node: a multicast answer
    // refreshes every cache). At most 3 packets per node per minute.
    uint64_t sent_before = a.stats().sent + b.stats().sent + c.stats().sent;
    l.step_to(3600 * 1000);
    CHECK(a.take_found().empty());
    // Cache maintenance (§5.2): the peers' SRV and addresses (TTL 120 s) were asked for again at
    // 80 % of their TTL, so both peers are still resolved an hour later.
    CHECK(a.querier().peers(l.now).size() == 2);
    uint64_t sent = a.stats().sent + b.stats().sent + c.stats().sent - sent_before;
    CHECK(sent > 0);
    MESSAGE("steady state: ", sent, " packets sent by 3 nodes in the hour after start");
    CHECK(sent < 3 * 60 * 3);
    CHECK(a.stats().malformed == 0);
    CHECK(a.responder().stats().conflicts == 0);
}

TEST_CASE("mdns querier: resolves an instance whose answer came without SRV/TXT/A") {
    mdns_engine e(config("node-a", 1));
    e.start({}, 0);
    run(e, 0, 200);
    // A bare PTR (as a responder that sends no additionals would).
    mdns_message r;
    r.flags = mdns_message::flag_response;
    mdns_record ptr;
    ptr.name = mdns_service_type();
    ptr.type = mdns_type::ptr;
    ptr.ttl = 4500;
    ptr.data = mdns_service_type().prepend("node-z");
    r.answers.push_back(ptr);
    e.on_datagram(bytes(r), ep("10.0.0.9:5353"), 300);
    auto out = run(e, 300, 500);
    REQUIRE(out.size() == 1);
    std::vector<uint16_t> types;
    for (const auto& q : out[0].m.questions) types.push_back(q.type);
    CHECK(std::count(types.begin(), types.end(), mdns_type::srv) == 1);
    CHECK(std::count(types.begin(), types.end(), mdns_type::txt) == 1);
    // SRV and TXT come; the target's address is asked for next.
    mdns_message r2;
    r2.flags = mdns_message::flag_response;
    mdns_record srv;
    srv.name = mdns_service_type().prepend("node-z");
    srv.type = mdns_type::srv;
    srv.ttl = 120;
    srv.data = mdns_srv{0, 0, 51821, mdns_name::from_dotted("z.local")};
    mdns_record txt = srv;
    txt.type = mdns_type::txt;
    txt.data = mdns_txt{{"id=" + nid(9).hex()}};
    r2.answers = {srv, txt};
    e.on_datagram(bytes(r2), ep("10.0.0.9:5353"), 600);
    CHECK(e.take_found().empty());
    auto out2 = run(e, 600, 800);
    REQUIRE(out2.size() == 1);
    CHECK(out2[0].m.questions[0].name.str() == "z.local");
    mdns_message r3;
    r3.flags = mdns_message::flag_response;
    auto a = a_record(mdns_name::from_dotted("z.local"), {10, 0, 0, 9});
    r3.answers = {a};
    e.on_datagram(bytes(r3), ep("10.0.0.9:5353"), 900);
    auto found = e.take_found();
    REQUIRE(found.size() == 1);
    CHECK(found[0].id == nid(9));
    CHECK(found[0].endpoints == std::vector<wg_endpoint>{ep("10.0.0.9:51821")});
    // Our own ID in a TXT is never a peer.
    txt.data = mdns_txt{{"id=" + nid(1).hex()}};
    txt.name = mdns_service_type().prepend("imposter");
    ptr.data = txt.name;
    srv.name = txt.name;
    mdns_message r4;
    r4.flags = mdns_message::flag_response;
    r4.answers = {ptr, srv, txt, a};
    e.on_datagram(bytes(r4), ep("10.0.0.9:5353"), 1000);
    CHECK(e.take_found().empty());
}

TEST_CASE("mdns cache: TTL expiry, goodbye after one second, cache-flush") {
    mdns_cache c;
    auto a = a_record(mdns_name::from_dotted("x.local"), {10, 0, 0, 1});
    CHECK(c.add(a, 0));
    CHECK_FALSE(c.add(a, 10));  // a refresh
    CHECK(c.find(a.name, mdns_type::a, 119000).size() == 1);
    CHECK(c.find(a.name, mdns_type::a, 120010).empty());
    CHECK(c.expire(120010) == 1);
    // Goodbye: gone one second later.
    c.add(a, 0);
    auto bye = a;
    bye.ttl = 0;
    c.add(bye, 5000);
    CHECK(c.find(a.name, mdns_type::a, 5999).size() == 1);
    CHECK(c.find(a.name, mdns_type::a, 6000).empty());
    // Cache flush: a new address with the flush bit retires the old one a second later.
    mdns_cache d;
    d.add(a, 0);
    auto b = a;
    b.data = std::array<uint8_t, 4>{10, 0, 0, 2};
    b.cache_flush = true;
    d.add(b, 5000);
    CHECK(d.find(a.name, mdns_type::a, 5500).size() == 2);
    auto left = d.find(a.name, mdns_type::a, 6001);
    REQUIRE(left.size() == 1);
    CHECK(left[0]->rec.data == b.data);
}
