// Relay forwarder throughput on loopback: packets/s forwarded and the forwarder thread's CPU, for
// the batched relay_forwarder (recvmmsg/sendmmsg) and, in the same run, a naive forwarder doing
// one recvfrom + one sendto per packet with the same session table. Prints figures and ratios;
// never fails on timing. Bounded: 2 sizes x 3 forwarders (recvmmsg + sendmmsg with UDP GSO,
// without GSO, naive) x (--seconds, default 2.5 s, + 0.2 s warm-up): about 17 s.
//
// Load: one generator thread sends RELAY_DATA frames for one session with sendmmsg as fast as it
// can; one sink thread receives with recvmmsg. On a small machine the generator, forwarder and
// sink share the cores, so "CPU per packet" is the steadier figure; pps is what this box does.
//
// Never fails on a figure, but exits 1 (after printing every figure) when forwarding did not work:
// a session bind that failed or did not establish the session, nothing forwarded in the window,
// nothing (or a frame other than the one sent) arriving at the sink, or a packet the forwarder
// received but neither forwarded nor had refused by a full send buffer (a table drop, a malformed
// or unroutable frame: with one bound session and the rate limits raised there must be none).
// Loss is allowed only where the design overloads on purpose: in the forwarder's receive buffer
// (the generator outruns it), a send the kernel refuses (the forwarder's send buffer is full) and
// the sink's receive buffer; all of it is printed.
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "meshd/core/wire_codec.hpp"
#include "meshd/io/recv_batch.hpp"
#include "meshd/io/relay_forwarder.hpp"
#include "meshd/io/udp_socket.hpp"

using namespace mw;
using namespace mw::meshd;
using clk = std::chrono::steady_clock;

namespace {

constexpr uint64_t session = 42;

wg_endpoint loopback_any() {
    return {*ip_address::parse("127.0.0.1"), 0};
}

node_id nid(uint8_t n) {
    std::array<uint8_t, 32> b{};
    b.fill(n);
    return node_id(b);
}

// CPU time of one thread of this process, in seconds (schedstat: ns; else stat: clock ticks).
double thread_cpu_s(pid_t tid) {
    std::ifstream ss("/proc/self/task/" + std::to_string(tid) + "/schedstat");
    unsigned long long ns = 0;
    if (ss >> ns) return double(ns) / 1e9;
    std::ifstream st("/proc/self/task/" + std::to_string(tid) + "/stat");
    std::string line;
    std::getline(st, line);
    auto p = line.rfind(')');
    if (p == std::string::npos) return 0;
    std::vector<std::string> f;
    size_t i = p + 2;
    while (i < line.size()) {
        size_t j = line.find(' ', i);
        if (j == std::string::npos) j = line.size();
        f.push_back(line.substr(i, j - i));
        i = j + 1;
    }
    if (f.size() < 13) return 0;
    return double(std::stoull(f[11]) + std::stoull(f[12])) / double(sysconf(_SC_CLK_TCK));
}

// Generator: frames for `session` to `relay`, in sendmmsg batches, until stop.
void generate(int fd, const wg_endpoint& relay, size_t frame_size, std::atomic<bool>& stop,
              std::atomic<uint64_t>& sent) {
    constexpr size_t batch = 64;
    std::vector<uint8_t> frame(frame_size, 0x5a);
    write_relay_data_header(session, frame.data());
    sockaddr_storage ss;
    socklen_t sl = relay.to_sockaddr(ss);
    std::vector<mmsghdr> msgs(batch);
    iovec iov{frame.data(), frame.size()};
    for (auto& m : msgs) {
        m.msg_hdr = msghdr{};
        m.msg_hdr.msg_name = &ss;
        m.msg_hdr.msg_namelen = sl;
        m.msg_hdr.msg_iov = &iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    uint64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        int k = ::sendmmsg(fd, msgs.data(), batch, 0);  // blocking: paces to the socket buffer
        if (k > 0) n += uint64_t(k);
    }
    sent = n;
}

// Receives the forwarded frames until stop; counts them, and separately any datagram that is not
// a frame as the generator sent it (size, session) or that does not come from the forwarder: a
// forwarder that mangles, splits (UDP GSO) or misroutes frames must not pass as throughput.
void sink(int fd, const wg_endpoint& relay, size_t frame_size, std::atomic<bool>& stop,
          std::atomic<uint64_t>& received, std::atomic<uint64_t>& bad) {
    recv_batch rx(64, 2048);
    const relay_addr from_relay = relay_addr::from_endpoint(relay);
    uint64_t n = 0, wrong = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) != 1) continue;
        int k = rx.recv(fd);
        for (int i = 0; i < k; ++i) {
            auto d = rx.datagram(size_t(i));
            auto sid = peek_relay_data_session(d);
            auto src = relay_addr::from_sockaddr(&rx.from(size_t(i)), rx.from_len(size_t(i)));
            bool ok = !rx.truncated(size_t(i)) && d.size() == frame_size && sid &&
                      *sid == session && src && *src == from_relay;
            ++(ok ? n : wrong);
        }
    }
    received = n;
    bad = wrong;
}

// One packet per syscall each way, same table and same checks: the baseline.
class naive_forwarder {
public:
    naive_forwarder() : fd_(open_udp_socket(loopback_any()).value()) {}
    wg_endpoint endpoint() const { return local_endpoint(fd_.get()).value(); }
    relay_session_table& table() { return table_; }
    void start() {
        thread_ = std::thread([this] { run(); });
        while (tid_ == 0) std::this_thread::yield();
    }
    void stop() {
        stop_ = true;
        thread_.join();
    }
    pid_t tid() const { return tid_; }
    uint64_t forwarded() const { return forwarded_; }
    // After stop(): the same accounting as relay_forwarder_stats.
    relay_forwarder_stats stats() const {
        relay_forwarder_stats s;
        s.rx_packets = rx_;
        s.forwarded_packets = forwarded_;
        s.malformed = malformed_;
        s.send_failed = send_failed_;
        s.table_drops = table_.drops();
        return s;
    }

private:
    void run() {
        tid_ = pid_t(::syscall(SYS_gettid));
        std::vector<uint8_t> buf(2048);
        while (!stop_.load(std::memory_order_relaxed)) {
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, 50) != 1) continue;
            for (;;) {  // drain without poll in between, as a naive loop would
                sockaddr_storage from;
                socklen_t fl = sizeof from;
                ssize_t n = ::recvfrom(fd_.get(), buf.data(), buf.size(), MSG_DONTWAIT,
                                       reinterpret_cast<sockaddr*>(&from), &fl);
                if (n < 0) break;
                ++rx_;
                auto sid = peek_relay_data_session({buf.data(), size_t(n)});
                auto src = relay_addr::from_sockaddr(&from, fl);
                if (!sid || !src) {
                    ++malformed_;
                    continue;
                }
                const relay_addr* to =
                    table_.route(*sid, *src, size_t(n), relay_forwarder::now_ms());
                if (!to) continue;
                sockaddr_storage dst;
                socklen_t dl = to->to_sockaddr(dst, AF_INET);
                if (::sendto(fd_.get(), buf.data(), size_t(n), MSG_DONTWAIT,
                             reinterpret_cast<sockaddr*>(&dst), dl) == n) {
                    forwarded_.fetch_add(1, std::memory_order_relaxed);
                } else {
                    ++send_failed_;
                }
            }
        }
    }

    unique_fd fd_;
    relay_table_limits limits_ = [] {
        relay_table_limits l;
        l.node_packets_per_s = 100'000'000;  // measure forwarding, not the rate limiter
        l.node_bytes_per_s = 100'000'000'000ull;
        return l;
    }();
    relay_session_table table_{limits_};
    std::atomic<bool> stop_{false};
    std::atomic<pid_t> tid_{0};
    std::atomic<uint64_t> forwarded_{0};
    uint64_t rx_ = 0, malformed_ = 0, send_failed_ = 0;  // read after stop() only
    std::thread thread_;
};

struct figures {
    double pps = 0, cpu_s = 0, seconds = 0, sent_pps = 0, recv_pps = 0, per_batch = 0;
    uint64_t window_forwarded = 0;             // forwarded during the measured window
    uint64_t sent = 0, received = 0, bad = 0;  // whole run: generator, sink (good / not)
    std::string bind_error;                    // empty when both sides bound and established
    double cpu_us_per_packet() const { return pps > 0 ? cpu_s * 1e6 / (pps * seconds) : 0; }
};

template <class Bind, class Forwarded, class Tid>
figures drive(const wg_endpoint& relay, size_t frame_size, double seconds, Bind bind,
              Forwarded forwarded, Tid tid) {
    unique_fd gen = open_udp_socket(loopback_any()).value();
    unique_fd snk = open_udp_socket(loopback_any()).value();
    figures out;
    out.bind_error = bind(relay_addr::from_endpoint(local_endpoint(gen.get()).value()),
                          relay_addr::from_endpoint(local_endpoint(snk.get()).value()));
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> sent{0}, received{0}, bad{0};
    std::thread s([&] { sink(snk.get(), relay, frame_size, stop, received, bad); });
    std::thread g([&] { generate(gen.get(), relay, frame_size, stop, sent); });
    // Warm up, then measure a steady window.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    uint64_t f0 = forwarded();
    double c0 = thread_cpu_s(tid());
    auto t0 = clk::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    uint64_t f1 = forwarded();
    double c1 = thread_cpu_s(tid());
    double dt = std::chrono::duration<double>(clk::now() - t0).count();
    stop = true;
    g.join();
    s.join();
    out.seconds = dt;
    out.window_forwarded = f1 - f0;
    out.sent = sent;
    out.received = received;
    out.bad = bad;
    out.pps = double(f1 - f0) / dt;
    out.cpu_s = c1 - c0;
    double total = dt + 0.2;
    out.sent_pps = double(sent) / total;
    out.recv_pps = double(received) / total;
    return out;
}

void print(const char* name, size_t size, const figures& f) {
    std::printf(
        "  %-8s %5zu B  %10.0f pkt/s  %8.1f Mbit/s  cpu %5.1f %%  %6.2f us/pkt"
        "  (generator %8.0f pkt/s, sink %8.0f pkt/s)\n",
        name, size, f.pps, f.pps * double(size) * 8 / 1e6, 100 * f.cpu_s / f.seconds,
        f.cpu_us_per_packet(), f.sent_pps, f.recv_pps);
}

// The bind calls of one session, A's side then B's: "" when both succeeded and the second
// established the session, else what went wrong.
std::string bind_outcome(const result<relay_bind_state>& first,
                         const result<relay_bind_state>& second) {
    if (!first) return "bind of side A failed: " + first.err().message;
    if (!second) return "bind of side B failed: " + second.err().message;
    if (*first != relay_bind_state::half_open) return "bind of side A: not half-open";
    if (*second != relay_bind_state::established) return "bind of side B: not established";
    return "";
}

// Whether the run forwarded what the design says it must; appends what did not hold to `fail`.
// `st` is read after the forwarder stopped (final counters).
void check_run(const char* name, size_t size, const figures& f, const relay_forwarder_stats& st,
               std::vector<std::string>& fail) {
    auto add = [&](const std::string& what) {
        fail.push_back(std::string(name) + " " + std::to_string(size) + " B: " + what);
    };
    auto n = [](uint64_t v) { return std::to_string(v); };
    uint64_t table_drops = 0;
    std::string drop_list;
    for (size_t i = 0; i < st.table_drops.size(); ++i) {
        table_drops += st.table_drops[i];
        if (st.table_drops[i]) {
            drop_list += std::string(" ") + to_string(relay_drop(i)) + "=" + n(st.table_drops[i]);
        }
    }
    std::printf(
        "           accounting: generator sent %llu, forwarder received %llu (%llu lost before "
        "it), forwarded %llu, send refused %llu, sink got %llu (%llu lost in its buffer), not "
        "as sent %llu, table drops %llu, malformed %llu, unroutable %llu\n",
        (unsigned long long)f.sent, (unsigned long long)st.rx_packets,
        (unsigned long long)(f.sent > st.rx_packets ? f.sent - st.rx_packets : 0),
        (unsigned long long)st.forwarded_packets, (unsigned long long)st.send_failed,
        (unsigned long long)f.received,
        (unsigned long long)(st.forwarded_packets > f.received ? st.forwarded_packets - f.received
                                                               : 0),
        (unsigned long long)f.bad, (unsigned long long)table_drops,
        (unsigned long long)st.malformed, (unsigned long long)st.no_socket);
    if (!f.bind_error.empty()) add(f.bind_error);
    if (f.window_forwarded == 0) add("nothing forwarded in the measured window");
    if (f.received == 0) add("no frame reached the sink");
    if (f.bad) add(n(f.bad) + " datagrams at the sink were not the frames sent");
    if (table_drops) add("session table dropped frames:" + drop_list);
    if (st.malformed || st.no_socket || st.control_packets) {
        add("frames not forwarded as RELAY_DATA: malformed " + n(st.malformed) + ", unroutable " +
            n(st.no_socket) + ", taken for control " + n(st.control_packets));
    }
    uint64_t accounted = st.forwarded_packets + st.send_failed + st.malformed + st.no_socket +
                         st.control_packets + table_drops;
    if (accounted != st.rx_packets) {
        add("received " + n(st.rx_packets) + " but accounted for " + n(accounted));
    }
    if (st.rx_packets > f.sent) add("received " + n(st.rx_packets) + " > sent " + n(f.sent));
    if (f.received > st.forwarded_packets) {
        add("sink got " + n(f.received) + " > forwarded " + n(st.forwarded_packets));
    }
}

}  // namespace

int main(int argc, char** argv) {
    double seconds = 2.5;
    for (int i = 1; i + 1 < argc; ++i) {
        if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atof(argv[i + 1]);
    }
    double load[3] = {0, 0, 0};
    (void)getloadavg(load, 3);
    // The load average matters: on a shared box other work takes the cores the generator, the
    // forwarder and the sink need, and pps drops with it (CPU per packet much less so).
    std::printf(
        "relay_bench: forwarder on 127.0.0.1, one session, %.1f s per run, %u CPUs, "
        "load average %.2f\n",
        seconds, std::thread::hardware_concurrency(), load[0]);

    std::vector<std::string> fail;
    for (size_t size : {size_t(1400), size_t(200)}) {
        // The real relay_forwarder, with and without UDP GSO on the send side.
        struct batched_run {
            figures f;
            double per_batch = 0;
            uint64_t send_failed = 0;
            relay_forwarder_stats st;  // after stop()
        };
        auto run_forwarder = [&](bool gso) -> batched_run {
            relay_forwarder_config rc;
            rc.listen = {loopback_any()};
            rc.gso = gso;
            rc.limits.node_packets_per_s = 100'000'000;
            rc.limits.node_bytes_per_s = 100'000'000'000ull;
            auto f = relay_forwarder::start(std::move(rc)).value();
            while (f->thread_id() == 0) std::this_thread::yield();
            batched_run out;
            out.f = drive(
                f->local_endpoints()[0], size, seconds,
                [&](relay_addr a, relay_addr b) {
                    return f->with_table([&](relay_session_table& t, uint64_t now) {
                        auto first = t.bind(session, nid(1), nid(2), a, now);
                        return bind_outcome(first, t.bind(session, nid(2), nid(1), b, now));
                    });
                },
                [&] { return f->stats().forwarded_packets; }, [&] { return f->thread_id(); });
            auto st = f->stats();
            out.per_batch = st.batches ? double(st.rx_packets) / double(st.batches) : 0;
            out.send_failed = st.send_failed;
            f->stop();
            out.st = f->stats();
            return out;
        };
        auto gso = run_forwarder(true);
        auto mmsg = run_forwarder(false);

        // Naive baseline.
        naive_forwarder n;
        n.start();
        auto naive = drive(
            n.endpoint(), size, seconds,
            [&](relay_addr a, relay_addr b) {
                auto first = n.table().bind(session, nid(1), nid(2), a, relay_forwarder::now_ms());
                return bind_outcome(
                    first, n.table().bind(session, nid(2), nid(1), b, relay_forwarder::now_ms()));
            },
            [&] { return n.forwarded(); }, [&] { return n.tid(); });
        n.stop();

        std::printf("frames of %zu bytes:\n", size);
        for (auto [name, r] : {std::pair{"mmsg+gso", &gso}, std::pair{"mmsg", &mmsg}}) {
            print(name, size, r->f);
            std::printf("           %.1f packets per recvmmsg on average; send_failed %llu\n",
                        r->per_batch, (unsigned long long)r->send_failed);
            check_run(name, size, r->f, r->st, fail);
        }
        print("naive", size, naive);
        check_run("naive", size, naive, n.stats(), fail);
        for (auto [name, r] : {std::pair{"mmsg+gso", &gso}, std::pair{"mmsg", &mmsg}}) {
            std::printf("  ratio %s/naive: %.2fx pkt/s, %.2fx less CPU per packet\n", name,
                        naive.pps > 0 ? r->f.pps / naive.pps : 0,
                        r->f.cpu_us_per_packet() > 0
                            ? naive.cpu_us_per_packet() / r->f.cpu_us_per_packet()
                            : 0);
        }
    }
    for (auto& f : fail) std::printf("FAIL: %s\n", f.c_str());
    if (!fail.empty()) {
        std::printf("relay_bench: FAILED (%zu): forwarding did not work as set up\n", fail.size());
        return 1;
    }
    std::printf("relay_bench: every run forwarded its session's frames (figures above)\n");
    return 0;
}
