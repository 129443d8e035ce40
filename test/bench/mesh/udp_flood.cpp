// udp_flood: sends unauthenticated control-looking datagrams ("MW" magic, version 2, a control
// type, random bytes: they pass classify() and fail the AEAD) at one address, at a target rate,
// with sendmmsg from several source ports, for bench_control_flood (issue 17). Run it only inside
// the testbed's network namespaces, at a testbed address.
//
//   udp_flood --dst ADDR:PORT --pps N --seconds S [--size BYTES] [--sockets K]
//
// Kinds (issue 14 §6): --kind junk (the above, default); --kind data: RELAY_DATA frames for random
// session IDs (what a relay must drop as unknown_session); --replay FILE: the datagrams in FILE
// (each a big-endian u16 length and the bytes, as bench_control_flood captures them) sent again
// verbatim, round robin. --size up to 65507 (the largest UDP/IPv4 payload): larger than any legal
// frame, which the relay's fixed receive buffers truncate and drop.
//
//   udp_flood --dst ADDR:PORT --pps N --seconds S [--size BYTES] [--sockets K]
//             [--kind junk|data] [--replay FILE]
//
// Prints one line: "RESULT sent=<datagrams> seconds=<elapsed> pps=<achieved>"; exit 1 on a bad
// argument or when nothing could be sent.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "meshd/core/wire_codec.hpp"

namespace {

bool parse_endpoint(const std::string& s, sockaddr_storage& ss, socklen_t& len) {
    std::memset(&ss, 0, sizeof ss);
    auto colon = s.rfind(':');
    if (colon == std::string::npos) return false;
    std::string host = s.substr(0, colon), port = s.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    int p = std::atoi(port.c_str());
    if (p <= 0 || p > 65535) return false;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(uint16_t(p));
        len = sizeof *v4;
        return true;
    }
    if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(uint16_t(p));
        len = sizeof *v6;
        return true;
    }
    return false;
}

}  // namespace

int main(int argc, char** argv) {
    std::string dst;
    double pps = 300'000, seconds = 10;
    size_t size = 200, sockets = 8;
    std::string kind = "junk", replay;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string k = argv[i], v = argv[i + 1];
        if (k == "--dst")
            dst = v;
        else if (k == "--pps")
            pps = std::atof(v.c_str());
        else if (k == "--seconds")
            seconds = std::atof(v.c_str());
        else if (k == "--size")
            size = size_t(std::atoi(v.c_str()));
        else if (k == "--kind")
            kind = v;
        else if (k == "--replay")
            replay = v;
        else if (k == "--sockets")
            sockets = size_t(std::atoi(v.c_str()));
        else {
            std::fprintf(stderr, "udp_flood: unknown argument %s\n", k.c_str());
            return 1;
        }
    }
    sockaddr_storage to;
    socklen_t to_len = 0;
    if (dst.empty() || !parse_endpoint(dst, to, to_len) || pps <= 0 || seconds <= 0 || size < 32 ||
        size > 65507 || (kind != "junk" && kind != "data") || sockets == 0 || sockets > 256) {
        std::fprintf(stderr,
                     "usage: udp_flood --dst ADDR:PORT --pps N --seconds S [--size 32..65507] "
                     "[--sockets 1..256] [--kind junk|data] [--replay FILE]\n");
        return 1;
    }
    std::vector<int> fds;
    for (size_t i = 0; i < sockets; ++i) {
        int fd = ::socket(to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            std::perror("udp_flood: socket");
            return 1;
        }
        int buf = 4 << 20;
        (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
        fds.push_back(fd);
    }
    // A batch of distinct datagrams: control magic and version, a sealed-looking type, random
    // rest (a random "nonce" and ciphertext that no PSK opens).
    constexpr size_t batch = 64;
    std::mt19937_64 rng(std::random_device{}());
    std::vector<std::vector<uint8_t>> bufs(batch, std::vector<uint8_t>(size));
    std::vector<std::vector<uint8_t>> captured;
    if (!replay.empty()) {
        std::ifstream in(replay, std::ios::binary);
        uint8_t len[2];
        while (in.read(reinterpret_cast<char*>(len), 2)) {
            std::vector<uint8_t> d(size_t(len[0]) << 8 | len[1]);
            if (!in.read(reinterpret_cast<char*>(d.data()), std::streamsize(d.size()))) break;
            if (!d.empty()) captured.push_back(std::move(d));
        }
        if (captured.empty()) {
            std::fprintf(stderr, "udp_flood: no datagrams in %s\n", replay.c_str());
            return 1;
        }
    }
    std::vector<iovec> iov(batch);
    std::vector<mmsghdr> msgs(batch);
    for (size_t i = 0; i < batch; ++i) {
        for (auto& b : bufs[i]) b = uint8_t(rng());
        if (!captured.empty()) {
            bufs[i] = captured[i % captured.size()];
        } else if (kind == "data") {
            mw::meshd::write_relay_data_header(rng(), bufs[i].data());
        } else {
            bufs[i][0] = 'M';
            bufs[i][1] = 'W';
            bufs[i][2] = 0x02;  // the current control protocol: it reaches the AEAD
            bufs[i][3] = 0x01;  // a sealed control type (HELLO)
        }
        iov[i] = {bufs[i].data(), bufs[i].size()};
        std::memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = to_len;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto end = start + std::chrono::duration<double>(seconds);
    uint64_t sent = 0;
    size_t next_fd = 0;
    for (auto now = start; now < end; now = clock::now()) {
        // Pace: as many as the rate allows by now, in batches.
        double due = std::chrono::duration<double>(now - start).count() * pps;
        if (double(sent) >= due) {
            std::this_thread::sleep_for(std::chrono::microseconds(100));
            continue;
        }
        for (size_t i = 0; i < batch; ++i) {
            if (!captured.empty()) {
                // Replayed: verbatim, walking through the capture.
                const auto& c = captured[(sent + i) % captured.size()];
                iov[i] = {const_cast<uint8_t*>(c.data()), c.size()};
                continue;
            }
            // Vary a few bytes so that no two datagrams repeat (a data frame: its session ID).
            uint64_t r = rng();
            if (kind == "data")
                mw::meshd::write_relay_data_header(r, bufs[i].data());
            else
                std::memcpy(bufs[i].data() + 4, &r, sizeof r);
        }
        int n = ::sendmmsg(fds[next_fd], msgs.data(), batch, MSG_DONTWAIT);
        next_fd = (next_fd + 1) % fds.size();
        if (n > 0) sent += uint64_t(n);
        if (n < 0) std::this_thread::sleep_for(std::chrono::microseconds(50));  // buffer full
    }
    double el = std::chrono::duration<double>(clock::now() - start).count();
    std::printf("RESULT sent=%llu seconds=%.2f pps=%.0f\n", (unsigned long long)sent, el,
                double(sent) / el);
    for (int fd : fds) ::close(fd);
    return sent > 0 ? 0 : 1;
}
