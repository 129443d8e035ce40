// The relay hot path end to end on loopback only (127.0.0.1 and ::1, ephemeral ports, no root):
//   "WireGuard A" -> relay_proxy A -> relay_forwarder -> relay_proxy B -> "WireGuard B" and back,
// where the two WireGuards are plain UDP sockets. Also: a third sender spraying frames for the
// session gets nothing forwarded; unknown sessions, garbage and control datagrams are counted.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "common/rtnl.hpp"
#include "meshd/core/wire_codec.hpp"
#include "meshd/io/relay_forwarder.hpp"
#include "meshd/io/relay_proxy.hpp"
#include "meshd/io/udp_socket.hpp"

using namespace mw;
using namespace mw::meshd;

namespace {

// "addr:0" (an ephemeral port, which wg_endpoint::parse refuses) or a full endpoint.
wg_endpoint ep(std::string_view text) {
    if (text.ends_with(":0")) {
        text.remove_suffix(2);
        if (text.starts_with('[')) text = text.substr(1, text.size() - 2);
        return {ip_address::parse(text).value(), 0};
    }
    return wg_endpoint::parse(text).value();
}
const char* loopback(bool v6) {
    return v6 ? "[::1]:0" : "127.0.0.1:0";
}

node_id nid(uint8_t n) {
    std::array<uint8_t, 32> b{};
    b.fill(n);
    return node_id(b);
}

unique_fd udp(const char* bind_to) {
    return open_udp_socket(ep(bind_to)).value();
}

void send_to(int fd, const void* data, size_t len, const wg_endpoint& to) {
    sockaddr_storage ss;
    socklen_t sl = to.to_sockaddr(ss);
    REQUIRE(::sendto(fd, data, len, 0, reinterpret_cast<sockaddr*>(&ss), sl) == ssize_t(len));
}

// One datagram within timeout_ms; size -1 when none came.
struct received {
    ssize_t size = -1;
    wg_endpoint from;
};
received recv_from(int fd, std::vector<uint8_t>& buf, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return {};
    sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    ssize_t n = ::recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&ss), &sl);
    received r;
    r.size = n;
    if (auto e = wg_endpoint::from_sockaddr(&ss, sl)) r.from = *e;
    return r;
}

// A packet "WireGuard" would send: recognisable bytes, varied sizes.
std::vector<uint8_t> packet(uint32_t seq, size_t size) {
    std::vector<uint8_t> p(size);
    for (size_t i = 0; i < size; ++i) p[i] = uint8_t(seq * 31 + i);
    std::memcpy(p.data(), &seq, std::min(size, sizeof seq));
    return p;
}

// What a proxy's on_control saw.
struct control_log {
    struct entry {
        std::vector<uint8_t> datagram;
        wg_endpoint from;
        uint64_t session_id = 0;
    };
    std::mutex mutex;
    std::vector<entry> entries;

    void add(std::span<const uint8_t> d, const wg_endpoint& from, uint64_t session) {
        std::lock_guard lock(mutex);
        entries.push_back({{d.begin(), d.end()}, from, session});
    }
    // Waits (bounded) until there are `n` entries; returns a copy.
    std::vector<entry> wait_for(size_t n) {
        for (int i = 0; i < 400; ++i) {
            {
                std::lock_guard lock(mutex);
                if (entries.size() >= n) return entries;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        std::lock_guard lock(mutex);
        return entries;
    }
};

// Shaped like a sealed control datagram (classify() says control): "MW", version 2, PING type,
// then recognisable bytes. The proxies never open it; that is the core's job.
std::vector<uint8_t> control_like(uint8_t fill, size_t size = 80) {
    std::vector<uint8_t> c(size, fill);
    c[0] = 'M', c[1] = 'W', c[2] = psk_sealer::version, c[3] = 0x03;
    REQUIRE(classify(c) == frame_kind::control);
    return c;
}

// What a proxy's on_wake saw.
struct wake_log {
    std::mutex mutex;
    std::vector<uint64_t> sessions;
    void add(uint64_t s) {
        std::lock_guard lock(mutex);
        sessions.push_back(s);
    }
    size_t count() {
        std::lock_guard lock(mutex);
        return sessions.size();
    }
};

// WireGuard handshake messages by type and size (the proxies look at nothing else): an
// initiation (type 1, 148 bytes), a response (type 2, 92 bytes); recognisable bytes after the
// type word.
std::vector<uint8_t> wg_message(uint8_t type, size_t size, uint8_t fill) {
    std::vector<uint8_t> m(size, fill);
    m[0] = type, m[1] = m[2] = m[3] = 0;
    return m;
}

struct rig {
    std::atomic<int> control_seen{0};
    wake_log wakes_a, wakes_b;         // the proxies' on_wake
    control_log control_a, control_b;  // the proxies' on_control
    std::unique_ptr<relay_forwarder> relay;
    std::unique_ptr<relay_proxy> proxy_a, proxy_b;
    unique_fd wg_a, wg_b;
    wg_endpoint wg_a_ep, wg_b_ep, relay_v4, relay_v6;
    wg_endpoint local_a, local_b;  // what A's WG uses as B's endpoint, and vice versa
    static constexpr uint64_t session = 0x5e55'10a0'0000'0001ull;

    // probe_index_b: the receiver index of B's sealed probes (0: none).
    rig(bool a_v6, bool b_v6, uint32_t probe_index_b = 0) {
        relay_forwarder_config rc;
        rc.listen = {ep("127.0.0.1:0"), ep("[::1]:0")};
        rc.on_control = [this](std::span<const uint8_t>, const wg_endpoint&, uint16_t) {
            ++control_seen;
        };
        relay = relay_forwarder::start(std::move(rc)).value();
        auto eps = relay->local_endpoints();
        relay_v4 = eps[0];
        relay_v6 = eps[1];

        relay_proxy_config pa, pb;
        pa.uplink = ep(loopback(a_v6));
        pb.uplink = ep(loopback(b_v6));
        pa.on_control = [this](std::span<const uint8_t> d, const wg_endpoint& from, uint64_t s) {
            control_a.add(d, from, s);
        };
        pb.on_control = [this](std::span<const uint8_t> d, const wg_endpoint& from, uint64_t s) {
            control_b.add(d, from, s);
        };
        pa.on_wake = [this](uint64_t s) { wakes_a.add(s); };
        pb.on_wake = [this](uint64_t s) { wakes_b.add(s); };
        proxy_a = relay_proxy::start(std::move(pa)).value();
        proxy_b = relay_proxy::start(std::move(pb)).value();

        wg_a = udp(loopback(a_v6));
        wg_b = udp(loopback(b_v6));
        wg_a_ep = local_endpoint(wg_a.get()).value();
        wg_b_ep = local_endpoint(wg_b.get()).value();

        // What the authenticated RELAY_SESSION_REQUESTs from A and B would do on the relay.
        auto up_a = relay_addr::from_endpoint(proxy_a->uplink_endpoint());
        auto up_b = relay_addr::from_endpoint(proxy_b->uplink_endpoint());
        REQUIRE(relay->with_table([&](relay_session_table& t, uint64_t now) {
            return t.bind(session, nid(1), nid(2), up_a, now);
        }));
        REQUIRE(relay
                    ->with_table([&](relay_session_table& t, uint64_t now) {
                        return t.bind(session, nid(2), nid(1), up_b, now);
                    })
                    .value() == relay_bind_state::established);

        local_a = proxy_a->add_peer(session, a_v6 ? relay_v6 : relay_v4, wg_a_ep).value();
        local_b =
            proxy_b->add_peer(session, b_v6 ? relay_v6 : relay_v4, wg_b_ep, probe_index_b).value();
    }
};

// Sends `count` packets from one "WireGuard" to its proxy and checks that the other one gets
// each, unchanged, from its own proxy's local endpoint. Bursts of 16 so that nothing overflows.
void exchange(int from_fd, const wg_endpoint& to_local, int to_fd, const wg_endpoint& expect_from,
              uint32_t count) {
    std::vector<uint8_t> buf(4096);
    uint32_t got = 0;
    for (uint32_t burst = 0; burst < count; burst += 16) {
        uint32_t end = std::min(count, burst + 16);
        for (uint32_t seq = burst; seq < end; ++seq) {
            auto p = packet(seq, 1 + (seq * 97) % 1400);
            send_to(from_fd, p.data(), p.size(), to_local);
        }
        for (uint32_t seq = burst; seq < end; ++seq) {
            auto r = recv_from(to_fd, buf, 2000);
            REQUIRE(r.size >= 0);
            auto want = packet(seq, 1 + (seq * 97) % 1400);
            REQUIRE(size_t(r.size) == want.size());
            CHECK(std::memcmp(buf.data(), want.data(), want.size()) == 0);
            CHECK(r.from == expect_from);
            ++got;
        }
    }
    CHECK(got == count);
}

// Counters are published once per batch, after its sendmmsg: the receiver can see the last packet
// a moment before the counter that accounts for it. Wait (bounded) for the figures to settle.
template <class F>
void settle(F&& done) {
    for (int i = 0; i < 200 && !done(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

void check_silence(int fd) {
    std::vector<uint8_t> buf(4096);
    CHECK(recv_from(fd, buf, 300).size == -1);
}

}  // namespace

TEST_CASE("relay e2e: node A <-> proxy <-> forwarder <-> proxy <-> node B, both ways") {
    struct variant {
        const char* name;
        bool a_v6, b_v6;
    };
    for (auto v : {variant{"v4", false, false}, variant{"v6", true, true},
                   variant{"v4 <-> v6", false, true}}) {
        CAPTURE(v.name);
        rig r(v.a_v6, v.b_v6);
        constexpr uint32_t n = 300;
        exchange(r.wg_a.get(), r.local_a, r.wg_b.get(), r.local_b, n);
        exchange(r.wg_b.get(), r.local_b, r.wg_a.get(), r.local_a, n);

        // Every counter checked exactly below: a sender's to_relay figure is published after its
        // sendmmsg returns, which can be after the far end already received the packet (CI saw
        // proxy B at 299 of 300).
        settle([&] {
            auto f = r.relay->stats();
            auto a = r.proxy_a->stats(), b = r.proxy_b->stats();
            // Bytes are added just after packets, by the same thread.
            return f.forwarded_packets == 2 * n && f.rx_packets == 2 * n && a.to_wg_packets == n &&
                   b.to_wg_packets == n && a.to_relay_packets == n && b.to_relay_packets == n &&
                   a.to_relay_bytes == b.to_wg_bytes + n * relay_data_header_size &&
                   f.forwarded_bytes == a.to_relay_bytes + b.to_relay_bytes;
        });
        auto fs = r.relay->stats();
        CHECK(fs.forwarded_packets == 2 * n);
        CHECK(fs.rx_packets == 2 * n);
        CHECK(fs.send_failed == 0);
        CHECK(fs.malformed == 0);
        for (auto d : fs.table_drops) CHECK(d == 0);
        CHECK(fs.batches <= fs.rx_packets);
        auto sa = r.proxy_a->stats(), sb = r.proxy_b->stats();
        CHECK(sa.to_relay_packets == n);
        CHECK(sa.to_wg_packets == n);
        CHECK(sb.to_relay_packets == n);
        CHECK(sb.to_wg_packets == n);
        CHECK(sa.to_relay_bytes == sb.to_wg_bytes + n * relay_data_header_size);
        CHECK(fs.forwarded_bytes == sa.to_relay_bytes + sb.to_relay_bytes);
        relay_session_info info;
        REQUIRE(r.relay->with_table(
            [&](relay_session_table& t, uint64_t) { return t.info(rig::session, info); }));
        CHECK(info.packets_a_to_b == n);
        CHECK(info.packets_b_to_a == n);
    }
}

TEST_CASE("relay e2e: same-size bursts (UDP GSO on the relay) keep datagram boundaries") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        rig r(v6, v6);
        // Runs of equal sizes, each ending in a shorter one: what the forwarder coalesces.
        std::vector<size_t> sizes;
        for (int i = 0; i < 30; ++i) sizes.push_back(1200);
        sizes.push_back(700);
        for (int i = 0; i < 20; ++i) sizes.push_back(300);
        for (int round = 0; round < 5; ++round) {
            for (uint32_t seq = 0; seq < sizes.size(); ++seq) {
                auto p = packet(seq, sizes[seq]);
                send_to(r.wg_a.get(), p.data(), p.size(), r.local_a);
            }
            std::vector<uint8_t> buf(4096);
            for (uint32_t seq = 0; seq < sizes.size(); ++seq) {
                auto got = recv_from(r.wg_b.get(), buf, 2000);
                REQUIRE(got.size == ssize_t(sizes[seq]));
                auto want = packet(seq, sizes[seq]);
                CHECK(std::memcmp(buf.data(), want.data(), want.size()) == 0);
            }
        }
        settle([&] { return r.relay->stats().forwarded_packets == 5 * sizes.size(); });
        CHECK(r.relay->stats().forwarded_packets == 5 * sizes.size());
        CHECK(r.relay->stats().send_failed == 0);
    }
}

TEST_CASE("relay e2e: nothing is forwarded for anyone else; drops and control are counted") {
    rig r(false, false);
    // Warm the path once so a later silence is meaningful.
    exchange(r.wg_a.get(), r.local_a, r.wg_b.get(), r.local_b, 1);

    // An attacker who knows the session id and the relay's address, from its own address.
    unique_fd intruder = udp("127.0.0.1:0");
    constexpr int spray = 200;
    std::vector<uint8_t> frame(relay_data_header_size + 100, 0xee);
    write_relay_data_header(rig::session, frame.data());
    for (int i = 0; i < spray; ++i) send_to(intruder.get(), frame.data(), frame.size(), r.relay_v4);
    // Same over IPv6, and an unknown session.
    unique_fd intruder6 = udp("[::1]:0");
    for (int i = 0; i < spray; ++i)
        send_to(intruder6.get(), frame.data(), frame.size(), r.relay_v6);
    write_relay_data_header(0xdead, frame.data());
    for (int i = 0; i < 10; ++i) send_to(intruder.get(), frame.data(), frame.size(), r.relay_v4);
    // Garbage, and something shaped like a control message (handed to the control plane).
    const uint8_t junk[] = {1, 2, 3, 4, 5};
    send_to(intruder.get(), junk, sizeof junk, r.relay_v4);
    std::vector<uint8_t> control(60, 0);
    control[0] = 'M', control[1] = 'W', control[2] = 1, control[3] = 0x03;
    send_to(intruder.get(), control.data(), control.size(), r.relay_v4);
    // NAT keepalives (issue 18): counted apart, neither junk nor handed to the control plane, on
    // the relay's port and on a node's uplink alike.
    const auto ka = nat_keepalive_datagram();
    for (int i = 0; i < 3; ++i) send_to(intruder.get(), ka.data(), ka.size(), r.relay_v4);
    send_to(intruder.get(), ka.data(), ka.size(), r.proxy_b->uplink_endpoint());
    // Frames sent straight to a node's uplink by the intruder are not handed to its WireGuard.
    write_relay_data_header(rig::session, frame.data());
    for (int i = 0; i < 10; ++i) {
        send_to(intruder.get(), frame.data(), frame.size(), r.proxy_b->uplink_endpoint());
    }
    // And a stranger writing to a node's local proxy socket is not relayed.
    for (int i = 0; i < 10; ++i) send_to(intruder.get(), frame.data(), frame.size(), r.local_a);

    check_silence(r.wg_a.get());
    check_silence(r.wg_b.get());

    // Everything has been seen by now (loopback is synchronous up to the loop threads, which
    // check_silence gave 300 ms each).
    auto fs = r.relay->stats();
    CHECK(fs.table_drops[size_t(relay_drop::wrong_source)] == 2 * spray);
    CHECK(fs.table_drops[size_t(relay_drop::unknown_session)] == 10);
    CHECK(fs.malformed == 1);
    CHECK(fs.nat_keepalives == 3);
    CHECK(fs.control_packets == 1);
    CHECK(r.control_seen == 1);
    CHECK(fs.forwarded_packets == 1);
    CHECK(fs.rx_packets == 1 + 2 * spray + 10 + 2 + 3);
    auto sb = r.proxy_b->stats();
    CHECK(sb.wrong_source == 10);
    CHECK(sb.nat_keepalives == 1);
    CHECK(sb.malformed == 0);
    CHECK(sb.control_packets == 0);
    CHECK(sb.to_wg_packets == 1);
    // local_a is connected to WireGuard A's port, so the kernel drops the stranger's packets.
    CHECK(r.proxy_a->stats().to_relay_packets == 1);

    // The path still works after all that.
    exchange(r.wg_b.get(), r.local_b, r.wg_a.get(), r.local_a, 20);
}

// Issue 17: sealed probes look like WireGuard data; the proxy tells them apart only by the
// receiver index it was given for the peer (and the size), never by a visible marker.
TEST_CASE("relay e2e: sealed probe frames with the peer's probe index reach the core, not WG") {
    constexpr uint32_t index_b = 0x1234abcd;
    rig r(false, false, index_b);
    exchange(r.wg_a.get(), r.local_a, r.wg_b.get(), r.local_b, 3);
    auto frame = [](uint32_t index, size_t size) {
        std::vector<uint8_t> f(size, 0x5c);
        f[0] = 4, f[1] = f[2] = f[3] = 0;
        for (int i = 0; i < 4; ++i) f[4 + i] = uint8_t(index >> (8 * i));
        return f;
    };
    // B's index, probe size: the core's. Through the data path, in the session.
    auto probe = frame(index_b, 96);
    REQUIRE(r.proxy_a->send_in_session(rig::session, probe));
    auto at_b = r.control_b.wait_for(1);
    REQUIRE(at_b.size() == 1);
    CHECK(at_b[0].datagram == probe);
    CHECK(at_b[0].session_id == rig::session);
    check_silence(r.wg_b.get());
    // B's index at a padded probe's size (a path MTU probe, up to 32 + 1500): the core's too.
    auto padded = frame(index_b, 32 + 1408);
    REQUIRE(r.proxy_a->send_in_session(rig::session, padded));
    auto padded_at_b = r.control_b.wait_for(2);
    REQUIRE(padded_at_b.size() == 2);
    CHECK(padded_at_b[1].datagram == padded);
    check_silence(r.wg_b.get());
    // Another index, or B's index at a size no probe has: WireGuard's (as from WireGuard A).
    std::vector<uint8_t> buf(4096);
    for (auto f : {frame(index_b + 1, 96), frame(index_b + 1, 1440), frame(index_b, 32),
                   frame(index_b, 95), frame(index_b, 32 + 1500 + 1)}) {
        send_to(r.wg_a.get(), f.data(), f.size(), r.local_a);
        auto got = recv_from(r.wg_b.get(), buf, 2000);
        REQUIRE(got.size == ssize_t(f.size()));
        CHECK(std::memcmp(buf.data(), f.data(), f.size()) == 0);
    }
    // A has no probe index for B: every WireGuard-shaped payload is WireGuard's.
    auto to_a = frame(index_b, 96);
    send_to(r.wg_b.get(), to_a.data(), to_a.size(), r.local_b);
    auto got = recv_from(r.wg_a.get(), buf, 2000);
    CHECK(got.size == ssize_t(to_a.size()));
    CHECK(r.control_a.wait_for(1).empty());
    CHECK(r.control_b.wait_for(3).size() == 2);
    CHECK(r.proxy_b->stats().inband_control_packets == 2);
}

TEST_CASE("relay e2e: in-band control datagrams take the data path and reach the core, not WG") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        rig r(v6, v6);
        exchange(r.wg_a.get(), r.local_a, r.wg_b.get(), r.local_b, 3);
        const wg_endpoint relay_ep = v6 ? r.relay_v6 : r.relay_v4;

        // A -> B and B -> A through the forwarder, which needs no change: it forwards any payload.
        auto probe_ab = control_like(0xab), probe_ba = control_like(0xba, 300);
        REQUIRE(r.proxy_a->send_in_session(rig::session, probe_ab));
        REQUIRE(r.proxy_b->send_in_session(rig::session, probe_ba));
        auto at_b = r.control_b.wait_for(1);
        auto at_a = r.control_a.wait_for(1);
        REQUIRE(at_b.size() == 1);
        REQUIRE(at_a.size() == 1);
        CHECK(at_b[0].datagram == probe_ab);
        CHECK(at_b[0].session_id == rig::session);
        CHECK(at_b[0].from == relay_ep);
        CHECK(at_a[0].datagram == probe_ba);
        CHECK(at_a[0].session_id == rig::session);
        // Never handed to either WireGuard.
        check_silence(r.wg_a.get());
        check_silence(r.wg_b.get());

        // A payload that looks like WireGuard (type 4 = transport data, three zero bytes) sent the
        // same way still goes to WireGuard, as does a real packet from "WireGuard A".
        std::vector<uint8_t> wg_like(64, 0x42);
        wg_like[0] = 4, wg_like[1] = wg_like[2] = wg_like[3] = 0;
        REQUIRE(r.proxy_a->send_in_session(rig::session, wg_like));
        std::vector<uint8_t> buf(4096);
        auto got = recv_from(r.wg_b.get(), buf, 2000);
        REQUIRE(got.size == ssize_t(wg_like.size()));
        CHECK(std::memcmp(buf.data(), wg_like.data(), wg_like.size()) == 0);
        CHECK(got.from == r.local_b);
        send_to(r.wg_a.get(), wg_like.data(), wg_like.size(), r.local_a);
        got = recv_from(r.wg_b.get(), buf, 2000);
        CHECK(got.size == ssize_t(wg_like.size()));

        // A plain control datagram to the uplink is reported with session 0.
        unique_fd other = udp(loopback(v6));
        auto plain = control_like(0x11);
        send_to(other.get(), plain.data(), plain.size(), r.proxy_b->uplink_endpoint());
        at_b = r.control_b.wait_for(2);
        REQUIRE(at_b.size() == 2);
        CHECK(at_b[1].datagram == plain);
        CHECK(at_b[1].session_id == 0);
        CHECK(at_b[1].from == local_endpoint(other.get()).value());

        // Someone else sending a session frame with a control payload straight to the uplink is
        // not the session's relay: dropped, never reported as in-band.
        std::vector<uint8_t> forged(relay_data_header_size);
        write_relay_data_header(rig::session, forged.data());
        forged.insert(forged.end(), probe_ab.begin(), probe_ab.end());
        send_to(other.get(), forged.data(), forged.size(), r.proxy_b->uplink_endpoint());
        check_silence(r.wg_b.get());

        // Unknown sessions and bad sizes are error values.
        auto missing = r.proxy_a->send_in_session(0xdead, probe_ab);
        REQUIRE_FALSE(missing);
        CHECK(missing.err().is(errc::not_found));
        CHECK_FALSE(r.proxy_a->send_in_session(rig::session, {}));
        // Session id 0 means "not in a session" to on_control, so no peer may use it.
        CHECK_FALSE(r.proxy_a->add_peer(0, relay_ep, r.wg_a_ep));

        settle([&] { return r.proxy_b->stats().wrong_source == 1; });
        auto sa = r.proxy_a->stats(), sb = r.proxy_b->stats();
        CHECK(sb.inband_control_packets == 1);
        CHECK(sa.inband_control_packets == 1);
        CHECK(sb.control_packets == 1);
        CHECK(sa.control_packets == 0);
        CHECK(sb.wrong_source == 1);
        CHECK(sb.to_wg_packets == 3 + 2);
        CHECK(r.control_b.wait_for(3).size() == 2);
        auto fs = r.relay->stats();
        CHECK(fs.forwarded_packets == 3 + 2 + 2);
        CHECK(fs.control_packets == 0);
        CHECK(fs.malformed == 0);
    }
}

TEST_CASE("relay e2e: failover keeps the WireGuard endpoint; removal stops traffic; clean stop") {
    rig r(false, false);
    exchange(r.wg_a.get(), r.local_a, r.wg_b.get(), r.local_b, 5);

    // A second relay with a new session: both proxies are retargeted, local endpoints unchanged.
    relay_forwarder_config rc;
    rc.listen = {ep("127.0.0.1:0")};
    auto relay2 = relay_forwarder::start(std::move(rc)).value();
    auto relay2_ep = relay2->local_endpoints()[0];
    constexpr uint64_t session2 = 77;
    REQUIRE(relay2->with_table([&](relay_session_table& t, uint64_t now) {
        return t.bind(session2, nid(1), nid(2),
                      relay_addr::from_endpoint(r.proxy_a->uplink_endpoint()), now);
    }));
    REQUIRE(relay2->with_table([&](relay_session_table& t, uint64_t now) {
        return t.bind(session2, nid(2), nid(1),
                      relay_addr::from_endpoint(r.proxy_b->uplink_endpoint()), now);
    }));
    REQUIRE(r.proxy_a->retarget_peer(rig::session, session2, relay2_ep));
    REQUIRE(r.proxy_b->retarget_peer(rig::session, session2, relay2_ep));
    r.relay->stop();  // the old relay "dies"
    exchange(r.wg_a.get(), r.local_a, r.wg_b.get(), r.local_b, 20);
    exchange(r.wg_b.get(), r.local_b, r.wg_a.get(), r.local_a, 20);
    settle([&] { return relay2->stats().forwarded_packets == 40; });
    CHECK(relay2->stats().forwarded_packets == 40);

    // Removing the peer closes its local socket; nothing reaches B any more.
    CHECK(r.proxy_a->remove_peer(session2));
    CHECK_FALSE(r.proxy_a->remove_peer(session2));
    auto p = packet(1, 100);
    send_to(r.wg_a.get(), p.data(), p.size(), r.local_a);  // ICMP port unreachable, ignored
    check_silence(r.wg_b.get());

    // stop() is idempotent and the destructors join cleanly after it.
    relay2->stop();
    relay2->stop();
    r.proxy_a->stop();
    r.proxy_b->stop();
}

namespace {

// A second relay with `session` bound for A <-> B (their proxies' uplinks): the warm standby
// both ends keep for a pair.
std::unique_ptr<relay_forwarder> standby_relay(rig& r, uint64_t session) {
    relay_forwarder_config rc;
    rc.listen = {ep("127.0.0.1:0")};
    auto relay2 = relay_forwarder::start(std::move(rc)).value();
    for (const auto& side : {std::tuple{nid(1), nid(2), r.proxy_a->uplink_endpoint()},
                             std::tuple{nid(2), nid(1), r.proxy_b->uplink_endpoint()}}) {
        // (No structured bindings: clang 14 cannot capture them in the lambda.)
        REQUIRE(relay2->with_table([&](relay_session_table& t, uint64_t now) {
            return t.bind(session, std::get<0>(side), std::get<1>(side),
                          relay_addr::from_endpoint(std::get<2>(side)), now);
        }));
    }
    return relay2;
}

}  // namespace

TEST_CASE("relay e2e: warm standby sessions: each side sends on its own relay, both deliver") {
    rig r(false, false);
    constexpr uint64_t session2 = 78;
    auto relay2 = standby_relay(r, session2);
    auto relay2_ep = relay2->local_endpoints()[0];
    // Both proxies know session2 as a standby of their peer; only A moves its sending to it.
    REQUIRE(r.proxy_a->add_alias(rig::session, session2, relay2_ep));
    REQUIRE(r.proxy_b->add_alias(rig::session, session2, relay2_ep));
    CHECK(
        r.proxy_b->add_alias(rig::session, rig::session, relay2_ep).err().is(errc::already_exists));
    CHECK(r.proxy_b->add_alias(999, 5, relay2_ep).err().is(errc::not_found));
    REQUIRE(r.proxy_a->retarget_peer(rig::session, session2, relay2_ep));
    // The old primary stays as A's standby: B still sends on it.
    REQUIRE(r.proxy_a->add_alias(session2, rig::session, r.relay_v4));
    // A -> B now through relay2, arriving at B on its standby; B -> A still through relay 1.
    exchange(r.wg_a.get(), r.local_a, r.wg_b.get(), r.local_b, 20);
    exchange(r.wg_b.get(), r.local_b, r.wg_a.get(), r.local_a, 20);
    settle([&] { return relay2->stats().forwarded_packets == 20; });
    CHECK(relay2->stats().forwarded_packets == 20);
    // B's frames on session 1 reached A through its standby entry.
    CHECK(r.proxy_a->stats().unknown_session == 0);
    // A frame for the standby session from anyone but its relay is refused.
    auto before = r.proxy_b->stats().wrong_source;
    unique_fd intruder = udp("127.0.0.1:0");
    std::vector<uint8_t> f(relay_data_header_size + 50, 4);
    write_relay_data_header(session2, f.data());
    send_to(intruder.get(), f.data(), f.size(), r.proxy_b->uplink_endpoint());
    settle([&] { return r.proxy_b->stats().wrong_source > before; });
    CHECK(r.proxy_b->stats().wrong_source == before + 1);
    check_silence(r.wg_b.get());
    // remove_peer drops the standby too.
    CHECK(r.proxy_b->remove_peer(rig::session));
    CHECK_FALSE(r.proxy_b->remove_alias(session2));
    relay2->stop();
}

TEST_CASE("relay e2e: handshakes wake the pair at both ends; keepalives and responses do not") {
    rig r(false, false);
    std::vector<uint8_t> buf(4096);
    // A WireGuard keepalive (type 4, 32 bytes) wakes nobody: active pairs send them.
    auto keepalive = wg_message(4, 32, 0x11);
    send_to(r.wg_a.get(), keepalive.data(), keepalive.size(), r.local_a);
    REQUIRE(recv_from(r.wg_b.get(), buf, 2000).size == 32);
    // An initiation from A's WireGuard wakes A's pair, and B's when it arrives.
    auto init = wg_message(1, 148, 0x22);
    send_to(r.wg_a.get(), init.data(), init.size(), r.local_a);
    auto got = recv_from(r.wg_b.get(), buf, 2000);
    REQUIRE(got.size == 148);
    CHECK(std::memcmp(buf.data(), init.data(), init.size()) == 0);
    settle([&] { return r.wakes_a.count() == 1 && r.wakes_b.count() == 1; });
    CHECK(r.wakes_a.sessions == std::vector<uint64_t>{rig::session});
    CHECK(r.wakes_b.sessions == std::vector<uint64_t>{rig::session});
    // The response comes back on the primary (the initiation came in on it): nothing rerouted,
    // and a response wakes nobody.
    auto response = wg_message(2, 92, 0x33);
    send_to(r.wg_b.get(), response.data(), response.size(), r.local_b);
    REQUIRE(recv_from(r.wg_a.get(), buf, 2000).size == 92);
    check_silence(r.wg_a.get());
    CHECK(r.wakes_a.count() == 1);
    CHECK(r.wakes_b.count() == 1);
    CHECK(r.proxy_b->stats().response_via_initiation_session == 0);
    // Answered: a failover now sends no copy of A's initiation.
    relay_forwarder_config rc;
    rc.listen = {ep("127.0.0.1:0")};
    auto relay2 = relay_forwarder::start(std::move(rc)).value();
    REQUIRE(r.proxy_a->retarget_peer(rig::session, 80, relay2->local_endpoints()[0]));
    CHECK(r.proxy_a->stats().init_resent == 0);
    relay2->stop();
}

TEST_CASE("relay e2e: an idle pair's handshake survives a relay that died while it was idle") {
    // A and B relayed through relay 1, with session2 through relay2 as warm standby at both
    // ends (what the core keeps for an idle pair). Relay 1 dies; A's WireGuard, whose session
    // keys expired while idle, starts with an initiation, which relay 1 loses.
    rig r(false, false);
    constexpr uint64_t session2 = 79;
    auto relay2 = standby_relay(r, session2);
    auto relay2_ep = relay2->local_endpoints()[0];
    REQUIRE(r.proxy_a->add_alias(rig::session, session2, relay2_ep));
    REQUIRE(r.proxy_b->add_alias(rig::session, session2, relay2_ep));
    r.relay->stop();
    std::vector<uint8_t> buf(4096);
    auto init = wg_message(1, 148, 0x44);
    send_to(r.wg_a.get(), init.data(), init.size(), r.local_a);
    settle([&] { return r.wakes_a.count() == 1; });
    CHECK(r.wakes_a.sessions == std::vector<uint64_t>{rig::session});  // the core probes now
    check_silence(r.wg_b.get());
    // The core fails A over to its standby: the kept initiation goes through it at once.
    REQUIRE(r.proxy_a->retarget_peer(rig::session, session2, relay2_ep));
    CHECK(r.proxy_a->stats().init_resent == 1);
    auto got = recv_from(r.wg_b.get(), buf, 2000);
    REQUIRE(got.size == 148);
    CHECK(std::memcmp(buf.data(), init.data(), init.size()) == 0);
    CHECK(got.from == r.local_b);
    // It arrived on B's standby and woke B's pair (its primary session is what the core knows).
    settle([&] { return r.wakes_b.count() == 1; });
    CHECK(r.wakes_b.sessions == std::vector<uint64_t>{rig::session});
    // B's WireGuard answers: through the session the initiation came in on, not B's primary
    // (relay 1, dead).
    auto response = wg_message(2, 92, 0x55);
    send_to(r.wg_b.get(), response.data(), response.size(), r.local_b);
    got = recv_from(r.wg_a.get(), buf, 2000);
    REQUIRE(got.size == 92);
    CHECK(std::memcmp(buf.data(), response.data(), response.size()) == 0);
    CHECK(got.from == r.local_a);
    settle([&] { return r.proxy_b->stats().response_via_initiation_session == 1; });
    CHECK(r.proxy_b->stats().response_via_initiation_session == 1);
    // Data from B keeps using its primary (the core moves it when its probes say so).
    auto data = packet(4, 200);
    send_to(r.wg_b.get(), data.data(), data.size(), r.local_b);
    check_silence(r.wg_a.get());
    // A got its response: a further failover sends no copy.
    REQUIRE(r.proxy_a->retarget_peer(session2, 81, relay2_ep));
    CHECK(r.proxy_a->stats().init_resent == 1);
    settle([&] { return relay2->stats().forwarded_packets == 2; });
    CHECK(relay2->stats().forwarded_packets == 2);  // the copy and the response
    relay2->stop();
}

TEST_CASE("relay e2e: a kept initiation goes again only on a move within REKEY_TIMEOUT") {
    rig r(false, false);
    std::vector<uint8_t> buf(4096);
    r.relay->stop();
    auto init = wg_message(1, 148, 0x66);
    send_to(r.wg_a.get(), init.data(), init.size(), r.local_a);
    settle([&] { return r.wakes_a.count() == 1; });
    // The same session and relay again (a refresh, no move): no copy.
    REQUIRE(r.proxy_a->retarget_peer(rig::session, rig::session, r.relay_v4));
    CHECK(r.proxy_a->stats().init_resent == 0);
    // More than REKEY_TIMEOUT later WireGuard has sent its own retry: no copy of the old one.
    std::this_thread::sleep_for(std::chrono::milliseconds(5100));
    relay_forwarder_config rc;
    rc.listen = {ep("127.0.0.1:0")};
    auto relay2 = relay_forwarder::start(std::move(rc)).value();
    REQUIRE(r.proxy_a->retarget_peer(rig::session, 82, relay2->local_endpoints()[0]));
    CHECK(r.proxy_a->stats().init_resent == 0);
    relay2->stop();
}

TEST_CASE("relay e2e: a relay with two addresses answers each node from the one it talks to") {
    // 127.0.0.2 is as local as 127.0.0.1; each node's proxy only accepts frames from the relay
    // address it uses, as a NAT in front of it would.
    relay_forwarder_config rc;
    rc.listen = {ep("127.0.0.1:0"), ep("127.0.0.2:0")};
    auto relay = relay_forwarder::start(std::move(rc)).value();
    auto eps = relay->local_endpoints();
    relay_proxy_config pa, pb;
    pa.uplink = ep("127.0.0.1:0");
    pb.uplink = ep("127.0.0.1:0");
    auto proxy_a = relay_proxy::start(std::move(pa)).value();
    auto proxy_b = relay_proxy::start(std::move(pb)).value();
    unique_fd wg_a = udp("127.0.0.1:0"), wg_b = udp("127.0.0.1:0");
    constexpr uint64_t s = 9;
    // The control plane passes the socket index on_control reported for each request.
    REQUIRE(relay->with_table([&](relay_session_table& t, uint64_t now) {
        return t.bind(s, nid(1), nid(2), relay_addr::from_endpoint(proxy_a->uplink_endpoint()), now,
                      0);
    }));
    REQUIRE(relay->with_table([&](relay_session_table& t, uint64_t now) {
        return t.bind(s, nid(2), nid(1), relay_addr::from_endpoint(proxy_b->uplink_endpoint()), now,
                      1);
    }));
    auto local_a = proxy_a->add_peer(s, eps[0], local_endpoint(wg_a.get()).value()).value();
    auto local_b = proxy_b->add_peer(s, eps[1], local_endpoint(wg_b.get()).value()).value();
    exchange(wg_a.get(), local_a, wg_b.get(), local_b, 50);
    exchange(wg_b.get(), local_b, wg_a.get(), local_a, 50);
    CHECK(proxy_a->stats().wrong_source == 0);
    CHECK(proxy_b->stats().wrong_source == 0);
}

// UDP GSO refuses a segment size above the route's MTU (EMSGSIZE); send_batch then sends that run
// plainly, and since meshd's sockets set don't-fragment (issue 15) each of those datagrams fails
// with EMSGSIZE too: dropped and counted as oversize, never fragmented, while the runs that fit
// (before and after) go through. Needs a small MTU, so it runs in a private network namespace
// (unshare on a thread that exits afterwards: nothing to clean up, nothing leaks).
TEST_CASE("relay e2e: datagrams over the MTU are dropped and counted, never fragmented") {
    std::string skip;
    std::thread t([&] {
        if (::unshare(CLONE_NEWNET) != 0) {
            skip = "unshare(CLONE_NEWNET) needs root";
            return;
        }
        auto nl = rtnl::open();
        REQUIRE(nl);
        auto lo = nl->get_link("lo");
        REQUIRE(lo);
        REQUIRE(nl->set_mtu(lo->index, 1280));
        REQUIRE(nl->set_link_up(lo->index));

        for (bool gso : {true, false}) {
            CAPTURE(gso);
            unique_fd tx = udp("127.0.0.1:0"), rx = udp("127.0.0.1:0");
            auto dst = relay_addr::from_endpoint(local_endpoint(rx.get()).value());
            send_batch batch(64, gso);
            std::vector<uint8_t> buf(4096);
            for (size_t size : {size_t(1000), size_t(1400), size_t(1000)}) {
                CAPTURE(size);
                const bool fits = size + 28 <= 1280;
                auto p = packet(7, size);
                for (int i = 0; i < 10; ++i) REQUIRE(batch.add(p.data(), p.size(), dst, AF_INET));
                auto out = batch.flush(tx.get());
                CHECK(out.packets == (fits ? 10u : 0u));
                CHECK(out.failed == (fits ? 0u : 10u));
                CHECK(out.oversize == (fits ? 0u : 10u));
                CHECK(out.bytes == (fits ? 10 * size : 0u));
                if (!fits) continue;
                for (int i = 0; i < 10; ++i) {
                    auto got = recv_from(rx.get(), buf, 2000);
                    REQUIRE(got.size == ssize_t(size));
                    CHECK(std::memcmp(buf.data(), p.data(), size) == 0);
                }
            }
            // Nothing else arrived (no fragments reassembled behind our back).
            CHECK(recv_from(rx.get(), buf, 100).size < 0);
        }
    });
    t.join();
    if (!skip.empty()) MESSAGE("skipped: " << skip);
}
