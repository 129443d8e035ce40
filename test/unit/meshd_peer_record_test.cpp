// peer_record: canonical encoding, signature + key binding checks (no clock), lifetime bounds, and
// rejection of
// truncated, padded and malformed encodings. Forgery attempts must all fail verify().
#include <doctest/doctest.h>

#include <cstring>
#include <string_view>

#include "meshd/core/peer_record.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;
using meshd_test::t0;

TEST_CASE("peer_record: sign, verify, canonical round trip") {
    auto rec = meshd_test::record(1);
    REQUIRE(rec.verify().ok());
    CHECK(rec.id() == meshd_test::identity(1).id());
    CHECK(rec.verify(meshd_test::identity(1).id()).ok());
    auto bytes = rec.encode();
    REQUIRE(bytes.ok());
    CHECK(bytes->size() <= peer_record::max_encoded_size);
    auto back = peer_record::decode(*bytes);
    REQUIRE(back.ok());
    CHECK(back->verify().ok());
    CHECK(back->same_content(rec));
    CHECK(back->sig == rec.sig);
    CHECK(back->name == "node-1");
    REQUIRE(back->pod_cidrs.size() == 2);
    CHECK(back->pod_cidrs[1].str() == "fd00:244:1::/64");
    REQUIRE(back->endpoints.size() == 2);
    CHECK(back->endpoints[1].str() == "[2001:db8::1]:51821");
    CHECK(back->relays == rec.relays);
    CHECK(back->seq == 1);
    CHECK(back->lifetime_ms == 60'000);
    auto again = back->encode();
    REQUIRE(again.ok());
    CHECK(*again == *bytes);
}

TEST_CASE("peer_record: a maximal record fits its declared bound") {
    auto id = meshd_test::identity(9);
    peer_record r;
    r.name = std::string(253, 'n');
    for (int i = 0; i < 8; ++i) {
        r.pod_cidrs.push_back(mw::ip_prefix::parse("fd00:" + std::to_string(i) + "::/64").value());
        r.endpoints.push_back(
            mw::wg_endpoint::parse("[fd01::" + std::to_string(i + 1) + "]:5").value());
        r.relays.push_back(meshd_test::identity(static_cast<uint8_t>(100 + i)).id());
    }
    r.seq = ~0ull;
    r.lifetime_ms = peer_record::max_lifetime_ms;
    REQUIRE(r.sign(id).ok());
    auto bytes = r.encode();
    REQUIRE(bytes.ok());
    CHECK(bytes->size() == peer_record::max_encoded_size);
    r.relays.push_back(meshd_test::identity(50).id());
    CHECK_FALSE(r.sign(id).ok());
}

TEST_CASE("peer_record: forgeries are rejected") {
    auto victim = meshd_test::identity(1);
    auto attacker = meshd_test::identity(2);
    auto rec = meshd_test::record(1);

    SUBCASE("field changed after signing") {
        rec.seq += 1;
        CHECK(rec.verify().err().is(mw::errc::protocol_error));
    }
    SUBCASE("endpoint redirected after signing") {
        rec.endpoints[0].port = 6666;
        CHECK_FALSE(rec.verify().ok());
    }
    SUBCASE("signed by another key, claiming the victim's WG key (node ID)") {
        // The attacker keeps the victim's WG key, so id() is the victim's, and signs with its
        // own key: the signature is valid but the signing key is not bound to the WG key.
        peer_record forged = rec;
        forged.seq = ~0ull;
        forged.signing_key = attacker.signing_key();
        auto body = forged.encode_body();
        REQUIRE(body.ok());
        std::string_view label = peer_record::signing_label;
        std::vector<uint8_t> msg(label.size() + body->size());
        std::memcpy(msg.data(), label.data(), label.size());
        std::memcpy(msg.data() + label.size(), body->data(), body->size());
        forged.sig = attacker.sign(msg);
        CHECK(node_identity::verify(attacker.signing_key(), msg, forged.sig));
        CHECK(forged.id() == victim.id());
        auto v = forged.verify();
        REQUIRE_FALSE(v.ok());
        CHECK(v.err().message.find("does not belong") != std::string::npos);
    }
    SUBCASE("another node's signature copied over") {
        auto other = meshd_test::record(2);
        rec.sig = other.sig;
        CHECK_FALSE(rec.verify().ok());
    }
    SUBCASE("valid record presented for another node ID") {
        auto v = rec.verify(attacker.id());
        REQUIRE_FALSE(v.ok());
        CHECK(v.err().is(mw::errc::protocol_error));
    }
    SUBCASE("lifetime changed after signing") {
        rec.lifetime_ms = peer_record::max_lifetime_ms;
        CHECK(rec.verify().err().is(mw::errc::protocol_error));
    }
}

TEST_CASE("peer_record: invalid fields are refused when signing") {
    auto id = meshd_test::identity(1);
    auto rec = meshd_test::record(1);
    SUBCASE("empty name") {
        rec.name.clear();
    }
    SUBCASE("name too long") {
        rec.name = std::string(254, 'a');
    }
    SUBCASE("name with a space") {
        rec.name = "node 1";
    }
    SUBCASE("name with a newline (log injection)") {
        rec.name = "node\nlevel=error";
    }
    SUBCASE("host bits set") {
        rec.pod_cidrs[0] = mw::ip_prefix::parse("10.0.0.1/24").value();
    }
    SUBCASE("port 0") {
        rec.endpoints[0].port = 0;
    }
    SUBCASE("too many CIDRs") {
        rec.pod_cidrs.resize(9, rec.pod_cidrs[0]);
    }
    SUBCASE("too many endpoints") {
        rec.endpoints.resize(9, rec.endpoints[0]);
    }
    SUBCASE("lifetime 0") {
        rec.lifetime_ms = 0;
    }
    SUBCASE("lifetime above a day") {
        rec.lifetime_ms = peer_record::max_lifetime_ms + 1;
    }
    CHECK(rec.sign(id).err().is(mw::errc::invalid_argument));
    CHECK_FALSE(rec.encode().ok());
}

TEST_CASE("peer_record: decode rejects truncation, trailing bytes and malformed fields") {
    auto bytes = meshd_test::record(1).encode().value();
    for (size_t n = 0; n < bytes.size(); ++n) {
        std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
        auto r = peer_record::decode(cut);
        CHECK_FALSE(r.ok());
        if (!r.ok()) CHECK(r.err().is(mw::errc::parse_error));
    }
    auto longer = bytes;
    longer.push_back(0);
    CHECK_FALSE(peer_record::decode(longer).ok());
    CHECK_FALSE(peer_record::decode(std::vector<uint8_t>(5000, 1)).ok());

    // Offsets in the canonical layout of record(1): format at 0, lifetime at 73, name length at 77.
    const size_t lifetime_at = 1 + 32 + 32 + 8;
    const size_t name_len_at = lifetime_at + 4;
    REQUIRE(bytes[name_len_at] == 6);  // "node-1"
    const size_t cidr_count_at = name_len_at + 1 + 6;
    REQUIRE(bytes[cidr_count_at] == 2);
    auto patched = [&](size_t at, uint8_t v) {
        auto b = bytes;
        b[at] = v;
        return peer_record::decode(b);
    };
    CHECK_FALSE(patched(0, 0).ok());  // unknown format
    CHECK_FALSE(patched(0, 1).ok());  // format 1 (absolute expiry): no longer read
    CHECK_FALSE(patched(0, 2).ok());  // format 2 (absolute expiry): no longer read
    CHECK_FALSE(patched(0, 4).ok());  // unknown format
    // Lifetime 60,000 = 00 00 ea 60: 0 and above a day are refused.
    REQUIRE(bytes[lifetime_at + 2] == 0xea);
    auto zero = bytes;
    std::fill_n(zero.begin() + lifetime_at, 4, 0);
    CHECK_FALSE(peer_record::decode(zero).ok());
    CHECK_FALSE(patched(lifetime_at, 0x06).ok());     // 0x0600ea60 ms: ~29 h
    CHECK(patched(lifetime_at + 1, 0x01).ok());       // 0x0001ea60 ms: ~2 min, fine (bad signature)
    CHECK_FALSE(patched(name_len_at, 0).ok());        // empty name
    CHECK_FALSE(patched(name_len_at + 1, ' ').ok());  // bad name char
    CHECK_FALSE(patched(cidr_count_at, 9).ok());      // too many CIDRs
    CHECK_FALSE(patched(cidr_count_at + 1, 5).ok());  // family 5
    CHECK_FALSE(patched(cidr_count_at + 1 + 1 + 4, 33).ok());  // /33 on IPv4
    CHECK_FALSE(patched(cidr_count_at + 1 + 1 + 3, 1).ok());   // host bits in 10.244.1.0/24
    // A decoded record is only structure: a signature byte flip still decodes but fails verify.
    auto sig_flip = patched(bytes.size() - 1, bytes.back() ^ 1);
    REQUIRE(sig_flip.ok());
    CHECK_FALSE(sig_flip->verify().ok());
}

TEST_CASE("peer_record: the relay flag round-trips; unknown flag bits are refused") {
    auto id = meshd_test::identity(1);
    auto rec = meshd_test::record(1);
    CHECK_FALSE(rec.relay_serving());
    auto plain = rec.encode_body().value();
    rec.flags = peer_record::flag_relay;
    REQUIRE(rec.sign(id).ok());
    auto bytes = rec.encode().value();
    auto back = peer_record::decode(bytes);
    REQUIRE(back.ok());
    CHECK(back->relay_serving());
    CHECK(back->verify().ok());
    CHECK_FALSE(back->same_content(meshd_test::record(1)));  // the flag is signed
    // The flags byte is the first one that differs from the unflagged body.
    size_t at = 0;
    while (at < plain.size() && plain[at] == bytes[at]) ++at;
    REQUIRE(at < plain.size());
    CHECK(bytes[at] == peer_record::flag_relay);
    for (uint8_t bad : {uint8_t{0x02}, uint8_t{0x80}, uint8_t{0xff}}) {
        auto b = bytes;
        b[at] = bad;
        CHECK_FALSE(peer_record::decode(b).ok());
    }
    rec.flags = 0x04;
    CHECK(rec.sign(id).err().is(mw::errc::invalid_argument));
}

TEST_CASE("peer_record: verify takes no clock; the lifetime is a duration the signer chose") {
    // Issue 14 item 1: a node whose wall clock is off by hours or years signs records that
    // everyone accepts (the receiver counts the lifetime from its own receipt).
    auto rec = meshd_test::record(4, 7, 600'000);
    auto bytes = rec.encode().value();
    auto back = peer_record::decode(bytes);
    REQUIRE(back.ok());
    CHECK(back->verify().ok());
    CHECK(back->lifetime_ms == 600'000);
    CHECK(back->seq == 7);
    // Nothing in the encoding is a time: the same record signed at any moment is the same bytes.
    CHECK(meshd_test::record(4, 7, 600'000).encode().value() == bytes);
}
