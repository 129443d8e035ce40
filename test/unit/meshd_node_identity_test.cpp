// node_identity: both keys derive from one seed, the WG key matches wireguard-style X25519, and
// the node ID is BLAKE2b-256 of the WG public key.
#include <doctest/doctest.h>
#include <sodium.h>

#include "meshd/core/node_id.hpp"
#include "meshd/core/node_identity.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;

TEST_CASE("node_identity: deterministic from the seed, distinct across seeds") {
    auto a1 = meshd_test::identity(1);
    auto a2 = meshd_test::identity(1);
    auto b = meshd_test::identity(2);
    CHECK(a1.id() == a2.id());
    CHECK(a1.wg_public_key() == a2.wg_public_key());
    CHECK(a1.signing_key() == a2.signing_key());
    CHECK_FALSE(a1.id() == b.id());
    CHECK_FALSE(a1.wg_public_key() == b.wg_public_key());
    CHECK_FALSE(a1.id().is_zero());
}

TEST_CASE("node_identity: node ID is BLAKE2b-256 of the WG public key") {
    auto a = meshd_test::identity(3);
    std::array<uint8_t, 32> h{};
    crypto_generichash(h.data(), h.size(), a.wg_public_key().data(), 32, nullptr, 0);
    CHECK(a.id().bytes() == h);
    CHECK(node_id::of(a.wg_public_key()) == a.id());
    CHECK(a.id().hex().size() == 64);
    CHECK(a.id().short_hex() == a.id().hex().substr(0, 12));
}

TEST_CASE("node_identity: WG private key is a clamped X25519 key for the WG public key") {
    auto a = meshd_test::identity(4);
    mw::wg_key priv = a.wg_private_key();
    CHECK((priv.data()[0] & 7) == 0);
    CHECK((priv.data()[31] & 128) == 0);
    CHECK((priv.data()[31] & 64) == 64);
    // The same base-point multiplication `wg pubkey` does gives the derived public key.
    CHECK(priv.public_key() == a.wg_public_key());
    CHECK(node_identity::keys_bound(a.wg_public_key(), a.signing_key()));
    CHECK_FALSE(
        node_identity::keys_bound(meshd_test::identity(5).wg_public_key(), a.signing_key()));
    // An invalid (small-order) Ed25519 key binds to nothing.
    signing_public_key zero{};
    CHECK_FALSE(node_identity::keys_bound(a.wg_public_key(), zero));
}

TEST_CASE("node_identity: signatures verify only for the signer and the exact message") {
    auto a = meshd_test::identity(6);
    auto b = meshd_test::identity(7);
    std::vector<uint8_t> msg = {1, 2, 3, 4};
    auto sig = a.sign(msg);
    CHECK(node_identity::verify(a.signing_key(), msg, sig));
    CHECK_FALSE(node_identity::verify(b.signing_key(), msg, sig));
    msg[0] ^= 1;
    CHECK_FALSE(node_identity::verify(a.signing_key(), msg, sig));
    msg[0] ^= 1;
    sig[10] ^= 0x40;
    CHECK_FALSE(node_identity::verify(a.signing_key(), msg, sig));
}
