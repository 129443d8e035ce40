// control_channel: the receive order (frame, AEAD, decode, replay, HELLO record) with one counter
// per drop reason, and the send side's strictly increasing timestamps.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "meshd/core/control_channel.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;
using meshd_test::t0;

namespace {

psk_sealer sealer(const std::string& psk = "the cluster psk for channel tests") {
    return psk_sealer::create(std::vector<uint8_t>(psk.begin(), psk.end())).value();
}

aead_nonce nonce(uint8_t n) {
    aead_nonce x{};
    x.fill(n);
    return x;
}

hello_msg hello_with(const peer_record& r) {
    hello_msg h;
    h.record = r;
    return h;
}

}  // namespace

TEST_CASE("control_channel: send and receive, replay dropped and counted") {
    control_channel a(meshd_test::identity(1).id(), sealer());
    control_channel b(meshd_test::identity(2).id(), sealer());
    auto d = a.send(ping_msg{.seq = 7}, nonce(1), t0);
    REQUIRE(d.ok());
    auto m = b.receive(*d, t0 + 3);
    REQUIRE(m.ok());
    CHECK(m->sender == a.self());
    CHECK(m->timestamp_us == t0 * 1000);  // microseconds on the wire
    CHECK(std::get<ping_msg>(m->body).seq == 7);
    CHECK(b.counters().accepted == 1);

    auto again = b.receive(*d, t0 + 4);
    REQUIRE_FALSE(again.ok());
    CHECK(again.err().is(mw::errc::protocol_error));
    CHECK(b.counters().replayed == 1);
    CHECK(b.counters().accepted == 1);

    // Two sends in the same millisecond get distinct timestamps and both pass.
    auto d1 = a.send(ping_msg{.seq = 8}, nonce(2), t0);
    auto d2 = a.send(ping_msg{.seq = 9}, nonce(3), t0);
    auto m1 = b.receive(d1.value(), t0);
    auto m2 = b.receive(d2.value(), t0);
    REQUIRE(m1.ok());
    REQUIRE(m2.ok());
    CHECK(m1->timestamp_us < m2->timestamp_us);
    CHECK(b.counters().accepted == 3);
}

TEST_CASE("control_channel: wrong PSK, garbage, RELAY_DATA, stale and future") {
    control_channel a(meshd_test::identity(1).id(), sealer());
    control_channel b(meshd_test::identity(2).id(), sealer());
    control_channel intruder(meshd_test::identity(3).id(), sealer("not the cluster psk at all"));

    auto bad = intruder.send(ping_msg{}, nonce(1), t0).value();
    CHECK(b.receive(bad, t0).err().is(mw::errc::protocol_error));
    CHECK(b.counters().auth_failed == 1);

    CHECK_FALSE(b.receive(std::vector<uint8_t>{1, 2, 3}, t0).ok());
    CHECK_FALSE(b.receive(std::vector<uint8_t>{'M', 'W', 1, 3, 0}, t0).ok());  // too short
    std::vector<uint8_t> relay(20);
    write_relay_data_header(5, relay.data());
    CHECK_FALSE(b.receive(relay, t0).ok());
    CHECK(b.counters().not_control == 3);
    CHECK(b.counters().auth_failed == 1);

    auto old = a.send(ping_msg{}, nonce(2), t0).value();
    CHECK(b.receive(old, t0 + 30'001).err().is(mw::errc::timeout));
    CHECK(b.counters().stale == 1);
    auto ahead = a.send(ping_msg{}, nonce(3), t0 + 60'000).value();
    CHECK(b.receive(ahead, t0).err().is(mw::errc::timeout));
    CHECK(b.counters().future == 1);
    CHECK(b.counters().accepted == 0);
}

TEST_CASE("control_channel: malformed body from a PSK holder is counted") {
    control_channel b(meshd_test::identity(2).id(), sealer());
    std::vector<uint8_t> plain(envelope_size + 3, 0);  // PING needs 8 body bytes
    auto d = sealer().seal(static_cast<uint8_t>(msg_type::ping), plain, nonce(1));
    CHECK(b.receive(d, t0).err().is(mw::errc::parse_error));
    CHECK(b.counters().malformed == 1);
}

TEST_CASE("control_channel: HELLO must carry the sender's own valid record") {
    control_channel a(meshd_test::identity(1).id(), sealer());
    control_channel b(meshd_test::identity(2).id(), sealer());
    auto own = a.send(hello_with(meshd_test::record(1)), nonce(1), t0).value();
    CHECK(b.receive(own, t0).ok());

    auto others = a.send(hello_with(meshd_test::record(5)), nonce(2), t0).value();
    CHECK(b.receive(others, t0).err().is(mw::errc::protocol_error));
    auto expired = a.send(hello_with(meshd_test::record(1, 2, t0 - 1)), nonce(3), t0).value();
    CHECK(b.receive(expired, t0).err().is(mw::errc::timeout));
    auto tampered_rec = meshd_test::record(1, 3);
    tampered_rec.endpoints[0].port = 1;
    auto tampered = a.send(hello_with(tampered_rec), nonce(4), t0).value();
    CHECK_FALSE(b.receive(tampered, t0).ok());
    CHECK(b.counters().bad_record == 3);
    CHECK(b.counters().accepted == 1);
}

TEST_CASE("control_channel: bounded sender table refuses, then recovers after the window") {
    control_channel b(meshd_test::identity(9).id(), sealer(),
                      replay_config{.window_ms = 1000, .per_sender = 4, .max_senders = 1});
    control_channel a1(meshd_test::identity(1).id(), sealer());
    control_channel a2(meshd_test::identity(2).id(), sealer());
    CHECK(b.receive(a1.send(ping_msg{}, nonce(1), t0).value(), t0).ok());
    CHECK(b.receive(a2.send(ping_msg{}, nonce(2), t0).value(), t0).err().is(mw::errc::exhausted));
    CHECK(b.counters().table_full == 1);
    b.expire(t0 + 5000);
    CHECK(b.receive(a2.send(ping_msg{}, nonce(3), t0 + 5000).value(), t0 + 5000).ok());
}
