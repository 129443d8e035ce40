// UAPI text protocol: request encoding, answer parsing, and malformed answers.
#include <doctest/doctest.h>

#include "common/wireguard/wg_uapi.hpp"

using namespace mw;

namespace {

wg_key key_of(uint8_t fill) {
    std::array<uint8_t, 32> b{};
    b.fill(fill);
    return wg_key(b);
}

ip_prefix pfx(const char* s) {
    return *ip_prefix::parse(s);
}

}  // namespace

TEST_CASE("wg_uapi: encode_set writes every field in protocol order") {
    wg_device_update u;
    u.private_key = key_of(0x11);
    u.listen_port = 51820;
    u.fwmark = 0;
    u.replace_peers = true;
    wg_peer_update a;
    a.public_key = key_of(0x22);
    a.preshared_key = key_of(0x33);
    a.endpoint = *wg_endpoint::parse("[fd00::1]:51820");
    a.persistent_keepalive = 25;
    a.replace_allowed_ips = true;
    a.allowed_ips = {pfx("10.1.0.0/24"), pfx("fd10::1/64")};  // host bits are cleared on the wire
    wg_peer_update b;
    b.public_key = key_of(0x44);
    b.remove = true;
    wg_peer_update c;
    c.public_key = key_of(0x55);
    c.update_only = true;
    c.endpoint = *wg_endpoint::parse("192.0.2.1:1234");
    u.peers = {a, b, c};
    std::string h11(64, '1'), h22(64, '2'), h33(64, '3'), h44(64, '4'), h55(64, '5');
    CHECK(wg_uapi::encode_set(u) ==
          "set=1\nprivate_key=" + h11 +
              "\nlisten_port=51820\nfwmark=0\nreplace_peers=true\n"
              "public_key=" +
              h22 + "\npreshared_key=" + h33 +
              "\nendpoint=[fd00::1]:51820\npersistent_keepalive_interval=25\n"
              "replace_allowed_ips=true\nallowed_ip=10.1.0.0/24\nallowed_ip=fd10::/64\n"
              "public_key=" +
              h44 +
              "\nremove=true\n"
              "public_key=" +
              h55 + "\nupdate_only=true\nendpoint=192.0.2.1:1234\n\n");
    CHECK(wg_uapi::encode_get() == "get=1\n\n");
}

TEST_CASE("wg_uapi: parse_get reads a wireguard-go answer") {
    std::string h11(64, '1'), h22(64, '2'), h33(64, '3'), z(64, '0');
    std::string ans =
        "private_key=" + h11 +
        "\nlisten_port=51820\nfwmark=7\n"
        "public_key=" +
        h22 + "\npreshared_key=" + h33 +
        "\nprotocol_version=1\nendpoint=[fe80::1%eth0]:4000\n"
        "last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n"
        "tx_bytes=100\nrx_bytes=200\npersistent_keepalive_interval=25\n"
        "allowed_ip=10.1.0.0/24\nallowed_ip=fd10::/64\n"
        "public_key=" +
        std::string(64, '4') + "\npreshared_key=" + z +
        "\nprotocol_version=1\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"
        "tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n"
        "some_future_key=x\nerrno=0\n\n";
    auto d = wg_uapi::parse_get(ans);
    REQUIRE(d.ok());
    CHECK(d->private_key == key_of(0x11));
    CHECK(d->public_key == key_of(0x11).public_key());
    CHECK(d->listen_port == 51820);
    CHECK(d->fwmark == 7u);
    REQUIRE(d->peers.size() == 2);
    const auto& p = d->peers[0];
    CHECK(p.public_key == key_of(0x22));
    CHECK(p.preshared_key == key_of(0x33));
    REQUIRE(p.endpoint.has_value());
    CHECK(p.endpoint->str() == "[fe80::1]:4000");
    CHECK(p.last_handshake_sec == 1700000000);
    CHECK(p.last_handshake_nsec == 5);
    CHECK(p.tx_bytes == 100);
    CHECK(p.rx_bytes == 200);
    CHECK(p.persistent_keepalive == 25);
    REQUIRE(p.allowed_ips.size() == 2);
    CHECK(p.allowed_ips[1].str() == "fd10::/64");
    CHECK_FALSE(d->peers[1].preshared_key.has_value());  // all-zero = none
    CHECK_FALSE(d->peers[1].endpoint.has_value());
}

TEST_CASE("wg_uapi: an empty device") {
    auto d = wg_uapi::parse_get("listen_port=0\nerrno=0\n\n");
    REQUIRE(d.ok());
    CHECK_FALSE(d->private_key.has_value());
    CHECK(d->peers.empty());
}

TEST_CASE("wg_uapi: malformed answers are protocol errors, errno answers are errno") {
    std::string pk = "public_key=" + std::string(64, '2') + "\n";
    const char* bad[] = {
        "",                                 // nothing
        "errno=0\n",                        // no terminating empty line
        "listen_port=1\n\n",                // no errno
        "listen_port\nerrno=0\n\n",         // no '='
        "=5\nerrno=0\n\n",                  // empty key
        "listen_port=abc\nerrno=0\n\n",     // not a number
        "listen_port=70000\nerrno=0\n\n",   // out of range
        "errno=x\n\n",                      // errno not a number
        "errno=0\nlisten_port=1\n\n",       // data after errno
        "endpoint=1.2.3.4:5\nerrno=0\n\n",  // peer key before public_key
        "private_key=12\nerrno=0\n\n",      // short key
        "errno=0\n\nlisten_port=1\n\n",     // data after the end
    };
    for (const char* a : bad) {
        auto d = wg_uapi::parse_get(a);
        CHECK_MESSAGE(!d.ok(), a);
        if (!d.ok()) CHECK_MESSAGE(d.err().is(errc::protocol_error), a);
    }
    const std::string bad_peer[] = {
        pk + "endpoint=nonsense\nerrno=0\n\n",
        pk + "allowed_ip=10.0.0.0/33\nerrno=0\n\n",
        pk + "rx_bytes=-1\nerrno=0\n\n",
        pk + "protocol_version=2\nerrno=0\n\n",
        pk + "private_key=" + std::string(64, '1') + "\nerrno=0\n\n",
    };
    for (const auto& a : bad_peer) CHECK_FALSE(wg_uapi::parse_get(a).ok());

    auto e = wg_uapi::parse_get("errno=-22\n\n");  // wireguard-go: -EINVAL
    REQUIRE_FALSE(e.ok());
    CHECK(e.err().is_errno(EINVAL));
    CHECK(wg_uapi::parse_set("errno=0\n\n").ok());
    auto s = wg_uapi::parse_set("errno=98\n\n");
    REQUIRE_FALSE(s.ok());
    CHECK(s.err().is_errno(EADDRINUSE));
    CHECK(wg_uapi::parse_set("errno=-98\n\n").err().is_errno(EADDRINUSE));
    CHECK(wg_uapi::parse_set("errno=0\n").err().is(errc::protocol_error));
    CHECK(wg_uapi::parse_set("hello\n\n").err().is(errc::protocol_error));
    CHECK(wg_uapi::parse_set("errno=0\nx=1\n\n").err().is(errc::protocol_error));
}

TEST_CASE("wg_uapi: encode -> apply -> parse round trip of 1000 peers") {
    wg_device want;
    want.private_key = wg_key::generate_private();
    want.listen_port = 40000;
    for (int i = 0; i < 1000; ++i) {
        wg_peer p;
        p.public_key = wg_key::generate_private().public_key();
        p.endpoint = wg_endpoint{ip_address::from_u128(AF_INET, 0x0a000000u + i), 51820};
        p.allowed_ips = {
            ip_prefix(ip_address::from_u128(AF_INET, 0x0a800000u + (i << 8)), 24),
            ip_prefix(ip_address::from_u128(AF_INET6, (u128(0xfd00) << 112) + (u128(i) << 64)),
                      64)};
        want.peers.push_back(p);
    }
    // Fake a device: apply the encoded update to a model and render it as wireguard-go would.
    wg_device model;
    apply_update(model, wg_device_update::full(want));
    std::string ans = "private_key=" + model.private_key->to_hex() + "\nlisten_port=40000\n";
    for (const auto& p : model.peers) {
        ans += "public_key=" + p.public_key.to_hex() + "\nendpoint=" + p.endpoint->str() + "\n";
        for (const auto& a : p.allowed_ips) ans += "allowed_ip=" + a.str() + "\n";
    }
    ans += "errno=0\n\n";
    auto got = wg_uapi::parse_get(ans);
    REQUIRE(got.ok());
    CHECK(want.same_config(*got));
}

TEST_CASE("wg_uapi: errors never quote key material") {
    std::string secret = std::string(63, 'a') + "z";  // 64 chars, not hex
    auto d = wg_uapi::parse_get("private_key=" + secret + "\nerrno=0\n\n");
    REQUIRE_FALSE(d.ok());
    CHECK(d.err().message.find(secret) == std::string::npos);
    CHECK(d.err().message.find("redacted") != std::string::npos);
    auto p = wg_uapi::parse_get("public_key=" + std::string(64, '1') + "\npreshared_key=" + secret +
                                "\nerrno=0\n\n");
    REQUIRE_FALSE(p.ok());
    CHECK(p.err().message.find(secret) == std::string::npos);
}
