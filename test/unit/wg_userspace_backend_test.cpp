// Userspace backend failure paths that need no root: a missing wireguard-go binary and one that
// never opens its socket are reported clearly, and nothing is left running.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
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
