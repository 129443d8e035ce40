// session_flood: RELAY_SESSION_REQUESTs for made-up pairs at a relay, each one valid (sealed with
// the cluster PSK, pair-tagged, cookie-proven, a fresh counter), for bench_control_flood (issue 14
// §6). It is a PSK holder: it makes a fresh node identity, registers it with the relay (HELLO,
// COOKIE_REPLY, HELLO with the cookie), then asks for sessions from itself to random node IDs
// with random session IDs, so what holds it is the relay's session table limits
// (relayService.maxSessionsPerNode, maxSessions), not the AEAD. The record it registers has no
// pod CIDRs and no endpoints: the other nodes learn a node they never reach.
// Run it only inside the testbed's network namespaces, at a testbed address.
//
//   session_flood --dst ADDR:PORT --relay-key BASE64 --psk FILE --rate N --seconds S
//
// Prints "RESULT sent=<requests> accepted=<n> rejected=<n> cookies=<n> registered=<0|1>
// seconds=<elapsed> pps=<achieved>"; exit 1 on a bad argument, when the relay never answered the
// registration, or when nothing could be sent.
#include <poll.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "meshd/core/control_channel.hpp"
#include "meshd/core/node_identity.hpp"
#include "meshd/core/psk_sealer.hpp"
#include "meshd/io/udp_socket.hpp"
#include "meshd/psk_file.hpp"

using namespace mw;
using namespace mw::meshd;

namespace {

aead_nonce fresh_nonce() {
    aead_nonce n;
    randombytes_buf(n.data(), n.size());
    return n;
}

uint64_t random_u64() {
    uint64_t v;
    randombytes_buf(&v, sizeof v);
    return v;
}

struct flooder {
    int fd = -1;
    wg_endpoint relay;
    sockaddr_storage to{};
    socklen_t to_len = 0;
    control_channel* ch = nullptr;
    node_id relay_id;
    cookie_bytes cookie{};
    bool have_cookie = false, registered = false;
    uint64_t accepted = 0, rejected = 0, cookies = 0;

    bool send(const message_body& body) {
        auto d = ch->send(body, relay_id, fresh_nonce());
        if (!d) return false;
        return ::sendto(fd, d->data(), d->size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&to),
                        to_len) == ssize_t(d->size());
    }
    // Reads what the relay answered (non-blocking unless wait_ms > 0).
    void receive(int wait_ms) {
        uint8_t buf[65536];
        for (;;) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, wait_ms) <= 0) return;
            wait_ms = 0;
            ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n <= 0) return;
            auto m = ch->receive(std::span<const uint8_t>(buf, size_t(n)), 0);
            if (!m) continue;
            std::visit(
                [&](const auto& b) {
                    using T = std::decay_t<decltype(b)>;
                    if constexpr (std::is_same_v<T, cookie_reply_msg>) {
                        cookie = b.cookie;
                        have_cookie = true;
                        ++cookies;
                    } else if constexpr (std::is_same_v<T, records_msg>) {
                        registered = true;
                    } else if constexpr (std::is_same_v<T, relay_session_accept_msg>) {
                        ++accepted;
                    } else if constexpr (std::is_same_v<T, relay_session_reject_msg>) {
                        ++rejected;
                    }
                },
                m->body);
        }
    }
};

}  // namespace

int main(int argc, char** argv) {
    std::string dst, relay_key, psk_path;
    double rate = 2000, seconds = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string k = argv[i], v = argv[i + 1];
        if (k == "--dst")
            dst = v;
        else if (k == "--relay-key")
            relay_key = v;
        else if (k == "--psk")
            psk_path = v;
        else if (k == "--rate")
            rate = std::atof(v.c_str());
        else if (k == "--seconds")
            seconds = std::atof(v.c_str());
        else {
            std::fprintf(stderr, "session_flood: unknown argument %s\n", k.c_str());
            return 1;
        }
    }
    auto ep = wg_endpoint::parse(dst);
    auto key = wg_key::from_base64(relay_key);
    if (!ep || !key || psk_path.empty() || rate <= 0 || seconds <= 0 || sodium_init() < 0) {
        std::fprintf(stderr,
                     "usage: session_flood --dst ADDR:PORT --relay-key BASE64 --psk FILE --rate N "
                     "--seconds S\n");
        return 1;
    }
    auto psk = psk_file::read(psk_path);
    if (!psk) {
        std::fprintf(stderr, "session_flood: %s\n", psk.err().message.c_str());
        return 1;
    }
    auto sealer = psk_sealer::create(psk->bytes());
    if (!sealer) {
        std::fprintf(stderr, "session_flood: %s\n", sealer.err().message.c_str());
        return 1;
    }
    identity_seed seed;
    randombytes_buf(seed.data(), seed.size());
    const node_identity me = node_identity::from_seed(seed);
    // A boot epoch above any honest restart count (the relay keeps per-sender replay state).
    control_channel ch(me, std::move(*sealer), uint64_t(std::time(nullptr)));
    const wg_key relay_pub = *key;
    ch.set_key_source([relay_pub](const node_id& id) -> std::optional<wg_key> {
        if (id == node_id::of(relay_pub)) return relay_pub;
        return std::nullopt;
    });

    flooder f;
    f.ch = &ch;
    f.relay = *ep;
    f.relay_id = node_id::of(relay_pub);
    f.to_len = f.relay.to_sockaddr(f.to);
    auto sock =
        open_udp_socket(wg_endpoint{f.relay.address.is_v4() ? ip_address::parse("0.0.0.0").value()
                                                            : ip_address::parse("::").value(),
                                    0});
    if (!sock) {
        std::fprintf(stderr, "session_flood: %s\n", sock.err().message.c_str());
        return 1;
    }
    f.fd = sock->get();

    peer_record rec;
    rec.name = "session-flood-" + std::to_string(::getpid());
    rec.seq = 1;
    rec.lifetime_ms = 600'000;
    if (auto s = rec.sign(me); !s) {
        std::fprintf(stderr, "session_flood: record: %s\n", s.err().message.c_str());
        return 1;
    }
    // Registration: HELLO, the relay's COOKIE_REPLY, HELLO with the cookie, its RECORDS.
    for (int attempt = 0; attempt < 20 && !f.registered; ++attempt) {
        hello_msg h;
        h.request_id = random_u64();
        h.flags = hello_msg::flag_want_records | hello_msg::flag_ack;
        h.record = rec;
        if (f.have_cookie) h.cookie = f.cookie;
        f.send(h);
        f.receive(250);
    }
    if (!f.registered) {
        std::fprintf(stderr, "session_flood: the relay did not answer the registration\n");
        std::printf("RESULT sent=0 accepted=0 rejected=0 cookies=%llu registered=0\n",
                    (unsigned long long)f.cookies);
        return 1;
    }

    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto end = start + std::chrono::duration<double>(seconds);
    uint64_t sent = 0;
    for (auto now = start; now < end; now = clock::now()) {
        double due = std::chrono::duration<double>(now - start).count() * rate;
        if (double(sent) >= due) {
            f.receive(0);
            std::this_thread::sleep_for(std::chrono::microseconds(200));
            continue;
        }
        relay_session_request_msg r;
        r.request_id = random_u64();
        r.cookie = f.cookie;
        r.session_id = random_u64();
        r.from = me.id();
        std::array<uint8_t, 32> other;
        randombytes_buf(other.data(), other.size());
        r.to = node_id(other);
        if (f.send(r)) ++sent;
    }
    f.receive(500);
    double el = std::chrono::duration<double>(clock::now() - start).count();
    std::printf(
        "RESULT sent=%llu accepted=%llu rejected=%llu cookies=%llu registered=1 seconds=%.2f "
        "pps=%.0f\n",
        (unsigned long long)sent, (unsigned long long)f.accepted, (unsigned long long)f.rejected,
        (unsigned long long)f.cookies, el, double(sent) / el);
    return sent > 0 ? 0 : 1;
}
