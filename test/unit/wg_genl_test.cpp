// WireGuard generic-netlink codec: set messages round-trip, large sets split within the size
// limit with the right flags, get answers (including peers split over messages) decode, and
// malformed messages are rejected.
#include <doctest/doctest.h>
#include <linux/genetlink.h>
#include <linux/wireguard.h>

#include "common/nl_attr.hpp"
#include "common/wireguard/wg_genl.hpp"
#include "common/wireguard/wg_reconciler.hpp"

using namespace mw;

namespace {

constexpr uint16_t k_family = 0x1234;

wg_peer_update make_peer(int i, int n_ips) {
    wg_peer_update p;
    std::array<uint8_t, 32> b{};
    b[0] = static_cast<uint8_t>(i);
    b[1] = static_cast<uint8_t>(i >> 8);
    b[31] = 7;
    p.public_key = wg_key(b);
    p.endpoint = wg_endpoint{ip_address::from_u128(i % 2 ? AF_INET6 : AF_INET, 0x0a000001u + i),
                             static_cast<uint16_t>(1000 + i)};
    p.persistent_keepalive = static_cast<uint16_t>(i % 30);
    if (i % 3 == 0) p.preshared_key = wg_key::generate_private();
    p.replace_allowed_ips = true;
    for (int j = 0; j < n_ips; ++j) {
        p.allowed_ips.emplace_back(
            ip_address::from_u128(j % 2 ? AF_INET6 : AF_INET, (u128(i) << 16) + (u128(j) << 8)),
            j % 2 ? 120 : 24);
    }
    return p;
}

uint32_t device_flags(const wg_genl::message& m) {
    uint32_t flags = 0;
    nl::for_each_attr(reinterpret_cast<const nlmsghdr*>(m.data()), sizeof(genlmsghdr),
                      [&](const nlattr* a) {
                          if (mnl_attr_get_type(a) == WGDEVICE_A_FLAGS) flags = mnl_attr_get_u32(a);
                      });
    return flags;
}

// Builds a get-answer message the way the kernel does (tests the decoder independently).
struct answer_builder {
    std::vector<char> buf = std::vector<char>(8192);
    nlmsghdr* nlh;
    nlattr* peers = nullptr;
    answer_builder() {
        nlh = mnl_nlmsg_put_header(buf.data());
        nlh->nlmsg_type = k_family;
        nlh->nlmsg_flags = NLM_F_MULTI;
        auto* g = static_cast<genlmsghdr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(genlmsghdr)));
        g->cmd = WG_CMD_GET_DEVICE;
        g->version = 1;
    }
    void begin_peers() { peers = mnl_attr_nest_start(nlh, WGDEVICE_A_PEERS); }
    void end_peers() { mnl_attr_nest_end(nlh, peers); }
};

}  // namespace

TEST_CASE("wg_genl: set round trip in one message") {
    wg_device_update u;
    u.private_key = wg_key::generate_private();
    u.listen_port = 51820;
    u.fwmark = 42;
    u.replace_peers = true;
    for (int i = 0; i < 5; ++i) u.peers.push_back(make_peer(i, 3));
    wg_peer_update rm;
    rm.public_key = wg_key::generate_private();
    rm.remove = true;
    u.peers.push_back(rm);
    wg_peer_update upd = make_peer(99, 0);
    upd.update_only = true;
    upd.replace_allowed_ips = false;
    upd.preshared_key = wg_key{};  // clear
    upd.persistent_keepalive = 0;  // off, still sent
    u.peers.push_back(upd);

    auto msgs = wg_genl::encode_set(u, "meshwire0", k_family, 32768);
    REQUIRE(msgs.ok());
    REQUIRE(msgs->size() == 1);
    const auto* nlh = reinterpret_cast<const nlmsghdr*>((*msgs)[0].data());
    CHECK(nlh->nlmsg_type == k_family);
    CHECK((nlh->nlmsg_flags & NLM_F_ACK) != 0);
    CHECK(device_flags((*msgs)[0]) == WGDEVICE_F_REPLACE_PEERS);
    auto back = wg_genl::decode_set(*msgs);
    REQUIRE(back.ok());
    CHECK(*back == u);
}

TEST_CASE("wg_genl: 1000 peers split over messages within the limit") {
    wg_device_update u;
    u.private_key = wg_key::generate_private();
    u.replace_peers = true;
    for (int i = 0; i < 1000; ++i) u.peers.push_back(make_peer(i, 2));
    for (size_t limit : {size_t(512), size_t(4096), size_t(32768)}) {
        auto msgs = wg_genl::encode_set(u, "meshwire0", k_family, limit);
        REQUIRE(msgs.ok());
        CHECK(msgs->size() > 1);
        for (size_t i = 0; i < msgs->size(); ++i) {
            CHECK((*msgs)[i].size() <= limit);
            // REPLACE_PEERS only in the first message, or every message would wipe the last.
            CHECK(device_flags((*msgs)[i]) == (i == 0 ? uint32_t(WGDEVICE_F_REPLACE_PEERS) : 0u));
        }
        auto back = wg_genl::decode_set(*msgs);
        REQUIRE(back.ok());
        CHECK(*back == u);
    }
}

TEST_CASE("wg_genl: a peer with many allowed-ips continues in the next message") {
    wg_device_update u;
    u.peers.push_back(make_peer(1, 300));
    u.peers.push_back(make_peer(2, 1));
    auto msgs = wg_genl::encode_set(u, "meshwire0", k_family, 1024);
    REQUIRE(msgs.ok());
    CHECK(msgs->size() > 5);
    // Inspect raw flags: first part REPLACE_ALLOWEDIPS, continuations UPDATE_ONLY.
    std::vector<uint32_t> first_peer_flags;
    for (const auto& m : *msgs) {
        CHECK(m.size() <= 1024);
        nl::for_each_attr(reinterpret_cast<const nlmsghdr*>(m.data()), sizeof(genlmsghdr),
                          [&](const nlattr* a) {
                              if (mnl_attr_get_type(a) != WGDEVICE_A_PEERS) return;
                              bool first_in_msg = true;
                              nl::for_each_nested(a, [&](const nlattr* p) {
                                  uint32_t f = 0;
                                  nl::for_each_nested(p, [&](const nlattr* x) {
                                      if (mnl_attr_get_type(x) == WGPEER_A_FLAGS)
                                          f = mnl_attr_get_u32(x);
                                  });
                                  if (first_in_msg) first_peer_flags.push_back(f);
                                  first_in_msg = false;
                              });
                          });
    }
    REQUIRE(first_peer_flags.size() == msgs->size());
    CHECK(first_peer_flags[0] == WGPEER_F_REPLACE_ALLOWEDIPS);
    for (size_t i = 1; i < first_peer_flags.size(); ++i)
        CHECK(first_peer_flags[i] == WGPEER_F_UPDATE_ONLY);
    auto back = wg_genl::decode_set(*msgs);
    REQUIRE(back.ok());
    CHECK(*back == u);
}

TEST_CASE("wg_genl: one peer change on a 1000-peer device is one small message") {
    wg_device want;
    want.private_key = wg_key::generate_private();
    for (int i = 0; i < 1000; ++i) {
        auto pu = make_peer(i, 2);
        wg_peer p;
        p.public_key = pu.public_key;
        p.endpoint = pu.endpoint;
        p.allowed_ips = pu.allowed_ips;
        want.peers.push_back(p);
    }
    wg_device have = want;
    want.peers[500].endpoint = *wg_endpoint::parse("192.0.2.1:4242");
    auto u = wg_reconciler::diff(have, want);
    auto msgs = wg_genl::encode_set(u, "meshwire0", k_family, 32768);
    REQUIRE(msgs.ok());
    REQUIRE(msgs->size() == 1);
    CHECK((*msgs)[0].size() < 128);
}

TEST_CASE("wg_genl: invalid sizes and names are rejected") {
    wg_device_update u;
    u.peers.push_back(make_peer(1, 1));
    CHECK_FALSE(wg_genl::encode_set(u, "meshwire0", k_family, 100).ok());
    CHECK_FALSE(wg_genl::encode_set(u, "", k_family, 4096).ok());
    CHECK_FALSE(wg_genl::encode_set(u, "this-name-is-too-long", k_family, 4096).ok());
}

TEST_CASE("wg_genl: get request and get answer decoding") {
    auto req = wg_genl::encode_get("wg7", k_family);
    const auto* rh = reinterpret_cast<const nlmsghdr*>(req.data());
    CHECK(rh->nlmsg_len == req.size());
    CHECK((rh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP);
    const auto* g = static_cast<const genlmsghdr*>(mnl_nlmsg_get_payload(rh));
    CHECK(g->cmd == WG_CMD_GET_DEVICE);

    wg_key priv = wg_key::generate_private();
    wg_key peer_key = wg_key::generate_private().public_key();
    // Message 1: device attributes and the first part of the peer.
    answer_builder m1;
    mnl_attr_put_strz(m1.nlh, WGDEVICE_A_IFNAME, "wg7");
    mnl_attr_put(m1.nlh, WGDEVICE_A_PRIVATE_KEY, 32, priv.data());
    mnl_attr_put(m1.nlh, WGDEVICE_A_PUBLIC_KEY, 32, priv.public_key().data());
    mnl_attr_put_u16(m1.nlh, WGDEVICE_A_LISTEN_PORT, 51820);
    mnl_attr_put_u32(m1.nlh, WGDEVICE_A_FWMARK, 0);
    m1.begin_peers();
    nlattr* p = mnl_attr_nest_start(m1.nlh, 0);
    mnl_attr_put(m1.nlh, WGPEER_A_PUBLIC_KEY, 32, peer_key.data());
    wg_key zero;
    mnl_attr_put(m1.nlh, WGPEER_A_PRESHARED_KEY, 32, zero.data());
    sockaddr_storage ss;
    auto len = wg_endpoint::parse("[2001:db8::1]:51820")->to_sockaddr(ss);
    mnl_attr_put(m1.nlh, WGPEER_A_ENDPOINT, len, &ss);
    int64_t ts[2] = {1700000000, 123};
    mnl_attr_put(m1.nlh, WGPEER_A_LAST_HANDSHAKE_TIME, sizeof ts, ts);
    mnl_attr_put_u64(m1.nlh, WGPEER_A_RX_BYTES, 1000);
    mnl_attr_put_u64(m1.nlh, WGPEER_A_TX_BYTES, 2000);
    mnl_attr_put_u16(m1.nlh, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, 25);
    mnl_attr_put_u32(m1.nlh, WGPEER_A_PROTOCOL_VERSION, 1);
    nlattr* ips = mnl_attr_nest_start(m1.nlh, WGPEER_A_ALLOWEDIPS);
    nlattr* ip = mnl_attr_nest_start(m1.nlh, 0);
    mnl_attr_put_u16(m1.nlh, WGALLOWEDIP_A_FAMILY, AF_INET);
    uint8_t v4[4] = {10, 1, 0, 0};
    mnl_attr_put(m1.nlh, WGALLOWEDIP_A_IPADDR, 4, v4);
    mnl_attr_put_u8(m1.nlh, WGALLOWEDIP_A_CIDR_MASK, 16);
    mnl_attr_nest_end(m1.nlh, ip);
    mnl_attr_nest_end(m1.nlh, ips);
    mnl_attr_nest_end(m1.nlh, p);
    m1.end_peers();
    // Message 2: the same peer continued (the kernel repeats only its key), then nothing else.
    answer_builder m2;
    mnl_attr_put_strz(m2.nlh, WGDEVICE_A_IFNAME, "wg7");
    m2.begin_peers();
    p = mnl_attr_nest_start(m2.nlh, 0);
    mnl_attr_put(m2.nlh, WGPEER_A_PUBLIC_KEY, 32, peer_key.data());
    ips = mnl_attr_nest_start(m2.nlh, WGPEER_A_ALLOWEDIPS);
    ip = mnl_attr_nest_start(m2.nlh, 0);
    mnl_attr_put_u16(m2.nlh, WGALLOWEDIP_A_FAMILY, AF_INET6);
    uint8_t v6[16] = {0xfd, 0};
    mnl_attr_put(m2.nlh, WGALLOWEDIP_A_IPADDR, 16, v6);
    mnl_attr_put_u8(m2.nlh, WGALLOWEDIP_A_CIDR_MASK, 64);
    mnl_attr_nest_end(m2.nlh, ip);
    mnl_attr_nest_end(m2.nlh, ips);
    mnl_attr_nest_end(m2.nlh, p);
    m2.end_peers();

    wg_device d;
    REQUIRE(wg_genl::decode_get(m1.nlh, d).ok());
    REQUIRE(wg_genl::decode_get(m2.nlh, d).ok());
    CHECK(d.private_key == priv);
    CHECK(d.public_key == priv.public_key());
    CHECK(d.listen_port == 51820);
    REQUIRE(d.peers.size() == 1);
    const auto& peer = d.peers[0];
    CHECK(peer.public_key == peer_key);
    CHECK_FALSE(peer.preshared_key.has_value());
    CHECK(peer.endpoint->str() == "[2001:db8::1]:51820");
    CHECK(peer.last_handshake_sec == 1700000000);
    CHECK(peer.last_handshake_nsec == 123);
    CHECK(peer.rx_bytes == 1000);
    CHECK(peer.tx_bytes == 2000);
    CHECK(peer.persistent_keepalive == 25);
    REQUIRE(peer.allowed_ips.size() == 2);
    CHECK(peer.allowed_ips[0].str() == "10.1.0.0/16");
    CHECK(peer.allowed_ips[1].str() == "fd00::/64");
}

TEST_CASE("wg_genl: malformed answers are rejected") {
    SUBCASE("short key") {
        answer_builder m;
        uint8_t k[31] = {};
        mnl_attr_put(m.nlh, WGDEVICE_A_PRIVATE_KEY, sizeof k, k);
        wg_device d;
        CHECK(wg_genl::decode_get(m.nlh, d).err().is(errc::protocol_error));
    }
    SUBCASE("peer without key") {
        answer_builder m;
        m.begin_peers();
        nlattr* p = mnl_attr_nest_start(m.nlh, 0);
        mnl_attr_put_u64(m.nlh, WGPEER_A_RX_BYTES, 1);
        mnl_attr_nest_end(m.nlh, p);
        m.end_peers();
        wg_device d;
        CHECK_FALSE(wg_genl::decode_get(m.nlh, d).ok());
    }
    SUBCASE("allowed-ip family and address disagree") {
        answer_builder m;
        m.begin_peers();
        nlattr* p = mnl_attr_nest_start(m.nlh, 0);
        wg_key k = wg_key::generate_private();
        mnl_attr_put(m.nlh, WGPEER_A_PUBLIC_KEY, 32, k.data());
        nlattr* ips = mnl_attr_nest_start(m.nlh, WGPEER_A_ALLOWEDIPS);
        nlattr* ip = mnl_attr_nest_start(m.nlh, 0);
        mnl_attr_put_u16(m.nlh, WGALLOWEDIP_A_FAMILY, AF_INET6);
        uint8_t v4[4] = {10, 0, 0, 0};
        mnl_attr_put(m.nlh, WGALLOWEDIP_A_IPADDR, 4, v4);
        mnl_attr_put_u8(m.nlh, WGALLOWEDIP_A_CIDR_MASK, 8);
        mnl_attr_nest_end(m.nlh, ip);
        mnl_attr_nest_end(m.nlh, ips);
        mnl_attr_nest_end(m.nlh, p);
        m.end_peers();
        wg_device d;
        CHECK_FALSE(wg_genl::decode_get(m.nlh, d).ok());
    }
    SUBCASE("bad endpoint and counters") {
        answer_builder m;
        m.begin_peers();
        nlattr* p = mnl_attr_nest_start(m.nlh, 0);
        wg_key k = wg_key::generate_private();
        mnl_attr_put(m.nlh, WGPEER_A_PUBLIC_KEY, 32, k.data());
        uint8_t junk[3] = {1, 2, 3};
        mnl_attr_put(m.nlh, WGPEER_A_ENDPOINT, sizeof junk, junk);
        mnl_attr_nest_end(m.nlh, p);
        m.end_peers();
        wg_device d;
        CHECK_FALSE(wg_genl::decode_get(m.nlh, d).ok());
    }
    SUBCASE("set messages with a wrong length") {
        wg_genl::message junk(10, 0);
        CHECK_FALSE(wg_genl::decode_set({junk}).ok());
    }
}
