// probe_frame: a relayed pair's sealed in-band probe. It must look like WireGuard transport data
// (type 4, zero reserved bytes, 96 bytes), open only with the pair's key in the right direction,
// and fail on every tampered byte, a reflected frame, another pair's key and a wrong index.
#include <doctest/doctest.h>

#include <array>
#include <vector>

#include "meshd/core/node_identity.hpp"
#include "meshd/core/pair_key.hpp"
#include "meshd/core/probe_frame.hpp"

using namespace mw::meshd;

namespace {

node_identity ident(uint8_t n) {
    identity_seed s{};
    s.fill(n);
    return node_identity::from_seed(s);
}

probe_keys keys_of(const node_identity& self, const node_identity& peer, const char* psk) {
    std::vector<uint8_t> p(psk, psk + std::char_traits<char>::length(psk));
    auto ck = cluster_key(p, pair_key_label);
    auto priv = self.wg_private_key();
    auto k = pair_key(ck, priv, self.wg_public_key(), peer.wg_public_key()).value();
    priv.wipe();
    return probe_keys::derive(k, self.id(), peer.id());
}

}  // namespace

TEST_CASE("probe frame: WireGuard-shaped, opens at the peer only, both directions") {
    auto a = ident(1), b = ident(2), c = ident(3);
    const char* psk = "a cluster psk of at least thirty-two bytes!!";
    auto ka = keys_of(a, b, psk), kb = keys_of(b, a, psk);
    CHECK(ka.send == kb.recv);
    CHECK(ka.recv == kb.send);
    CHECK(ka.send != ka.recv);
    CHECK(ka.send_index == kb.recv_index);
    CHECK(ka.recv_index == kb.send_index);

    probe_frame_body body{probe_frame_kind::ping, 0x1122334455667788ull, 123456, 1500};
    auto f = seal_probe(ka, 42, body);
    CHECK(f.size() == 96);
    CHECK(f[0] == 4);
    CHECK(f[1] == 0);
    CHECK(f[2] == 0);
    CHECK(f[3] == 0);
    CHECK(peek_probe_index(f) == kb.recv_index);
    auto opened = open_probe(kb, f);
    REQUIRE(opened);
    CHECK(*opened == body);
    // The other direction: a PONG from b opens at a.
    probe_frame_body pong{probe_frame_kind::pong, body.request_id, 7, probe_frame_body::no_reading};
    auto g = seal_probe(kb, 43, pong);
    auto og = open_probe(ka, g);
    REQUIRE(og);
    CHECK(*og == pong);

    // Reflected back to its sender: not its index, and not its key either.
    CHECK(!open_probe(ka, f));
    probe_keys ka_forced = ka;
    ka_forced.recv_index = kb.recv_index;
    CHECK(!open_probe(ka_forced, f));
    // Another node of the same cluster (the PSK alone) cannot open or forge it.
    auto kc = keys_of(c, b, psk);
    CHECK(!open_probe(kc, f));
    auto forged = seal_probe(kc, 42, body);
    CHECK(!open_probe(kb, forged));
    // Another cluster: different keys.
    auto kb_other = keys_of(b, a, "another cluster psk, thirty-two bytes long!!");
    CHECK(!open_probe(kb_other, f));
}

TEST_CASE("probe frame: every tampered byte and every wrong size fails") {
    auto a = ident(4), b = ident(5);
    const char* psk = "a cluster psk of at least thirty-two bytes!!";
    auto ka = keys_of(a, b, psk), kb = keys_of(b, a, psk);
    auto f = seal_probe(ka, 9, probe_frame_body{probe_frame_kind::ping, 77, 0, 0});
    for (size_t i = 0; i < f.size(); ++i) {
        for (uint8_t bit : {uint8_t(1), uint8_t(0x80)}) {
            auto t = f;
            t[i] ^= bit;
            CAPTURE(i);
            CHECK(!open_probe(kb, t));
        }
    }
    // One byte more has a padded probe's shape, but does not authenticate.
    std::vector<uint8_t> longer(f.begin(), f.end());
    longer.push_back(0);
    CHECK(peek_probe_index(longer) == kb.recv_index);
    CHECK(!open_probe(kb, longer));
    std::vector<uint8_t> huge(f.begin(), f.end());
    huge.resize(probe_overhead + probe_max_plaintext_size + 1);
    CHECK(!peek_probe_index(huge));
    CHECK(!open_probe(kb, huge));
    CHECK(!peek_probe_index(std::span(f).first(95)));
    CHECK(!peek_probe_index(std::span(f).first(0)));
    // Random counters: two frames of the same body differ everywhere after the index.
    auto g = seal_probe(ka, 10, probe_frame_body{probe_frame_kind::ping, 77, 0, 0});
    CHECK(std::vector<uint8_t>(f.begin() + 16, f.end()) !=
          std::vector<uint8_t>(g.begin() + 16, g.end()));
}

TEST_CASE("probe frame: padded to a size (path MTU probes), the size comes back") {
    auto a = ident(6), b = ident(7);
    const char* psk = "a cluster psk of at least thirty-two bytes!!";
    auto ka = keys_of(a, b, psk), kb = keys_of(b, a, psk);
    for (uint32_t size :
         {64u, 65u, 1280u, 1308u, 1408u, 1420u, 1440u, uint32_t(probe_max_plaintext_size)}) {
        CAPTURE(size);
        probe_frame_body body{probe_frame_kind::ping, 99, 5, 6};
        body.size = size;
        auto f = seal_probe(ka, 11, body);
        // What WireGuard sends for an inner packet of `size` bytes.
        CHECK(f.size() == size + 32);
        CHECK(peek_probe_index(f) == kb.recv_index);
        auto o = open_probe(kb, f);
        REQUIRE(o);
        CHECK(*o == body);
        // Cut short or grown by a byte, it does not authenticate.
        std::vector<uint8_t> cut(f.begin(), f.end() - 1);
        CHECK(!open_probe(kb, cut));
        auto grown = f;
        grown.push_back(0);
        CHECK(!open_probe(kb, grown));
    }
    // Smaller than a plain probe, or beyond the largest: clamped.
    probe_frame_body small{probe_frame_kind::ping, 1, 0, 0};
    small.size = 10;
    CHECK(seal_probe(ka, 12, small).size() == probe_frame_size);
    probe_frame_body big{probe_frame_kind::ping, 1, 0, 0};
    big.size = 100000;
    CHECK(seal_probe(ka, 13, big).size() == probe_overhead + probe_max_plaintext_size);
}
