// control_channel (protocol v2): the receive order (frame, PSK, decode, recipient, pair tag,
// replay, HELLO record) with one counter per drop reason; per-pair authentication of the sender
// (issue 17: a PSK holder must not speak for another node); replay protection by epoch and
// counter, without wall clocks.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "meshd/core/control_channel.hpp"
#include "meshd/core/pair_key.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;
using meshd_test::identity;
using meshd_test::t0;

namespace {

const std::string cluster_psk = "the cluster psk for channel tests";

psk_sealer channel_sealer(const std::string& psk = cluster_psk) {
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

// A channel for identity(n), knowing the keys of identities 1..9 (as records would tell it).
struct node {
    node_identity ident;
    control_channel ch;
    explicit node(uint8_t n, uint64_t epoch = 1000, replay_config rc = {})
        : ident(identity(n)), ch(ident, channel_sealer(), epoch, rc) {
        ch.set_key_source([](const node_id& id) -> std::optional<mw::wg_key> {
            for (uint8_t i = 1; i < 10; ++i) {
                if (identity(i).id() == id) return identity(i).wg_public_key();
            }
            return std::nullopt;
        });
    }
    const node_id& id() const { return ident.id(); }
    std::vector<uint8_t> to(const node& r, message_body b, uint8_t n = 1) {
        return ch.send(std::move(b), r.id(), nonce(n)).value();
    }
};

// What a PSK holder (`attacker`, with its own key pair) can build: any envelope, sealed with the
// PSK, tagged with the key it can compute for `victim_recipient` (its own pair key) - but
// claiming to be `claimed`.
std::vector<uint8_t> forge(const node_identity& attacker, const node_identity& claimed,
                           const node_id& recipient, const mw::wg_key& recipient_key,
                           message_body body, uint64_t epoch, uint64_t counter) {
    auto s = channel_sealer();
    auto priv = attacker.wg_private_key();
    auto k = pair_key(s.pair_cluster_key(), priv, attacker.wg_public_key(), recipient_key).value();
    control_message m;
    m.sender_key = claimed.wg_public_key();
    m.sender = claimed.id();
    m.recipient = recipient;
    m.epoch = epoch;
    m.counter = counter;
    m.body = std::move(body);
    return seal_message(s, k, m, nonce(0x77)).value();
}

}  // namespace

TEST_CASE("control_channel: send and receive, replay dropped and counted") {
    node a(1), b(2);
    auto d = a.to(b, ping_msg{.request_id = 7});
    auto m = b.ch.receive(d, t0 + 3);
    REQUIRE(m.ok());
    CHECK(m->sender == a.id());
    CHECK(m->sender_key == a.ident.wg_public_key());
    CHECK(m->recipient == b.id());
    CHECK(m->epoch == 1000);
    CHECK(m->counter == 0);
    CHECK(std::get<ping_msg>(m->body).request_id == 7);
    CHECK(b.ch.counters().accepted == 1);

    auto again = b.ch.receive(d, t0 + 4);
    REQUIRE_FALSE(again.ok());
    CHECK(again.err().is(mw::errc::protocol_error));
    CHECK(b.ch.counters().replayed == 1);
    CHECK(b.ch.counters().accepted == 1);

    // Counters grow per message; out-of-order delivery within the window is fine.
    auto d1 = a.to(b, ping_msg{.request_id = 8}, 2);
    auto d2 = a.to(b, ping_msg{.request_id = 9}, 3);
    auto m2 = b.ch.receive(d2, t0);
    auto m1 = b.ch.receive(d1, t0);
    REQUIRE(m1.ok());
    REQUIRE(m2.ok());
    CHECK(m1->counter + 1 == m2->counter);
    CHECK(b.ch.counters().accepted == 3);
    CHECK_FALSE(b.ch.receive(d1, t0).ok());
    CHECK(b.ch.counters().replayed == 2);
}

TEST_CASE("control_channel: a PSK holder cannot send in another node's name (forged sender)") {
    node a(1), b(2);
    auto attacker = identity(3);
    // v1 accepted this: the sender ID was covered only by the PSK every member holds.
    relay_session_request_msg req;
    req.request_id = 1;
    req.session_id = 42;
    req.from = a.id();
    req.to = identity(4).id();
    auto forged = forge(attacker, a.ident, b.id(), b.ident.wg_public_key(), req, 1u << 30, 0);
    auto r = b.ch.receive(forged, t0);
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().is(mw::errc::protocol_error));
    CHECK(b.ch.counters().pair_auth_failed == 1);
    CHECK(b.ch.counters().accepted == 0);
    // Every message type, and a tag made with the attacker's own pair key with the claimed sender.
    for (message_body body :
         {message_body(ping_msg{}),
          message_body(pong_msg{.observed = *mw::wg_endpoint::parse("192.0.2.1:51821")}),
          message_body(relay_session_reject_msg{}), message_body(dialback_probe_msg{})}) {
        CHECK_FALSE(
            b.ch.receive(forge(attacker, a.ident, b.id(), a.ident.wg_public_key(), body, 5, 0), t0)
                .ok());
    }
    CHECK(b.ch.counters().pair_auth_failed == 5);
    // The forged far-ahead epoch did not move a's replay state: a's real messages still pass.
    CHECK(b.ch.receive(a.to(b, ping_msg{.request_id = 1}), t0).ok());
    // The attacker speaking as itself is fine (it is a member): only its own name is its own.
    node c(3);
    CHECK(b.ch.receive(c.to(b, ping_msg{}), t0).ok());
}

TEST_CASE("control_channel: a message for another node is refused (replay or reflection)") {
    node a(1), b(2), c(3);
    // A captured HELLO from a to b, replayed to c: v1 answered it with every record c holds.
    auto d = a.to(b, hello_with(meshd_test::record(1)));
    auto r = c.ch.receive(d, t0);
    REQUIRE_FALSE(r.ok());
    CHECK(c.ch.counters().wrong_recipient == 1);
    CHECK(c.ch.counters().accepted == 0);
    CHECK(b.ch.receive(d, t0).ok());
    // Only a PING may name no one; the others cannot even be encoded that way.
    CHECK(a.ch.send(hello_with(meshd_test::record(1)), node_id{}, nonce(3))
              .err()
              .is(mw::errc::invalid_argument));
}

TEST_CASE("control_channel: epochs: a restart resets, an older epoch is refused") {
    node a(1, 1000), b(2);
    auto old1 = a.to(b, ping_msg{.request_id = 1});
    auto old2 = a.to(b, ping_msg{.request_id = 2});
    REQUIRE(b.ch.receive(old1, t0).ok());
    a.ch.set_epoch(1001);  // restarted: the counter starts at 0 again
    auto fresh = a.to(b, ping_msg{.request_id = 3});
    auto m = b.ch.receive(fresh, t0);
    REQUIRE(m.ok());
    CHECK(m->counter == 0);
    CHECK(b.ch.receive(a.to(b, ping_msg{.request_id = 4}), t0).ok());
    // The previous run's messages, even one never delivered, are refused now.
    auto r = b.ch.receive(old2, t0);
    REQUIRE_FALSE(r.ok());
    CHECK(b.ch.counters().stale_epoch == 1);
    CHECK(b.ch.receive(old1, t0).err().is(mw::errc::protocol_error));
    CHECK(b.ch.counters().stale_epoch == 2);
}

TEST_CASE("control_channel: no wall clock: nodes with clocks an hour apart still talk") {
    // v1 refused messages stamped more than 30 s from the receiver's clock (stale/future).
    const uint64_t hour = 3'600'000;
    node a(1, (t0 + hour) / 1000), b(2, (t0 - hour) / 1000);
    auto ab = a.to(b, ping_msg{.request_id = 1});
    auto ba =
        b.to(a, pong_msg{.request_id = 1, .observed = *mw::wg_endpoint::parse("192.0.2.1:9")});
    CHECK(b.ch.receive(ab, t0 - hour).ok());
    CHECK(a.ch.receive(ba, t0 + hour).ok());
    // Hours later, a message sent long ago but never seen is still judged by its counter only.
    auto late = a.to(b, ping_msg{.request_id = 2});
    CHECK(b.ch.receive(late, t0 + 10 * hour).ok());
}

TEST_CASE("control_channel: a PING to no one: answered, not believed, replay state untouched") {
    node a(1), b(2);
    auto d = a.ch.send(ping_msg{.request_id = 5}, node_id{}, nonce(1)).value();
    auto m = b.ch.receive(d, t0);
    REQUIRE(m.ok());
    CHECK(m->recipient.is_zero());
    CHECK(m->sender == a.id());
    CHECK(b.ch.replay().sender_count() == 0);
    // Anyone with the PSK can make one claiming a (its tag is PSK-keyed): that is why it moves
    // nothing. A forged one with a's key and a far epoch leaves a's real messages passing.
    auto s = channel_sealer();
    control_message f;
    f.sender_key = a.ident.wg_public_key();
    f.sender = a.id();
    f.epoch = UINT64_MAX;
    f.counter = UINT64_MAX;
    f.body = ping_msg{.request_id = 6};
    CHECK(b.ch.receive(seal_message(s, s.anon_key(), f, nonce(2)).value(), t0).ok());
    CHECK(b.ch.replay().sender_count() == 0);
    CHECK(b.ch.receive(a.to(b, ping_msg{.request_id = 7}, 3), t0).ok());
    // The answer names a: b can address it (the key came with the PING) once it learned it.
    b.ch.learn_key(m->sender_key);
    CHECK(a.ch.receive(b.to(a, pong_msg{.request_id = 5,
                                        .observed = *mw::wg_endpoint::parse("192.0.2.1:9")}),
                       t0)
              .ok());
    // A PING to no one with the tag of a pair key is not valid (the anon key is required).
    auto k = pair_key(s.pair_cluster_key(), a.ident.wg_private_key(), a.ident.wg_public_key(),
                      b.ident.wg_public_key())
                 .value();
    f.epoch = 1;
    f.counter = 1;
    CHECK_FALSE(b.ch.receive(seal_message(s, k, f, nonce(4)).value(), t0).ok());
    CHECK(b.ch.counters().pair_auth_failed == 1);
}

TEST_CASE("control_channel: wrong PSK, garbage, RELAY_DATA, version 1") {
    node b(2);
    node_identity i3 = identity(3);
    control_channel intruder(i3, channel_sealer("not the cluster psk at all"), 5);
    intruder.set_key_source([&](const node_id&) { return b.ident.wg_public_key(); });
    auto bad = intruder.send(ping_msg{}, b.id(), nonce(1)).value();
    CHECK(b.ch.receive(bad, t0).err().is(mw::errc::protocol_error));
    CHECK(b.ch.counters().auth_failed == 1);

    CHECK_FALSE(b.ch.receive(std::vector<uint8_t>{1, 2, 3}, t0).ok());
    CHECK_FALSE(b.ch.receive(std::vector<uint8_t>{'M', 'W', 2, 3, 0}, t0).ok());  // too short
    std::vector<uint8_t> relay(20);
    write_relay_data_header(5, relay.data());
    CHECK_FALSE(b.ch.receive(relay, t0).ok());
    CHECK(b.ch.counters().not_control == 3);
    // A version-1 datagram (a node not upgraded yet) is counted apart.
    auto v1 = bad;
    v1[2] = 1;
    CHECK(b.ch.receive(v1, t0).err().is(mw::errc::unsupported));
    CHECK(b.ch.counters().old_version == 1);
    CHECK(b.ch.counters().auth_failed == 1);
    CHECK(b.ch.counters().accepted == 0);
}

TEST_CASE("control_channel: malformed body from a PSK holder is counted") {
    node b(2);
    std::vector<uint8_t> plain(envelope_size + 3 + pair_tag_size, 0);  // PING needs 43 body bytes
    auto d = channel_sealer().seal(static_cast<uint8_t>(msg_type::ping), plain, nonce(1));
    CHECK(b.ch.receive(d, t0).err().is(mw::errc::parse_error));
    CHECK(b.ch.counters().malformed == 1);
}

TEST_CASE("control_channel: HELLO must carry the sender's own valid record") {
    node a(1), b(2);
    CHECK(b.ch.receive(a.to(b, hello_with(meshd_test::record(1)), 1), t0).ok());
    auto others = a.to(b, hello_with(meshd_test::record(5)), 2);
    CHECK(b.ch.receive(others, t0).err().is(mw::errc::protocol_error));
    // No clock is compared: a record's lifetime (1 ms here) counts from its receipt, in the
    // record store, so the channel takes it a day after "now" as at any other time.
    auto short_lived = a.to(b, hello_with(meshd_test::record(1, 2, 1)), 3);
    CHECK(b.ch.receive(short_lived, t0 + 86'400'000).ok());
    auto tampered_rec = meshd_test::record(1, 3);
    tampered_rec.endpoints[0].port = 1;
    CHECK_FALSE(b.ch.receive(a.to(b, hello_with(tampered_rec), 4), t0).ok());
    CHECK(b.ch.counters().bad_record == 2);
    CHECK(b.ch.counters().accepted == 2);
}

TEST_CASE("control_channel: full sender table replaces the least recently heard sender") {
    node b(9, 1, replay_config{.max_senders = 1});
    node a1(1), a2(2);
    auto first = a1.to(b, ping_msg{});
    CHECK(b.ch.receive(first, t0).ok());
    CHECK(b.ch.receive(a2.to(b, ping_msg{}), t0).ok());  // never refused: a1 is forgotten
    CHECK(b.ch.replay().sender_count() == 1);
    CHECK(b.ch.replay().replaced() == 1);
    // The documented cost: a1's old message passes once more (only a1 could have tagged it).
    CHECK(b.ch.receive(first, t0).ok());
}

TEST_CASE("control_channel: a recipient whose key is unknown cannot be sent to") {
    node_identity i1 = identity(1);
    control_channel a(i1, channel_sealer(), 1);
    auto r = a.send(ping_msg{}, identity(2).id(), nonce(1));
    CHECK(r.err().is(mw::errc::not_found));
    CHECK(a.send(ping_msg{}, node_id{}, nonce(1)).ok());  // a PING to no one needs no key
    a.learn_key(identity(2).wg_public_key());
    CHECK(a.send(ping_msg{}, identity(2).id(), nonce(1)).ok());
    CHECK(a.keys().computed() == 1);
    CHECK(a.send(pong_msg{.observed = *mw::wg_endpoint::parse("192.0.2.1:9")}, identity(2).id(),
                 nonce(1))
              .ok());
    CHECK(a.keys().computed() == 1);  // cached
}

TEST_CASE("control_channel: a refused sender (revoked, not on a Node) costs no key and no slot") {
    node b(9);
    node listed(1), unlisted(2);
    // As node_core sets it under kubernetes.requireNode: only node 1 is carried by a Node.
    b.ch.set_refusal([&](const node_id& id) { return id == unlisted.id(); });
    const auto computed = b.ch.keys().computed();
    for (uint8_t i = 1; i <= 50; ++i) {
        auto r = b.ch.receive(unlisted.to(b, ping_msg{.request_id = i}, i), t0);
        REQUIRE_FALSE(r.ok());
        CHECK(r.err().is(mw::errc::protocol_error));
    }
    CHECK(b.ch.counters().revoked == 50);
    CHECK(b.ch.keys().computed() == computed);  // no X25519 for it
    CHECK(b.ch.replay().sender_count() == 0);   // no replay slot, not even a quarantined one
    CHECK(b.ch.counters().accepted == 0);
    // Its anonymous PING (no recipient) is refused too: nothing is answered.
    CHECK_FALSE(b.ch.receive(unlisted.ch.send(ping_msg{}, node_id{}, nonce(3)).value(), t0).ok());
    CHECK(b.ch.counters().revoked == 51);
    // A listed node is untouched.
    CHECK(b.ch.receive(listed.to(b, ping_msg{}), t0).ok());
    CHECK(b.ch.replay().sender_count() == 1);
    // Its Node appears (the predicate follows the API): accepted from then on.
    b.ch.set_refusal([](const node_id&) { return false; });
    CHECK(b.ch.receive(unlisted.to(b, ping_msg{}, 99), t0).ok());
}

// Key roll (issue 14 §2): psk.path seals, psk.acceptPaths only open; the pair tag is checked
// under the key that opened the datagram; a node left on a dropped key is refused and counted.
TEST_CASE("control_channel: key roll: accepted keys open, seal stays, a dropped key is refused") {
    const std::string k_old = "the old cluster psk for the roll test";
    const std::string k_new = "the new cluster psk for the roll test";
    auto bytes = [](const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); };
    auto keys = [&](const std::string& seal, std::vector<std::string> acc) {
        std::vector<std::vector<uint8_t>> store;
        for (auto& a : acc) store.push_back(bytes(a));
        std::vector<std::span<const uint8_t>> spans(store.begin(), store.end());
        return psk_sealer::create(bytes(seal), spans).value();
    };
    node a(1), b(2), c(3);
    a.ch.set_sealer(keys(k_old, {}));
    b.ch.set_sealer(keys(k_old, {k_new}));  // step 1: the new key accepted
    c.ch.set_sealer(keys(k_new, {k_old}));  // step 2: seals with the new key
    CHECK(c.ch.sealer().fingerprint(0) == b.ch.sealer().fingerprint(1));

    // c (new) -> b (old, new accepted): opened by the accepted slot, pair tag under it.
    auto m = b.ch.receive(c.to(b, ping_msg{.request_id = 1}), t0);
    REQUIRE(m.ok());
    CHECK(b.ch.counters().opened_accept == 1);
    CHECK(b.ch.counters().opened_seal == 0);
    // b answers under its own sealing key (old): c accepts it in its accepted slot.
    REQUIRE(c.ch.receive(b.to(c, ping_msg{.request_id = 1}), t0).ok());
    CHECK(c.ch.counters().opened_accept == 1);
    // a (old only) -> c: accepted too; c -> a is not (a never took the new key: skipped step 1).
    REQUIRE(c.ch.receive(a.to(c, ping_msg{.request_id = 2}), t0).ok());
    auto to_a = a.ch.receive(c.to(a, ping_msg{.request_id = 3}, 2), t0);
    CHECK_FALSE(to_a.ok());
    CHECK(a.ch.counters().auth_failed == 1);
    CHECK(a.ch.counters().retired_key == 0);  // not a key a ever had

    // Step 3 on c: the old key dropped. a, left on the old key, is refused: counted as retired.
    c.ch.set_sealer(keys(k_new, {}));
    CHECK(c.ch.sealer().retired_fingerprint() == a.ch.sealer().fingerprint(0));
    const auto accepted = c.ch.counters().accepted;
    auto refused = c.ch.receive(a.to(c, ping_msg{.request_id = 4}, 3), t0);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.err().message.find("retired cluster key") != std::string::npos);
    CHECK(c.ch.counters().retired_key == 1);
    CHECK(c.ch.counters().auth_failed == 1);
    CHECK(c.ch.counters().accepted == accepted);
    // Replay state survived the key change: b's next message is still accepted, its old one not.
    auto from_b = b.to(c, ping_msg{.request_id = 5}, 4);
    CHECK_FALSE(c.ch.receive(from_b, t0).ok());  // b still seals with the old key: refused
    CHECK(c.ch.counters().retired_key == 2);
    b.ch.set_sealer(keys(k_new, {}));
    REQUIRE(c.ch.receive(b.to(c, ping_msg{.request_id = 6}, 5), t0).ok());
    CHECK(c.ch.counters().opened_seal >= 1);
}
