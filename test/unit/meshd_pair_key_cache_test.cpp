// pair_key_cache: the cached key equals pair_key(); both ends agree; bounded, least recently used
// first out; low-order and own keys refused.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "meshd/core/pair_key_cache.hpp"
#include "meshd/core/psk_sealer.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;
using meshd_test::identity;

namespace {

symmetric_key cluster() {
    std::string psk = "pair key cache test psk, 32 bytes+";
    return cluster_key(std::vector<uint8_t>(psk.begin(), psk.end()), pair_key_label);
}

}  // namespace

TEST_CASE("pair_key_cache: matches pair_key, both ends agree, cached") {
    auto a = identity(1), b = identity(2);
    pair_key_cache ca(cluster(), a.wg_private_key(), a.wg_public_key());
    pair_key_cache cb(cluster(), b.wg_private_key(), b.wg_public_key());
    const symmetric_key kab = *ca.key_for(b.wg_public_key()).value();
    CHECK(kab == *cb.key_for(a.wg_public_key()).value());
    CHECK(kab ==
          pair_key(cluster(), a.wg_private_key(), a.wg_public_key(), b.wg_public_key()).value());
    CHECK(*ca.key_for(b.wg_public_key()).value() == kab);
    CHECK(ca.computed() == 1);
    CHECK(ca.public_key_of(b.id()) == b.wg_public_key());
    CHECK_FALSE(ca.public_key_of(identity(3).id()));
    // A third node's key with a differs.
    CHECK(*ca.key_for(identity(3).wg_public_key()).value() != kab);
}

TEST_CASE("pair_key_cache: bounded, least recently used evicted") {
    auto a = identity(1);
    pair_key_cache c(cluster(), a.wg_private_key(), a.wg_public_key(), 2);
    REQUIRE(c.key_for(identity(2).wg_public_key()).ok());
    REQUIRE(c.key_for(identity(3).wg_public_key()).ok());
    REQUIRE(c.key_for(identity(2).wg_public_key()).ok());  // 2 used last
    REQUIRE(c.key_for(identity(4).wg_public_key()).ok());  // evicts 3
    CHECK(c.size() == 2);
    CHECK(c.public_key_of(identity(2).id()));
    CHECK_FALSE(c.public_key_of(identity(3).id()));
    CHECK(c.public_key_of(identity(4).id()));
    CHECK(c.computed() == 3);
    REQUIRE(c.key_for(identity(3).wg_public_key()).ok());  // computed again
    CHECK(c.computed() == 4);
}

TEST_CASE("pair_key_cache: low-order points and our own key are refused") {
    auto a = identity(1);
    pair_key_cache c(cluster(), a.wg_private_key(), a.wg_public_key());
    CHECK(c.key_for(mw::wg_key{}).err().is(mw::errc::protocol_error));  // the zero point
    CHECK(c.key_for(a.wg_public_key()).err().is(mw::errc::protocol_error));
    CHECK(c.size() == 0);
}
