// Userspace backend paths that need no root: a missing wireguard-go binary and one that never
// opens its socket are reported clearly, and nothing is left running; with a stand-in that serves
// the UAPI socket (python3), wireguard-go runs in its own session, a clean stop ends it, a serving
// one is adopted (interface "lo" exists) and one whose interface is gone is replaced.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "common/wireguard/wg_userspace_backend.hpp"

using namespace mw;

namespace {

struct temp_dir {
    std::string path;
    temp_dir() {
        char t[] = "/tmp/wg_us_test.XXXXXX";
        REQUIRE(mkdtemp(t) != nullptr);
        path = t;
    }
    ~temp_dir() { (void)std::system(("rm -rf " + path).c_str()); }
};

}  // namespace

TEST_CASE("userspace backend: a missing wireguard-go binary is a clear error") {
    temp_dir dir;
    wg_backend_options o;
    o.ifname = "mwtest0";
    o.socket_dir = dir.path;
    o.wireguard_go = dir.path + "/no-such-wireguard-go";
    wg_userspace_backend be(o);
    auto st = be.up();
    REQUIRE_FALSE(st.ok());
    CHECK(st.err().message.find("cannot execute") != std::string::npos);
    CHECK(be.pid() == -1);
    CHECK(be.down().ok());
}

TEST_CASE("userspace backend: a wireguard-go that never opens its socket times out and is killed") {
    temp_dir dir;
    std::string fake = dir.path + "/fake-wireguard-go";
    std::string pidfile = dir.path + "/pid";
    {
        std::ofstream f(fake);
        f << "#!/bin/sh\necho $$ > " << pidfile << "\nexec sleep 30\n";
    }
    chmod(fake.c_str(), 0755);
    wg_backend_options o;
    o.ifname = "mwtest1";
    o.socket_dir = dir.path;
    o.wireguard_go = fake;
    o.start_timeout = std::chrono::milliseconds(300);
    wg_userspace_backend be(o);
    auto st = be.up();
    REQUIRE_FALSE(st.ok());
    CHECK(st.err().is(errc::timeout));
    CHECK(be.pid() == -1);
    std::ifstream in(pidfile);
    pid_t child = 0;
    in >> child;
    REQUIRE(child > 0);
    CHECK(kill(child, 0) != 0);  // reaped, not left behind
    // get/set without a running process fail cleanly.
    CHECK_FALSE(be.get().ok());
}

TEST_CASE("userspace backend: what up() does with what serves the socket") {
    wg_existing_probe p;
    CHECK(decide_existing(p).action == wg_existing_action::start);
    p.socket_answers = true;
    CHECK(decide_existing(p).action == wg_existing_action::refuse);  // no pid: cannot supervise
    p.socket_pid = 1234;
    CHECK(decide_existing(p).action == wg_existing_action::remove_stale);  // interface gone
    p.link_exists = true;
    CHECK(decide_existing(p).action == wg_existing_action::adopt);
    p.socket_answers = false;  // a pid and a link but nobody answers: start our own
    CHECK(decide_existing(p).action == wg_existing_action::start);
}

namespace {

// A stand-in for wireguard-go that needs no TUN: serves the UAPI socket (empty device, every set
// succeeds) and removes it on SIGTERM, like wireguard-go.
std::string write_fake_uapi_server(const std::string& dir) {
    std::string fake = dir + "/fake-uapi-wireguard-go";
    std::ofstream f(fake);
    f << R"(#!/usr/bin/env python3
import os, signal, socket, sys
path = os.path.join(os.environ.get("FAKE_SOCKET_DIR", "/var/run/wireguard"), sys.argv[-1] + ".sock")
def bye(*_):
    try: os.unlink(path)
    except OSError: pass
    os._exit(0)
signal.signal(signal.SIGTERM, bye)
try: os.unlink(path)
except OSError: pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(8)
while True:
    c, _ = s.accept()
    data = b""
    while not data.endswith(b"\n\n"):
        b = c.recv(4096)
        if not b: break
        data += b
    if data.startswith(b"get=1"):
        c.sendall(b"listen_port=51820\nerrno=0\n\n")
    elif data:
        c.sendall(b"errno=0\n\n")
    c.close()
)";
    f.close();
    chmod(fake.c_str(), 0755);
    return fake;
}

bool alive(pid_t pid) {
    return ::kill(pid, 0) == 0;
}

void wait_gone(pid_t pid) {
    for (int i = 0; i < 300 && alive(pid); ++i) ::usleep(10000);
}

}  // namespace

TEST_CASE("userspace backend: wireguard-go runs in its own session and a clean stop ends it") {
    if (::access("/usr/bin/python3", X_OK) != 0) return;
    temp_dir dir;
    ::setenv("FAKE_SOCKET_DIR", dir.path.c_str(), 1);
    wg_backend_options o;
    o.ifname = "mwtest2";  // no such link: fine for start and stop
    o.socket_dir = dir.path;
    o.wireguard_go = write_fake_uapi_server(dir.path);
    wg_userspace_backend be(o);
    REQUIRE(be.up().ok());
    pid_t pid = be.pid();
    REQUIRE(pid > 0);
    CHECK_FALSE(be.adopted());
    // Not in our session or process group: a SIGKILL of meshd's group leaves it running.
    CHECK(::getsid(pid) == pid);
    CHECK(::getpgid(pid) != ::getpgid(0));
    CHECK(be.down().ok());
    wait_gone(pid);
    CHECK_FALSE(alive(pid));
    CHECK(::access(be.socket_path().c_str(), F_OK) != 0);
}

// A wireguard-go left behind by a killed meshd: `program` serving `ifname` in a session of its own.
// Its output goes to /dev/null and it is killed and reaped when the guard goes, also when a check
// fails: in its own session it outlives the test otherwise, holding the test's output pipe (and
// every fd the test inherited, e.g. test/fuzz/run.sh's lock) open, and CTest waits for that pipe
// until its timeout (CI: asan_unit_sim, then e2e_mesh_asan behind the lock).
struct left_behind {
    pid_t pid = -1;
    left_behind(const std::string& program, const std::string& ifname) {
        pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            ::setsid();
            int null = ::open("/dev/null", O_RDWR);
            if (null >= 0) {
                ::dup2(null, STDOUT_FILENO);
                ::dup2(null, STDERR_FILENO);
            }
            ::execl(program.c_str(), "wireguard-go", "-f", ifname.c_str(), nullptr);
            ::_exit(127);
        }
    }
    left_behind(const left_behind&) = delete;
    left_behind& operator=(const left_behind&) = delete;
    // Waits up to 10 s for it to exit on its own (stopped by the backend or by the test); its
    // wait status. Bounded: after a failed check nothing may stop it, and the test must fail,
    // not block (it is killed then, and the check fails).
    int reap() {
        int st = 0;
        for (int i = 0; i < 1000; ++i) {
            pid_t r = ::waitpid(pid, &st, WNOHANG);
            if (r == pid) {
                pid = -1;
                return st;
            }
            if (r < 0 && errno != EINTR) break;
            ::usleep(10000);
        }
        FAIL_CHECK("pid " << pid << " did not exit within 10 s; killed");
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &st, 0);
        pid = -1;
        return st;
    }
    ~left_behind() {
        if (pid <= 0) return;
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
};

// Until the socket accepts a connection: the file appears at bind(), before listen(), and a
// connect in between is refused, which the backend rightly reads as a stale socket.
void wait_for_socket(const std::string& sock) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    REQUIRE(sock.size() < sizeof a.sun_path);
    std::memcpy(a.sun_path, sock.c_str(), sock.size());
    bool up = false;
    for (int i = 0; i < 3000 && !up; ++i) {
        int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        up = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        ::close(fd);
        if (!up) ::usleep(10000);
    }
    REQUIRE_MESSAGE(up, sock << " does not accept connections after 30 s");
}

TEST_CASE("userspace backend: a serving wireguard-go is adopted, a stale one is replaced") {
    if (::access("/usr/bin/python3", X_OK) != 0) return;
    temp_dir dir;
    ::setenv("FAKE_SOCKET_DIR", dir.path.c_str(), 1);
    std::string fake = write_fake_uapi_server(dir.path);
    // "lo" always exists: stands for the interface a killed meshd's wireguard-go still serves.
    for (std::string ifname : {"lo", "mwgone0"}) {
        CAPTURE(ifname);
        left_behind left(fake, ifname);
        std::string sock = dir.path + "/" + ifname + ".sock";
        wait_for_socket(sock);
        wg_backend_options o;
        o.ifname = ifname;
        o.socket_dir = dir.path;
        o.wireguard_go = fake;
        wg_userspace_backend be(o);
        REQUIRE(be.up().ok());
        if (ifname == "lo") {
            CHECK(be.adopted());
            CHECK(be.pid() == left.pid);
            auto d = be.get();
            REQUIRE(d.ok());
            CHECK(d->listen_port == 51820);
        } else {
            // Its interface is gone: stopped, and a new one serves.
            CHECK_FALSE(be.adopted());
            CHECK(be.pid() != left.pid);
            CHECK(be.pid() > 0);
            left.reap();
        }
        CHECK(be.down().ok());
        if (ifname == "lo") {
            // Not our child: the test reaps it; down() stopped it.
            CHECK(WIFEXITED(left.reap()));
        }
        CHECK(::access(sock.c_str(), F_OK) != 0);
    }
}

TEST_CASE("userspace backend: a process on the socket that is not our wireguard-go is left alone") {
    if (::access("/usr/bin/python3", X_OK) != 0) return;
    temp_dir dir;
    ::setenv("FAKE_SOCKET_DIR", dir.path.c_str(), 1);
    std::string fake = write_fake_uapi_server(dir.path);
    // Another program (a copy: another file) serving the same name, e.g. another meshd's
    // wireguard-go or boringtun: neither adopted nor stopped, whether its interface exists or not.
    const std::string other = dir.path + "/other-wireguard";
    REQUIRE(std::system(("cp " + fake + " " + other).c_str()) == 0);
    for (std::string ifname : {"lo", "mwgone1"}) {
        CAPTURE(ifname);
        left_behind left(other, ifname);
        std::string sock = dir.path + "/" + ifname + ".sock";
        wait_for_socket(sock);
        wg_backend_options o;
        o.ifname = ifname;
        o.socket_dir = dir.path;
        o.wireguard_go = fake;
        wg_userspace_backend be(o);
        auto st = be.up();
        REQUIRE_FALSE(st.ok());
        CHECK(st.err().is(mw::errc::already_exists));
        CHECK(st.err().message.find("does not run") != std::string::npos);
        CHECK(alive(left.pid));
        CHECK(::access(sock.c_str(), F_OK) == 0);
        ::kill(left.pid, SIGTERM);
        left.reap();
    }
}
