// psk_sealer: XChaCha20-Poly1305 under a BLAKE2b-derived key. Every tampered byte, a wrong PSK,
// a swapped type byte and truncation must fail to open; the raw PSK must not be the AEAD key.
#include <doctest/doctest.h>
#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "meshd/core/node_identity.hpp"
#include "meshd/core/pair_key.hpp"
#include "meshd/core/psk_sealer.hpp"

using namespace mw::meshd;

namespace {

std::vector<uint8_t> bytes_of(const std::string& s) {
    return {s.begin(), s.end()};
}

const std::vector<uint8_t> psk = bytes_of("correct horse battery staple 2026");

aead_nonce nonce(uint8_t n) {
    aead_nonce x{};
    x.fill(n);
    return x;
}

}  // namespace

TEST_CASE("psk_sealer: round trip and layout") {
    auto s = psk_sealer::create(psk);
    REQUIRE(s.ok());
    auto plain = bytes_of("hello relay");
    auto d = s->seal(0x03, plain, nonce(7));
    REQUIRE(d.size() == plain.size() + psk_sealer::overhead);
    CHECK(d[0] == 'M');
    CHECK(d[1] == 'W');
    CHECK(d[2] == 2);
    CHECK(d[3] == 0x03);
    CHECK(std::memcmp(d.data() + 4, nonce(7).data(), 24) == 0);
    // Encrypted: the plaintext does not appear in the datagram.
    CHECK(std::search(d.begin(), d.end(), plain.begin(), plain.end()) == d.end());
    auto o = s->open(d);
    REQUIRE(o.ok());
    CHECK(o->type == 0x03);
    CHECK(o->nonce == nonce(7));
    CHECK(o->plaintext == plain);
    // Same plaintext, different nonce: different ciphertext.
    CHECK(s->seal(0x03, plain, nonce(8)) != d);
}

TEST_CASE("psk_sealer: key is BLAKE2b(key=PSK, \"meshwire control v2\"), not the PSK") {
    auto s = psk_sealer::create(psk).value();
    auto plain = bytes_of("x");
    auto d = s.seal(0x01, plain, nonce(1));
    std::array<uint8_t, 32> key{};
    const char* label = "meshwire control v2";
    crypto_generichash(key.data(), key.size(), reinterpret_cast<const uint8_t*>(label),
                       std::strlen(label), psk.data(), psk.size());
    std::vector<uint8_t> out(d.size());
    unsigned long long mlen = 0;
    CHECK(crypto_aead_xchacha20poly1305_ietf_decrypt(out.data(), &mlen, nullptr, d.data() + 28,
                                                     d.size() - 28, d.data(), 4, d.data() + 4,
                                                     key.data()) == 0);
    CHECK(mlen == 1);
    CHECK(out[0] == 'x');
    // The first 32 PSK bytes used directly as the key must not work.
    CHECK(crypto_aead_xchacha20poly1305_ietf_decrypt(out.data(), &mlen, nullptr, d.data() + 28,
                                                     d.size() - 28, d.data(), 4, d.data() + 4,
                                                     psk.data()) != 0);
}

TEST_CASE("psk_sealer: wrong PSK, short PSK, long PSK") {
    auto a = psk_sealer::create(psk).value();
    auto other = bytes_of("correct horse battery staple 2027");
    auto b = psk_sealer::create(other).value();
    auto d = a.seal(0x02, bytes_of("records"), nonce(3));
    auto o = b.open(d);
    REQUIRE_FALSE(o.ok());
    CHECK(o.err().is(mw::errc::protocol_error));

    CHECK(psk_sealer::create(bytes_of("short")).err().is(mw::errc::invalid_argument));
    CHECK_FALSE(psk_sealer::create({}).ok());
    CHECK(psk_sealer::create(bytes_of("0123456789abcdef")).ok());  // exactly the minimum

    // PSKs longer than BLAKE2b's 64-byte key limit work and differ by their tail.
    std::vector<uint8_t> long1(200, 'k'), long2(200, 'k');
    long2.back() = 'j';
    auto l1 = psk_sealer::create(long1).value();
    auto l2 = psk_sealer::create(long2).value();
    auto dl = l1.seal(0x02, bytes_of("z"), nonce(4));
    CHECK(l1.open(dl).ok());
    CHECK_FALSE(l2.open(dl).ok());
}

TEST_CASE("psk_sealer: every flipped bit position fails to open") {
    auto s = psk_sealer::create(psk).value();
    auto d = s.seal(0x04, bytes_of("pong body of some length"), nonce(9));
    for (size_t i = 0; i < d.size(); ++i) {
        auto t = d;
        t[i] ^= 0x01;
        CHECK_FALSE(s.open(t).ok());
    }
    // Swapping in another type byte is caught by the associated data.
    auto t = d;
    t[3] = 0x05;
    CHECK(s.open(t).err().is(mw::errc::protocol_error));
}

TEST_CASE("psk_sealer: truncated, empty and foreign datagrams") {
    auto s = psk_sealer::create(psk).value();
    auto d = s.seal(0x01, bytes_of("abc"), nonce(2));
    for (size_t n = 0; n < d.size(); ++n) {
        CHECK_FALSE(s.open(std::span<const uint8_t>(d.data(), n)).ok());
    }
    auto wrong_version = d;
    wrong_version[2] = 3;
    CHECK(s.open(wrong_version).err().is(mw::errc::parse_error));
    wrong_version[2] = 1;  // the previous protocol: told apart for the old_version counter
    CHECK(s.open(wrong_version).err().is(mw::errc::unsupported));
    auto wrong_magic = d;
    wrong_magic[0] = 'X';
    CHECK(s.open(wrong_magic).err().is(mw::errc::parse_error));
    // An empty plaintext is legal for the sealer (the codec never produces one).
    auto empty = s.seal(0x03, {}, nonce(5));
    CHECK(empty.size() == psk_sealer::overhead);
    auto o = s.open(empty);
    REQUIRE(o.ok());
    CHECK(o->plaintext.empty());
}

TEST_CASE("pair_key: both ends agree; a third key, another PSK or a low-order point do not") {
    auto ident = [](uint8_t b) {
        identity_seed s{};
        s.fill(b);
        return node_identity::from_seed(s);
    };
    const auto a = ident(1), b = ident(2), c = ident(3);
    const auto k1 = cluster_key(bytes_of("a cluster psk of at least 32 bytes!!"), pair_key_label);
    const auto k2 = cluster_key(bytes_of("another cluster psk, 32 bytes long."), pair_key_label);
    auto ab = pair_key(k1, a.wg_private_key(), a.wg_public_key(), b.wg_public_key());
    auto ba = pair_key(k1, b.wg_private_key(), b.wg_public_key(), a.wg_public_key());
    REQUIRE(ab);
    REQUIRE(ba);
    CHECK(*ab == *ba);
    // c claims to be a, talking to b: it has a's public key but not its private key.
    auto cb = pair_key(k1, c.wg_private_key(), a.wg_public_key(), b.wg_public_key());
    REQUIRE(cb);
    CHECK(*cb != *ab);
    auto ab2 = pair_key(k2, a.wg_private_key(), a.wg_public_key(), b.wg_public_key());
    REQUIRE(ab2);
    CHECK(*ab2 != *ab);  // the cluster key is mixed in
    CHECK(cluster_key(bytes_of("x"), pair_key_label) != cluster_key(bytes_of("x"), "other"));
    // The all-zero public key is of low order: the shared secret would be known to everyone.
    auto zero = pair_key(k1, a.wg_private_key(), a.wg_public_key(), mw::wg_key{});
    CHECK_FALSE(zero);
}

TEST_CASE("psk_sealer: accepted keys are tried in order, at most two, duplicates kept once") {
    const auto k1 = bytes_of("first cluster key of the rotation test");
    const auto k2 = bytes_of("second cluster key of the rotation test");
    const auto k3 = bytes_of("third cluster key of the rotation test!");
    const auto k4 = bytes_of("fourth cluster key of the rotation test");
    auto seal1 = psk_sealer::create(k1).value();
    auto d = seal1.seal(7, bytes_of("hello"), nonce(1));

    auto only2 = psk_sealer::create(k2).value();
    CHECK_FALSE(only2.open(d).ok());
    auto two_then_one = psk_sealer::create(k2, {k1}).value();
    auto o = two_then_one.open(d);
    REQUIRE(o.ok());
    CHECK(o->slot == 1);
    CHECK(o->plaintext == bytes_of("hello"));
    // It seals under its first key only.
    auto back = two_then_one.seal(7, bytes_of("x"), nonce(2));
    CHECK_FALSE(seal1.open(back).ok());
    CHECK(only2.open(back).ok());
    auto one_then_two = psk_sealer::create(k1, {k2}).value();
    CHECK(one_then_two.open(d)->slot == 0);

    CHECK(psk_sealer::create(k1, {k1, k2}).value().slots() == 2);
    CHECK(psk_sealer::create(k1, {k2, k3}).value().slots() == 3);
    auto too_many = psk_sealer::create(k1, {k2, k3, k4});
    REQUIRE_FALSE(too_many.ok());
    CHECK(too_many.err().message.find("at most 2") != std::string::npos);
    CHECK_FALSE(psk_sealer::create(k1, {bytes_of("short")}).ok());

    // Fingerprints: stable, distinct, never the key.
    CHECK(one_then_two.fingerprint(0) == psk_sealer::fingerprint_of(k1));
    CHECK(one_then_two.fingerprint(1) == two_then_one.fingerprint(0));
    CHECK(one_then_two.fingerprint(0) != one_then_two.fingerprint(1));
    CHECK(one_then_two.fingerprint(0).size() == 8);
}

TEST_CASE("psk_sealer: the dropped key is kept as a verifier only") {
    const auto k1 = bytes_of("first cluster key of the rotation test");
    const auto k2 = bytes_of("second cluster key of the rotation test");
    const auto k3 = bytes_of("third cluster key of the rotation test!");
    auto before = psk_sealer::create(k2, {k1}).value();
    auto after = psk_sealer::create(k2).value();
    after.retire_from(before);
    CHECK(after.retired_fingerprint() == psk_sealer::fingerprint_of(k1));
    auto old = psk_sealer::create(k1).value().seal(3, bytes_of("late"), nonce(4));
    CHECK_FALSE(after.open(old).ok());  // never accepted
    CHECK(after.sealed_with_retired(old));
    auto other = psk_sealer::create(k3).value().seal(3, bytes_of("noise"), nonce(5));
    CHECK_FALSE(after.sealed_with_retired(other));
    // A later change that drops nothing keeps the verifier; nothing retired: none.
    auto again = psk_sealer::create(k2, {k3}).value();
    again.retire_from(after);
    CHECK(again.retired_fingerprint() == psk_sealer::fingerprint_of(k1));
    CHECK(psk_sealer::create(k2).value().retired_fingerprint().empty());
}
