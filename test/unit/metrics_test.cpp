// meshd's Prometheus endpoint: the text format writer (meshd/io/prometheus_text) and the HTTP
// server (meshd/io/metrics_server) over real TCP on loopback (127.0.0.1:0 and [::1]:0). The
// io_context runs on the test thread (pump_io_until); clients are blocking POSIX sockets on other
// threads, as Prometheus would be.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cmath>
#include <future>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "meshd/io/metrics_server.hpp"
#include "meshd/io/prometheus_text.hpp"

using mw::wg_endpoint;
using mw::meshd::metrics_server;
using mw::meshd::prometheus_text;
using namespace std::chrono_literals;

namespace {

// ---- text format ----

std::size_t count(const std::string& s, const std::string& what) {
    std::size_t n = 0;
    for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
    return n;
}

// ---- server ----

int connect_tcp(const wg_endpoint& ep) {
    sockaddr_storage ss{};
    socklen_t len = ep.to_sockaddr(ss);
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        ::close(fd);
        return -1;
    }
    timeval tv{10, 0};  // a broken server fails the test instead of hanging it
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

void send_all(int fd, const std::string& data) {
    std::size_t off = 0;
    while (off < data.size()) {
        ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
    }
}

std::string read_to_eof(int fd) {
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

// `half_close`: shut down the sending side after `data`, as `printf ... | nc -N` does.
std::string tcp_roundtrip(const wg_endpoint& ep, const std::string& data, bool half_close = false) {
    int fd = connect_tcp(ep);
    if (fd < 0) return "<connect failed>";
    send_all(fd, data);
    if (half_close) ::shutdown(fd, SHUT_WR);
    std::string out = read_to_eof(fd);
    ::close(fd);
    return out;
}

template <class Pred>
bool pump_io_until(boost::asio::io_context& io, Pred ready) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!ready()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        io.restart();
        io.run_for(5ms);
    }
    return true;
}

template <class T>
T pump_future(boost::asio::io_context& io, std::future<T>& f) {
    REQUIRE(pump_io_until(io, [&] { return f.wait_for(0s) == std::future_status::ready; }));
    return f.get();
}

std::string pump_tcp_roundtrip(boost::asio::io_context& io, const wg_endpoint& ep,
                               const std::string& data, bool half_close = false) {
    auto f = std::async(std::launch::async, [&] { return tcp_roundtrip(ep, data, half_close); });
    return pump_future(io, f);
}

struct http_response {
    int status = 0;
    std::string head;  // status line and headers, CRLFs included
    std::string body;

    // The value of header `name` (exact case as the server writes it), or "<none>".
    std::string header(const std::string& name) const {
        auto p = head.find("\r\n" + name + ": ");
        if (p == std::string::npos) return "<none>";
        p += name.size() + 4;
        return head.substr(p, head.find("\r\n", p) - p);
    }
};

http_response parse_http_response(const std::string& raw) {
    http_response r;
    auto end = raw.find("\r\n\r\n");
    REQUIRE_MESSAGE(end != std::string::npos, "no complete response head in: " << raw);
    r.head = raw.substr(0, end + 2);
    r.body = raw.substr(end + 4);
    REQUIRE(r.head.starts_with("HTTP/1.1 "));
    r.status = std::stoi(r.head.substr(9, 3));
    CHECK(r.header("Connection") == "close");
    return r;
}

http_response http_get(boost::asio::io_context& io, const wg_endpoint& ep,
                       const std::string& request) {
    return parse_http_response(pump_tcp_roundtrip(io, ep, request));
}

const std::string metrics_body = "# HELP up Whether it is up.\n# TYPE up gauge\nup 1\n";

metrics_server::provider fixed_provider(int* calls = nullptr) {
    return [calls] {
        if (calls) ++*calls;
        return metrics_body;
    };
}

}  // namespace

TEST_CASE("prometheus_text: HELP and TYPE once per family, samples grouped in order") {
    prometheus_text t;
    t.gauge("mw_peers", "Peers by path.", {{"path", "direct"}}, 3);
    t.counter("mw_rx_bytes_total", "Bytes received.", {{"peer", "a"}}, std::uint64_t{10});
    t.gauge("mw_peers", "Peers by path.", {{"path", "relay"}}, 2);
    t.counter("mw_rx_bytes_total", "ignored: the first help wins", {{"peer", "b"}}, 20);
    t.gauge("mw_up", "Up.", {}, 1);
    CHECK(t.str() ==
          "# HELP mw_peers Peers by path.\n"
          "# TYPE mw_peers gauge\n"
          "mw_peers{path=\"direct\"} 3\n"
          "mw_peers{path=\"relay\"} 2\n"
          "# HELP mw_rx_bytes_total Bytes received.\n"
          "# TYPE mw_rx_bytes_total counter\n"
          "mw_rx_bytes_total{peer=\"a\"} 10\n"
          "mw_rx_bytes_total{peer=\"b\"} 20\n"
          "# HELP mw_up Up.\n"
          "# TYPE mw_up gauge\n"
          "mw_up 1\n");
    CHECK(count(t.str(), "# TYPE") == 3);
    CHECK(t.invalid_samples() == 0);
    CHECK(t.first_invalid().empty());
    CHECK(prometheus_text().str().empty());
}

TEST_CASE("prometheus_text: escaping of label values and help") {
    prometheus_text t;
    t.gauge("m", "line one\nback\\slash \"quoted\"",
            {{"a", "q\"uote"}, {"b", "back\\slash"}, {"c", "new\nline"}, {"d", "ok ünï"}}, 1);
    CHECK(t.str() ==
          "# HELP m line one\\nback\\\\slash \"quoted\"\n"
          "# TYPE m gauge\n"
          "m{a=\"q\\\"uote\",b=\"back\\\\slash\",c=\"new\\nline\",d=\"ok ünï\"} 1\n");
}

TEST_CASE("prometheus_text: invalid samples are skipped and counted") {
    prometheus_text t;
    t.gauge("good", "h", {{"l", "v"}}, 1);
    t.gauge("", "h", {}, 1);                            // empty name
    t.gauge("1abc", "h", {}, 1);                        // starts with a digit
    t.gauge("has-dash", "h", {}, 1);                    // bad character
    t.gauge("good", "h", {{"bad-label", "v"}}, 1);      // bad label name
    t.gauge("good", "h", {{"__reserved", "v"}}, 1);     // reserved label name
    t.gauge("good", "h", {{"0x", "v"}}, 1);             // label starts with a digit
    t.gauge("good", "h", {{"x", "1"}, {"x", "2"}}, 1);  // label twice
    t.counter("good", "h", {{"l", "w"}}, 1);            // gauge name used as counter
    t.gauge("good", "h", {{"l", "v"}}, 2);              // same series again
    t.gauge("two", "h", {{"a", "1"}, {"b", "2"}}, 1);
    t.gauge("two", "h", {{"b", "2"}, {"a", "1"}}, 1);  // same series, other order
    t.counter("neg", "h", {}, -1);                     // negative counter (int)
    t.counter("neg", "h", {}, -0.5);                   // negative counter (double)
    CHECK(t.invalid_samples() == 12);
    CHECK(t.first_invalid().find("invalid metric name") != std::string::npos);
    CHECK(t.str() ==
          "# HELP good h\n# TYPE good gauge\ngood{l=\"v\"} 1\n"
          "# HELP two h\n# TYPE two gauge\ntwo{a=\"1\",b=\"2\"} 1\n");

    // Valid names, including colons (recording-rule style) and underscores.
    prometheus_text ok;
    ok.gauge("a:b_c:d", "h", {{"_x", "1"}, {"Y9", ""}}, 0);
    ok.gauge("_a", "h", {}, 0);
    CHECK(ok.invalid_samples() == 0);
    CHECK(ok.str().find("a:b_c:d{_x=\"1\",Y9=\"\"} 0\n") != std::string::npos);
}

TEST_CASE("prometheus_text: number formatting") {
    using f = prometheus_text;
    CHECK(f::format_value(0.0) == "0");
    CHECK(f::format_value(-0.0) == "0");
    CHECK(f::format_value(42.0) == "42");
    CHECK(f::format_value(-7.0) == "-7");
    CHECK(f::format_value(1e6) == "1000000");
    CHECK(f::format_value(1e15) == "1000000000000000");
    CHECK(f::format_value(0.25) == "0.25");
    CHECK(f::format_value(0.1) == "0.1");
    CHECK(f::format_value(1.5e-7) == "1.5e-07");
    CHECK(f::format_value(1e300) == "1e+300");
    CHECK(f::format_value(std::numeric_limits<double>::quiet_NaN()) == "NaN");
    CHECK(f::format_value(std::numeric_limits<double>::infinity()) == "+Inf");
    CHECK(f::format_value(-std::numeric_limits<double>::infinity()) == "-Inf");
    CHECK(f::format_value(std::uint64_t{0}) == "0");
    CHECK(f::format_value(std::numeric_limits<std::uint64_t>::max()) == "18446744073709551615");
    // Round trip of a non-integral value.
    CHECK(std::stod(f::format_value(0.1 + 0.2)) == 0.1 + 0.2);

    prometheus_text t;
    t.counter("c", "h", {}, std::numeric_limits<std::uint64_t>::max());
    t.counter("d", "h", {}, 2.5);
    t.counter("e", "h", {}, std::numeric_limits<double>::quiet_NaN());
    t.gauge("g", "h", {}, -std::numeric_limits<double>::infinity());
    t.counter("i", "h", {}, 7);  // int: no ambiguity
    std::string s = t.str();
    CHECK(s.find("\nc 18446744073709551615\n") != std::string::npos);
    CHECK(s.find("\nd 2.5\n") != std::string::npos);
    CHECK(s.find("\ne NaN\n") != std::string::npos);
    CHECK(s.find("\ng -Inf\n") != std::string::npos);
    CHECK(s.find("\ni 7\n") != std::string::npos);
    CHECK(t.invalid_samples() == 0);
}

TEST_CASE("metrics_server: GET and HEAD /metrics, 404, 405 on IPv4 and IPv6 loopback") {
    for (std::string listen : {"127.0.0.1:0", "[::1]:0"}) {
        CAPTURE(listen);
        boost::asio::io_context io;
        int calls = 0;
        auto server = metrics_server::start(io, listen, fixed_provider(&calls));
        REQUIRE_MESSAGE(server.ok(), server.err().message);
        wg_endpoint ep = (*server)->local_endpoint();
        CHECK(ep.port != 0);
        CHECK(ep.address.is_v6() == (listen[0] == '['));

        http_response r =
            http_get(io, ep, "GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n");
        CHECK(r.status == 200);
        CHECK(r.head.starts_with("HTTP/1.1 200 OK\r\n"));
        CHECK(r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
        CHECK(r.header("Content-Length") == std::to_string(metrics_body.size()));
        CHECK(r.header("Date").ends_with(" GMT"));
        CHECK(r.body == metrics_body);
        CHECK(calls == 1);

        // A query string is ignored; HTTP/1.0 and bare LF line ends are accepted.
        r = http_get(io, ep, "GET /metrics?x=1 HTTP/1.0\n\n");
        CHECK(r.status == 200);
        CHECK(r.body == metrics_body);

        r = http_get(io, ep, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(r.status == 200);
        CHECK(r.header("Content-Length") == std::to_string(metrics_body.size()));
        CHECK(r.body.empty());
        CHECK(calls == 3);

        r = http_get(io, ep, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(r.status == 404);
        r = http_get(io, ep, "GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(r.status == 404);
        r = http_get(io, ep, "HEAD /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(r.status == 404);
        CHECK(r.body.empty());

        for (std::string method : {"POST", "PUT", "DELETE", "OPTIONS"}) {
            r = http_get(io, ep,
                         method + " /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
            CHECK(r.status == 405);
            CHECK(r.header("Allow") == "GET, HEAD");
        }
        CHECK(calls == 3);
        CHECK(pump_io_until(io, [&] { return (*server)->connections() == 0; }));
    }
}

TEST_CASE("metrics_server: malformed and oversized requests") {
    boost::asio::io_context io;
    metrics_server::limits lim;
    lim.max_head_bytes = 1024;
    auto server = metrics_server::start(io, "127.0.0.1:0", fixed_provider(), lim);
    REQUIRE(server.ok());
    wg_endpoint ep = (*server)->local_endpoint();

    for (std::string garbage :
         {std::string("hello\r\n\r\n"), std::string("GET /metrics\r\n\r\n"),
          std::string("GET  /metrics HTTP/1.1\r\n\r\n"), std::string("GET /metrics HTTP/x\r\n\r\n"),
          std::string("GET metrics HTTP/1.1\r\n\r\n"), std::string("G(T /metrics HTTP/1.1\r\n\r\n"),
          std::string("GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n"),
          std::string("GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n"),
          std::string("GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"),
          std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", 14)}) {
        CAPTURE(garbage);
        http_response r = http_get(io, ep, garbage);
        CHECK(r.status == 400);
        CHECK(r.header("Content-Type") == "text/plain; charset=utf-8");
    }
    // A client that half-closes in the middle of its head.
    auto t0 = std::chrono::steady_clock::now();
    CHECK(parse_http_response(pump_tcp_roundtrip(io, ep, "GET /metrics HTTP/1.1\r\nHost", true))
              .status == 400);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);  // not by the timeout
    // A complete request followed by a half-close is served.
    CHECK(parse_http_response(pump_tcp_roundtrip(io, ep, "GET /metrics HTTP/1.1\r\n\r\n", true))
              .status == 200);
    CHECK(http_get(io, ep, "GET /metrics HTTP/2.0\r\n\r\n").status == 505);

    // Just under the limit is served; over it (with or without an end in sight) is 431, and the
    // response arrives intact although the client sent more than the server read.
    std::string head = "GET /metrics HTTP/1.1\r\nX-Pad: ";
    std::string pad(1024 - head.size() - 4, 'a');
    http_response r = http_get(io, ep, head + pad + "\r\n\r\n");
    CHECK(r.status == 200);
    r = http_get(io, ep, head + pad + "a\r\n\r\n");
    CHECK(r.status == 431);
    r = http_get(io, ep, head + std::string(64 * 1024, 'a') + "\r\n\r\n");
    CHECK(r.status == 431);
    CHECK(pump_io_until(io, [&] { return (*server)->connections() == 0; }));

    // The default limit is 8 KiB.
    auto def = metrics_server::start(io, "127.0.0.1:0", fixed_provider());
    REQUIRE(def.ok());
    std::string big = "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(8 * 1024, 'a') + "\r\n\r\n";
    CHECK(http_get(io, (*def)->local_endpoint(), big).status == 431);
    CHECK(http_get(io, (*def)->local_endpoint(),
                   "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(7 * 1024, 'a') + "\r\n\r\n")
              .status == 200);
}

TEST_CASE("metrics_server: a provider that throws gets a 500") {
    boost::asio::io_context io;
    auto server = metrics_server::start(io, "127.0.0.1:0",
                                        []() -> std::string { throw std::runtime_error("boom"); });
    REQUIRE(server.ok());
    CHECK(http_get(io, (*server)->local_endpoint(), "GET /metrics HTTP/1.1\r\n\r\n").status == 500);
}

TEST_CASE("metrics_server: slow clients are dropped, concurrent clients, connection limit") {
    boost::asio::io_context io;
    metrics_server::limits lim;
    lim.idle_timeout = 200ms;
    lim.max_clients = 2;
    auto server = metrics_server::start(io, "127.0.0.1:0", fixed_provider(), lim);
    REQUIRE(server.ok());
    wg_endpoint ep = (*server)->local_endpoint();

    SUBCASE("a client that sends nothing, or dribbles, is dropped after the timeout") {
        int silent = connect_tcp(ep);
        int dribble = connect_tcp(ep);
        REQUIRE(silent >= 0);
        REQUIRE(dribble >= 0);
        auto t0 = std::chrono::steady_clock::now();
        auto fs = std::async(std::launch::async, [silent] { return read_to_eof(silent); });
        // Bytes every 50 ms do not extend the deadline: the whole head is due in 200 ms.
        auto fd = std::async(std::launch::async, [dribble] {
            std::string req = "GET /metrics HTTP/1.1\r\n";
            for (char c : req) {
                if (::send(dribble, &c, 1, MSG_NOSIGNAL) != 1) break;
                std::this_thread::sleep_for(50ms);
            }
            return read_to_eof(dribble);
        });
        CHECK(pump_future(io, fs).empty());
        CHECK(pump_future(io, fd).empty());
        auto elapsed = std::chrono::steady_clock::now() - t0;
        CHECK(elapsed >= 150ms);
        CHECK(elapsed < 1s);  // the dribbler would need 23 × 50 ms
        ::close(silent);
        ::close(dribble);
        CHECK(pump_io_until(io, [&] { return (*server)->connections() == 0; }));
    }

    SUBCASE("two clients are served concurrently") {
        int a = connect_tcp(ep);
        int b = connect_tcp(ep);
        send_all(a, "GET /metrics HTTP/1.1\r\n");
        send_all(b, "GET /metrics HTTP/1.1\r\n");
        REQUIRE(pump_io_until(io, [&] { return (*server)->connections() == 2; }));
        // b finishes first and is answered while a is still in its head.
        send_all(b, "\r\n");
        auto fb = std::async(std::launch::async, [b] { return read_to_eof(b); });
        http_response rb = parse_http_response(pump_future(io, fb));
        CHECK(rb.status == 200);
        send_all(a, "Host: x\r\n\r\n");
        auto fa = std::async(std::launch::async, [a] { return read_to_eof(a); });
        CHECK(parse_http_response(pump_future(io, fa)).body == metrics_body);
        ::close(a);
        ::close(b);
        CHECK(pump_io_until(io, [&] { return (*server)->connections() == 0; }));
    }

    SUBCASE("at the limit a new connection closes the oldest idle one") {
        lim.idle_timeout = 5s;
        auto slow = metrics_server::start(io, "127.0.0.1:0", fixed_provider(), lim);
        REQUIRE(slow.ok());
        wg_endpoint sep = (*slow)->local_endpoint();
        int a = connect_tcp(sep);
        REQUIRE(pump_io_until(io, [&] { return (*slow)->connections() == 1; }));
        int b = connect_tcp(sep);
        REQUIRE(pump_io_until(io, [&] { return (*slow)->connections() == 2; }));
        auto t0 = std::chrono::steady_clock::now();
        CHECK(parse_http_response(pump_tcp_roundtrip(io, sep, "GET /metrics HTTP/1.1\r\n\r\n"))
                  .status == 200);
        CHECK(std::chrono::steady_clock::now() - t0 < 2s);
        CHECK((*slow)->evicted() == 1);
        // a (the oldest) was closed for it, b is still open.
        auto fa = std::async(std::launch::async, [a] { return read_to_eof(a); });
        CHECK(pump_future(io, fa).empty());
        CHECK(pump_io_until(io, [&] { return (*slow)->connections() == 1; }));
        ::close(a);
        ::close(b);
        REQUIRE(pump_io_until(io, [&] { return (*slow)->connections() == 0; }));
    }
}

TEST_CASE("metrics_server: 40 idle connections (a slow-loris) do not lock the scraper out") {
    // Before: the 32 idle connections took every slot until their 5 s timeout and each new one
    // was closed at once, so an attacker reconnecting kept /metrics unreachable.
    boost::asio::io_context io;
    metrics_server::limits lim;  // the defaults: 32 connections, 5 s for a head
    auto server = metrics_server::start(io, "127.0.0.1:0", fixed_provider(), lim);
    REQUIRE(server.ok());
    wg_endpoint ep = (*server)->local_endpoint();
    std::vector<int> idle;
    for (int i = 0; i < 40; ++i) {
        int fd = connect_tcp(ep);
        REQUIRE(fd >= 0);
        send_all(fd, "GET /metrics HTTP/1.1\r\nX-Slow: ");  // a head that never ends
        idle.push_back(fd);
        // Accepted (past the limit: accepted by closing the oldest idle one).
        const std::size_t n = static_cast<std::size_t>(i) + 1;
        REQUIRE(pump_io_until(io, [&] {
            return (*server)->connections() == std::min(n, lim.max_clients) &&
                   (*server)->evicted() == (n > lim.max_clients ? n - lim.max_clients : 0);
        }));
    }
    CHECK((*server)->evicted() == 8);
    auto t0 = std::chrono::steady_clock::now();
    for (int scrape = 0; scrape < 3; ++scrape) {
        http_response r = http_get(io, ep, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(r.status == 200);
        CHECK(r.body == metrics_body);
    }
    auto took = std::chrono::steady_clock::now() - t0;
    MESSAGE("3 scrapes with 32 idle connections open: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
    CHECK(took < 2s);  // well before the idle ones' 5 s timeout
    CHECK((*server)->connections() <= lim.max_clients);
    for (int fd : idle) ::close(fd);
    REQUIRE(pump_io_until(io, [&] { return (*server)->connections() == 0; }));
}

TEST_CASE("metrics_server: stop closes the listener and open connections") {
    boost::asio::io_context io;
    int calls = 0;
    auto server = metrics_server::start(io, "127.0.0.1:0", fixed_provider(&calls));
    REQUIRE(server.ok());
    wg_endpoint ep = (*server)->local_endpoint();
    int open = connect_tcp(ep);
    REQUIRE(pump_io_until(io, [&] { return (*server)->connections() == 1; }));
    (*server)->stop();
    (*server)->stop();  // idempotent
    CHECK((*server)->connections() == 0);
    CHECK((*server)->local_endpoint() == ep);
    auto f = std::async(std::launch::async, [open] { return read_to_eof(open); });
    CHECK(pump_future(io, f).empty());
    ::close(open);
    CHECK(connect_tcp(ep) == -1);  // ECONNREFUSED: nothing listens any more
    CHECK(calls == 0);
    // The port is free again.
    auto again = metrics_server::start(io, ep.str(), fixed_provider());
    REQUIRE_MESSAGE(again.ok(), again.err().message);
    CHECK((*again)->local_endpoint() == ep);
}

TEST_CASE("metrics_server: start errors name the address") {
    boost::asio::io_context io;
    for (std::string bad :
         {"", "127.0.0.1", "localhost:9464", "::1:9464", "[127.0.0.1]:9464", "[::1:9464",
          "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:x", "127.0.0.1:", "1.2.3:80"}) {
        CAPTURE(bad);
        auto r = metrics_server::start(io, bad, fixed_provider());
        REQUIRE(!r.ok());
        CHECK(r.err().code == mw::errc::invalid_argument);
        CHECK(r.err().message.find("\"" + bad + "\"") != std::string::npos);
    }
    auto first = metrics_server::start(io, "127.0.0.1:0", fixed_provider());
    REQUIRE(first.ok());
    std::string taken = (*first)->local_endpoint().str();
    auto second = metrics_server::start(io, taken, fixed_provider());
    REQUIRE(!second.ok());
    CHECK(second.err().code == std::error_code(EADDRINUSE, std::system_category()));
    CHECK(second.err().message.find(taken) != std::string::npos);
    CHECK(second.err().message.find("binding") != std::string::npos);
    // An address this machine does not have.
    auto foreign = metrics_server::start(io, "192.0.2.1:9464", fixed_provider());
    REQUIRE(!foreign.ok());
    CHECK(foreign.err().message.find("192.0.2.1:9464") != std::string::npos);
    CHECK(!metrics_server::start(io, "127.0.0.1:0", nullptr).ok());
}
