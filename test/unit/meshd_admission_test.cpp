// Admission (issue 17) in the node core: new identities per source address at a relay, session
// state only for nodes with a record, the dial-back budget per requester, and refusal log lines
// once per (node, reason).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "meshd/core/admission.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;
using meshd_test::identity;
using meshd_test::psk;
using meshd_test::record;
using meshd_test::sealer;
using meshd_test::t0;

namespace {

mw::wg_endpoint ep(const char* s) {
    return mw::wg_endpoint::parse(s).value();
}

// A node core with no relayNodes: a rendezvous for whoever HELLOs it (relay_like()).
struct relay_fixture {
    node_core core;
    uint64_t nonce_hi = 0;
    // One control channel per sending identity (its epoch and counter carry on across messages,
    // as a node's do), and the cookies the relay gave each (identity, source address).
    std::map<uint8_t, std::unique_ptr<control_channel>> senders;
    std::map<std::pair<uint8_t, std::string>, cookie_bytes> cookies;

    explicit relay_fixture(node_core_config cfg = config())
        : core(cfg, identity(250), sealer(), meshd_test::test_rng()) {
        core.start(t0);
        (void)core.take_outgoing();
        (void)core.take_log();
    }
    static node_core_config config() {
        node_core_config c;
        c.node_name = "relay";
        c.endpoints = {ep("192.168.1.250:51821")};
        c.boot_epoch = 1;
        return c;
    }
    control_channel& channel(uint8_t n) {
        auto& ch = senders[n];
        if (!ch) {
            ch = std::make_unique<control_channel>(identity(n), sealer(), 1);
            ch->set_key_source([](const node_id& id) -> std::optional<mw::wg_key> {
                if (id == identity(250).id()) return identity(250).wg_public_key();
                return std::nullopt;
            });
        }
        return *ch;
    }
    // `body` from identity(n), sealed as that node would, delivered from `from`. HELLOs and
    // session requests carry the cookie the relay last gave (n, from), if any.
    void deliver(uint8_t n, message_body body, const mw::wg_endpoint& from, uint64_t now) {
        auto c = cookies.find({n, from.str()});
        if (c != cookies.end()) {
            if (auto* h = std::get_if<hello_msg>(&body)) h->cookie = c->second;
            if (auto* r = std::get_if<relay_session_request_msg>(&body)) r->cookie = c->second;
        }
        aead_nonce x{};
        ++nonce_hi;
        std::memcpy(x.data(), &nonce_hi, sizeof nonce_hi);
        auto d = channel(n).send(std::move(body), identity(250).id(), x);
        REQUIRE(d);
        core.on_datagram(*d, from, 0, 0, now);
    }
    // Takes the COOKIE_REPLYs for identity(n) at `from` out of `out` and remembers the cookie.
    bool take_cookie(uint8_t n, const mw::wg_endpoint& from, std::vector<outgoing_datagram>& out,
                     uint64_t now) {
        bool got = false;
        for (auto it = out.begin(); it != out.end();) {
            if (it->to == from) {
                auto m = channel(n).receive(it->bytes, now);
                if (m && std::holds_alternative<cookie_reply_msg>(m->body)) {
                    cookies[{n, from.str()}] = std::get<cookie_reply_msg>(m->body).cookie;
                    got = true;
                    it = out.erase(it);
                    continue;
                }
            }
            ++it;
        }
        return got;
    }
    // A HELLO, with the cookie round trip a node does (a first HELLO from an address gets only
    // a COOKIE_REPLY; the node sends it again at once with the cookie). What the relay answers
    // to the HELLO itself stays in core.take_outgoing().
    void hello(uint8_t n, const mw::wg_endpoint& from, uint64_t now, std::string name = "") {
        deliver(n, hello_msg{.request_id = 1, .record = record(n, 1, 600'000, name)}, from, now);
        auto out = core.take_outgoing();
        if (take_cookie(n, from, out, now)) {
            deliver(n, hello_msg{.request_id = 2, .record = record(n, 1, 600'000, name)}, from,
                    now);
        }
    }
};

size_t lines(const std::vector<core_log_event>& log, const std::string& msg) {
    return size_t(std::count_if(log.begin(), log.end(),
                                [&](const core_log_event& e) { return e.msg == msg; }));
}

}  // namespace

TEST_CASE("admission: a relay registers new identities per source address only within budget") {
    auto cfg = relay_fixture::config();
    cfg.new_ids_per_min = 6;  // one every 10 s
    cfg.new_ids_burst = 5;
    relay_fixture f(cfg);
    const auto attacker = ep("198.51.100.66:40000"), honest = ep("192.0.2.10:51821");
    uint64_t now = t0;
    // 60 new identities from one address within a second: the first is paid by the shared
    // newcomers' bucket, then the address's burst of 5.
    for (uint8_t n = 1; n <= 60; ++n) f.hello(n, attacker, now + n);
    CHECK(f.core.store().size() == 6);
    CHECK(f.core.admission().new_identity_rate_limited == 54);
    // Another address is not affected.
    f.hello(100, honest, now + 100);
    CHECK(f.core.store().find(identity(100).id()) != nullptr);
    // Known identities refresh whatever their source's budget.
    f.hello(1, attacker, now + 200);
    CHECK(f.core.admission().new_identity_rate_limited == 54);
    // The budget refills at its rate: one more after 10 s.
    f.hello(61, attacker, now + 10'100);
    f.hello(62, attacker, now + 10'200);
    CHECK(f.core.store().find(identity(61).id()) != nullptr);
    CHECK(f.core.store().find(identity(62).id()) == nullptr);
    // Refusals do not log a line each: at most the throttle's lines per minute.
    auto log = f.core.take_log();
    CHECK(lines(log, "registration refused") <= 20);
    CHECK(f.core.admission().log_lines_suppressed >= 35);
}

TEST_CASE("admission: one node's repeated refusals log one line, the rest are counted") {
    relay_fixture f;
    const auto from = ep("192.0.2.10:51821");
    // Registered, then a record with the same seq and other content: refused every time.
    f.hello(7, from, t0);
    REQUIRE(f.core.store().find(identity(7).id()) != nullptr);
    (void)f.core.take_log();
    for (int i = 0; i < 50; ++i) f.hello(7, from, t0 + 10 * (i + 1), "renamed");
    auto log = f.core.take_log();
    CHECK(lines(log, "registration refused") == 1);
    CHECK(f.core.admission().log_lines_suppressed == 49);
    // A minute later it is logged again, with how many were suppressed.
    f.hello(7, from, t0 + 61'000, "renamed");
    log = f.core.take_log();
    REQUIRE(lines(log, "registration refused") == 1);
    auto it = std::find_if(log.begin(), log.end(),
                           [](const auto& e) { return e.msg == "registration refused"; });
    auto s = std::find_if(it->fields.begin(), it->fields.end(),
                          [](const auto& kv) { return kv.first == "suppressed"; });
    REQUIRE(s != it->fields.end());
    CHECK(s->second == "49");
}

TEST_CASE("admission: session requests from a node without a record allocate nothing") {
    relay_fixture f;
    const auto from = ep("192.0.2.10:51821");
    relay_session_request_msg req{
        .request_id = 42, .session_id = 5, .from = identity(7).id(), .to = identity(8).id()};
    f.deliver(7, req, from, t0);
    // Dropped unanswered (nothing reached the relay role, which would REJECT: not serving).
    CHECK(f.core.take_outgoing().empty());
    CHECK(f.core.admission().session_unknown_sender == 1);
    // Once its HELLO registered it, the request reaches the relay role.
    f.hello(7, from, t0 + 10);
    (void)f.core.take_outgoing();
    f.deliver(7, req, from, t0 + 20);
    auto out = f.core.take_outgoing();
    CHECK(out.size() == 1);
    CHECK(f.core.admission().session_unknown_sender == 1);
}

TEST_CASE("admission: one dial-back requester cannot use up the helper's budget") {
    relay_fixture f;  // dialback_probes_per_s 20, per requester 4
    const auto target = ep("203.0.113.5:51821");
    // Requester 1 asks 100 times within a second.
    for (uint64_t i = 0; i < 100; ++i) {
        f.deliver(1, dialback_request_msg{i, target}, ep("203.0.113.5:51821"), t0 + i);
    }
    auto probes = [&] {
        auto out = f.core.take_outgoing();
        return std::count_if(out.begin(), out.end(), [](const auto& o) { return o.fresh_socket; });
    };
    CHECK(probes() == 4);
    CHECK(f.core.admission().dialback_requester_limited == 96);
    // Another requester in the same second still gets its probe.
    f.deliver(2, dialback_request_msg{1000, ep("203.0.113.6:51821")}, ep("203.0.113.6:51821"),
              t0 + 500);
    CHECK(probes() == 1);
    // The global budget still bounds the total: 20 requesters x 4 > 20 (each about its own
    // address: one target gets at most its own budget whoever asks, endpoint_filter's part).
    for (uint8_t n = 10; n < 30; ++n) {
        const std::string addr = "203.0.113." + std::to_string(n) + ":51821";
        const auto own = ep(addr.c_str());
        for (uint64_t i = 0; i < 4; ++i) {
            f.deliver(n, dialback_request_msg{i, own}, own, t0 + 600 + n);
        }
    }
    CHECK(probes() == 20 - 5);
    CHECK(f.core.admission().dialback_limited == 80 - 15);
}

TEST_CASE("log_throttle: per key per interval, a global line budget, bounded keys") {
    log_throttle t(1000, 3, 4);
    const auto a = identity(1).id(), b = identity(2).id();
    uint64_t sup = 0;
    CHECK(t.should_log(a, "x", 10, &sup));
    CHECK_FALSE(t.should_log(a, "x", 20));
    CHECK(t.should_log(a, "y", 30));
    CHECK(t.should_log(b, "x", 40));
    CHECK_FALSE(t.should_log(b, "y", 50));  // 3 lines this interval already
    CHECK(t.suppressed() == 2);
    CHECK(t.should_log(a, "x", 1100, &sup));
    CHECK(sup == 1);
    for (uint8_t n = 3; n < 40; ++n) (void)t.should_log(identity(n).id(), "x", 5000 + n * 2000);
    CHECK(t.suppressed() >= 2);
}

TEST_CASE("admission: a PSK holder's made-up identities cannot take known nodes' replay slots") {
    relay_fixture f;
    const auto attacker = ep("198.51.100.66:40000"), honest = ep("192.168.1.1:51821");
    // A known node (its record is held) sends: its replay state is at the relay.
    f.hello(1, honest, t0);
    (void)f.core.take_outgoing();
    REQUIRE(f.core.store().find(identity(1).id()) != nullptr);
    // A message it sent, captured, to replay later.
    aead_nonce x{};
    x.fill(0x42);
    const auto captured = f.channel(1).send(ping_msg{78}, identity(250).id(), x).value();
    f.core.on_datagram(captured, honest, 0, 0, t0 + 2);
    REQUIRE(f.core.take_outgoing().size() == 1);  // its PONG
    // 5,000 fresh identities (an identity is one key pair), each sending a tagged PING: more
    // than the whole replay table (4,096).
    for (uint32_t i = 0; i < 5000; ++i) {
        mw::meshd::identity_seed seed{};
        std::memcpy(seed.data(), &i, sizeof i);
        seed[31] = 0xee;
        control_channel ch(node_identity::from_seed(seed), sealer(), 1);
        ch.set_key_source([](const node_id&) -> std::optional<mw::wg_key> {
            return identity(250).wg_public_key();
        });
        x.fill(0);
        std::memcpy(x.data(), &i, sizeof i);
        f.core.on_datagram(ch.send(ping_msg{i}, identity(250).id(), x).value(), attacker, 0, 0,
                           t0 + 3);
    }
    (void)f.core.take_outgoing();
    // The known node's state survived: its captured PING is still a replay, not a new message.
    const auto replayed_before = f.core.counters().replayed;
    f.core.on_datagram(captured, honest, 0, 0, t0 + 4);
    CHECK(f.core.take_outgoing().empty());
    CHECK(f.core.counters().replayed == replayed_before + 1);
    // And it still gets its PONGs.
    f.deliver(1, ping_msg{79}, honest, t0 + 5);
    auto out = f.core.take_outgoing();
    CHECK(std::count_if(out.begin(), out.end(), [&](const auto& o) { return o.to == honest; }) ==
          1);
}
