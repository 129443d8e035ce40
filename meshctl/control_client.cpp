#include "meshctl/control_client.hpp"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "common/unique_fd.hpp"

namespace mw::meshctl {

namespace {

using clock = std::chrono::steady_clock;

// Responses are small (a peers list of a few thousand nodes is well under this); the cap only
// keeps a confused server from filling memory.
constexpr std::size_t max_response_bytes = 64 << 20;

int ms_left(clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Waits for `events` on fd; false on timeout. EINTR restarts with the remaining time.
result<bool> wait_for(int fd, short events, clock::time_point deadline) {
    for (;;) {
        pollfd p{fd, events, 0};
        int n = ::poll(&p, 1, ms_left(deadline));
        if (n > 0) return true;
        if (n == 0) return false;
        if (errno != EINTR) return error::from_errno(errno, "poll");
    }
}

std::string seconds_text(std::chrono::milliseconds t) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%gs", static_cast<double>(t.count()) / 1000.0);
    return buf;
}

}  // namespace

result<std::string> exchange(const std::string& socket_path, const std::string& request_line,
                             std::chrono::milliseconds timeout) {
    const auto deadline = clock::now() + timeout;
    const std::string hint =
        " (is meshd running? use --socket PATH or MESHCTL_SOCKET to choose "
        "another socket)";
    sockaddr_un addr{};
    if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path)
        return error(errc::invalid_argument,
                     "cannot connect to \"" + socket_path + "\": not a valid unix socket path");
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);

    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) return error::from_errno(errno, "socket");
    // A unix connect completes at once or fails; EAGAIN means the listener's backlog is full,
    // so retry until the deadline.
    for (;;) {
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
        int e = errno;
        if ((e == EAGAIN || e == EINTR) && ms_left(deadline) > 0) {
            ::usleep(10000);
            continue;
        }
        return error(std::error_code(e, std::system_category()),
                     "cannot connect to " + socket_path + ": " + std::strerror(e) + hint);
    }

    std::size_t off = 0;
    while (off < request_line.size()) {
        ssize_t n =
            ::send(fd.get(), request_line.data() + off, request_line.size() - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += static_cast<std::size_t>(n);
            continue;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return error::from_errno(errno, "sending to " + socket_path);
        if (!MW_TRY(wait_for(fd.get(), POLLOUT, deadline)))
            return error(errc::timeout, "meshd at " + socket_path + " did not take the request");
    }

    std::string in;
    char buf[16384];
    for (;;) {
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n > 0) {
            in.append(buf, static_cast<std::size_t>(n));
            if (auto nl = in.find('\n'); nl != std::string::npos) return in.substr(0, nl);
            if (in.size() > max_response_bytes)
                return error(errc::protocol_error,
                             "meshd at " + socket_path + " sent an oversized response");
            continue;
        }
        if (n == 0) {
            if (in.empty())
                return error(errc::protocol_error, "meshd at " + socket_path +
                                                       " closed the connection without answering");
            return in;  // no newline but complete: the caller's JSON parse decides
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return error::from_errno(errno, "reading from " + socket_path);
        if (!MW_TRY(wait_for(fd.get(), POLLIN, deadline)))
            return error(errc::timeout, "meshd at " + socket_path + " did not answer within " +
                                            seconds_text(timeout) + " (--timeout SEC)");
    }
}

}  // namespace mw::meshctl
