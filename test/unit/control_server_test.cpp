// meshd's control socket server (meshd/io/control_server): one JSON line in, one out, over a unix
// socket in a temporary directory. The io_context runs on the test thread (pump_until); clients
// are plain blocking POSIX sockets on other threads, as meshctl is.
#include "meshd/io/control_server.hpp"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using json = nlohmann::json;
using mw::meshd::control_server;
using namespace std::chrono_literals;

namespace {

struct ctl_tmp_dir {
    std::string path;
    ctl_tmp_dir() {
        char tmpl[] = "/tmp/mw-ctl-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~ctl_tmp_dir() { fs::remove_all(path); }
};

int connect_unix(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return -1;
    }
    timeval tv{10, 0};  // a broken server fails the test instead of hanging it
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

std::string read_all(int fd) {
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

// Sends `data` as is and returns everything the server wrote before closing.
std::string roundtrip(const std::string& path, const std::string& data) {
    int fd = connect_unix(path);
    if (fd < 0) return "<connect failed>";
    std::size_t off = 0;
    while (off < data.size()) {
        ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
    }
    std::string out = read_all(fd);
    ::close(fd);
    return out;
}

// Runs the io_context on this thread until `ready()` or 10 s.
template <class Pred>
bool pump_until(boost::asio::io_context& io, Pred ready) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!ready()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        io.restart();
        io.run_for(5ms);
    }
    return true;
}

std::string pump_roundtrip(boost::asio::io_context& io, const std::string& path,
                           const std::string& data) {
    auto f = std::async(std::launch::async, [&] { return roundtrip(path, data); });
    REQUIRE(pump_until(io, [&] { return f.wait_for(0s) == std::future_status::ready; }));
    return f.get();
}

json parse_line(const std::string& line) {
    REQUIRE(!line.empty());
    CHECK(line.back() == '\n');
    CHECK(line.find('\n') == line.size() - 1);
    return json::parse(line);
}

control_server::handler echo_handler(int* calls = nullptr) {
    return [calls](const json& req, control_server::reply_fn reply) {
        if (calls) ++*calls;
        reply(json{{"ok", true}, {"result", {{"echo", req}}}});
    };
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

// A socket file nobody listens on, as a crashed meshd leaves behind.
void make_stale_socket(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    ::close(fd);
}

}  // namespace

TEST_CASE("control_server: request and response, socket file mode, parent dir, removal") {
    ctl_tmp_dir dir;
    boost::asio::io_context io;
    std::string path = dir.path + "/run/meshwire/meshd.sock";  // parents do not exist yet
    int calls = 0;
    auto server = control_server::start(io, path, echo_handler(&calls));
    REQUIRE_MESSAGE(server.ok(), (server.ok() ? "" : server.err().message));
    CHECK((*server)->path() == path);
    CHECK(fs::is_socket(path));
    CHECK(mode_of(path) == 0660);
    CHECK(mode_of(dir.path + "/run") == 0755);
    CHECK(mode_of(dir.path + "/run/meshwire") == 0755);

    json resp = parse_line(pump_roundtrip(io, path,
                                          R"({"cmd":"status"})"
                                          "\n"));
    CHECK(resp["ok"] == true);
    CHECK(resp["result"]["echo"] == json{{"cmd", "status"}});
    CHECK(calls == 1);

    // CRLF and bytes after the first line are tolerated (only the first line counts).
    resp = parse_line(pump_roundtrip(io, path, "{\"cmd\":\"peers\"}\r\n{\"cmd\":\"x\"}\n"));
    CHECK(resp["result"]["echo"]["cmd"] == "peers");

    // A client that half-closes without a newline still gets its answer.
    auto f = std::async(std::launch::async, [&] {
        int fd = connect_unix(path);
        std::string req = R"({"cmd":"relays"})";
        (void)!::write(fd, req.data(), req.size());
        ::shutdown(fd, SHUT_WR);
        std::string out = read_all(fd);
        ::close(fd);
        return out;
    });
    REQUIRE(pump_until(io, [&] { return f.wait_for(0s) == std::future_status::ready; }));
    CHECK(parse_line(f.get())["result"]["echo"]["cmd"] == "relays");

    REQUIRE(pump_until(io, [&] { return (*server)->connections() == 0; }));
    server->reset();
    CHECK(!fs::exists(path));
}

TEST_CASE("control_server: the socket file is never accessible by others, even at bind") {
    if (geteuid() != 0) {  // it chowns to another uid and connects as one
        MESSAGE("skipped: needs root");
        return;
    }
    ctl_tmp_dir dir;
    // umask 0: what the kernel gives a plain bind() then is 0777, for as long as it takes to chmod.
    struct umask_guard {
        mode_t old = ::umask(0);
        ~umask_guard() { ::umask(old); }
    } guard;
    SUBCASE("bind_unix_socket: exact mode at bind, not after") {
        // The control: a plain bind under umask 0 makes the file 0777 (what start() did until
        // its chmod; it listened only after the chmod, so nobody could connect in between).
        std::string plain = dir.path + "/plain.sock";
        {
            mw::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            std::strncpy(addr.sun_path, plain.c_str(), sizeof addr.sun_path - 1);
            REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        }
        CHECK(mode_of(plain) == 0777);
        // What bind_unix_socket relies on: the mode set on the socket before bind() is the
        // file's from its creation (no chmod here).
        mw::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(::fchmod(fd.get(), 0660) == 0);
        std::string early = dir.path + "/early.sock";
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, early.c_str(), sizeof addr.sun_path - 1);
        REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        CHECK(mode_of(early) == 0660);  // the kernel behaviour bind_unix_socket relies on
        auto b = mw::meshd::bind_unix_socket(dir.path + "/b.sock", 0600);
        REQUIRE(b.ok());
        CHECK(mode_of(dir.path + "/b.sock") == 0600);
    }
    SUBCASE("a client of another uid cannot connect; the owner can") {
        boost::asio::io_context io;
        std::string path = dir.path + "/run/meshd.sock";
        int calls = 0;
        auto server = control_server::start(io, path, echo_handler(&calls));
        REQUIRE(server.ok());
        CHECK(mode_of(path) == 0660);
        // /tmp/mw-ctl-XXXXXX is 0700: let the other uid reach the socket's directory.
        REQUIRE(::chmod(dir.path.c_str(), 0755) == 0);
        pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
            int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
            int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
            ::_exit(rc == 0 ? 1 : errno == EACCES ? 0 : 3);
        }
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);  // EACCES
        json resp = parse_line(pump_roundtrip(io, path, "{\"cmd\":\"status\"}\n"));
        CHECK(resp["ok"] == true);
    }
    SUBCASE("a socket directory others may write or another user owns is refused") {
        boost::asio::io_context io;
        int calls = 0;
        std::string open_dir = dir.path + "/open";
        REQUIRE(::mkdir(open_dir.c_str(), 0777) == 0);
        auto r = control_server::start(io, open_dir + "/meshd.sock", echo_handler(&calls));
        REQUIRE_FALSE(r.ok());
        CHECK_MESSAGE(
            r.err().message.find("is writable by group or others (mode 0777)") != std::string::npos,
            r.err().message);
        CHECK_FALSE(fs::exists(open_dir + "/meshd.sock"));
        REQUIRE(::chmod(open_dir.c_str(), 01777) ==
                0);  // sticky, as /tmp: others cannot replace it
        CHECK(control_server::start(io, open_dir + "/meshd.sock", echo_handler(&calls)).ok());
        std::string theirs = dir.path + "/theirs";
        REQUIRE(::mkdir(theirs.c_str(), 0755) == 0);
        REQUIRE(::chown(theirs.c_str(), 65534, 65534) == 0);
        auto t = control_server::start(io, theirs + "/meshd.sock", echo_handler(&calls));
        REQUIRE_FALSE(t.ok());
        CHECK(t.err().message.find("is owned by uid 65534") != std::string::npos);
    }
}

TEST_CASE("control_server: asynchronous reply, reply twice, reply from another thread") {
    ctl_tmp_dir dir;
    boost::asio::io_context io;
    std::string path = dir.path + "/meshd.sock";
    boost::asio::steady_timer timer(io);
    auto server = control_server::start(io, path, [&](const json&, control_server::reply_fn reply) {
        // Answer 50 ms later from the io_context (like a ping completing), then once more.
        timer.expires_after(50ms);
        timer.async_wait([reply](const boost::system::error_code&) {
            reply(json{{"ok", true}, {"result", {{"n", 1}}}});
            reply(json{{"ok", true}, {"result", {{"n", 2}}}});  // ignored
        });
    });
    REQUIRE(server.ok());
    auto start = std::chrono::steady_clock::now();
    json resp = parse_line(pump_roundtrip(io, path, "{\"cmd\":\"ping\"}\n"));
    CHECK(std::chrono::steady_clock::now() - start >= 50ms);
    CHECK(resp["result"]["n"] == 1);

    // A reply_fn handed to a worker thread.
    std::thread worker;
    auto server2 = control_server::start(
        io, dir.path + "/b.sock", [&](const json&, control_server::reply_fn reply) {
            worker = std::thread([reply] {
                std::this_thread::sleep_for(20ms);
                reply(json{{"ok", false}, {"error", "from a thread"}});
            });
        });
    REQUIRE(server2.ok());
    resp = parse_line(pump_roundtrip(io, dir.path + "/b.sock", "{}\n"));
    worker.join();
    CHECK(resp == json{{"ok", false}, {"error", "from a thread"}});
}

TEST_CASE("control_server: malformed requests are answered by the server") {
    ctl_tmp_dir dir;
    boost::asio::io_context io;
    std::string path = dir.path + "/meshd.sock";
    int calls = 0;
    auto server = control_server::start(io, path, echo_handler(&calls));
    REQUIRE(server.ok());

    for (std::string bad :
         {"{not json\n", "\n", "[1,2]\n", "\"status\"\n", "{\"cmd\":\"st\xff\"\n"}) {
        CAPTURE(bad);
        json resp = parse_line(pump_roundtrip(io, path, bad));
        CHECK(resp["ok"] == false);
        CHECK(resp["error"].get<std::string>().find("malformed request") == 0);
    }
    CHECK(calls == 0);

    // A handler that throws does not take the server down; the client learns why.
    auto server2 = control_server::start(
        io, dir.path + "/t.sock",
        [](const json& req, control_server::reply_fn) { (void)req.at("missing"); });
    REQUIRE(server2.ok());
    json resp = parse_line(pump_roundtrip(io, dir.path + "/t.sock", "{}\n"));
    CHECK(resp["ok"] == false);
    CHECK(resp["error"].get<std::string>().find("internal error:") == 0);
    // A response holding invalid UTF-8 (e.g. an interface name read from the kernel) is still
    // sent, with the bad bytes replaced, instead of throwing out of the server.
    auto server3 = control_server::start(io, dir.path + "/u.sock",
                                         [](const json&, control_server::reply_fn reply) {
                                             reply(json{{"ok", false}, {"error", "bad \xff"}});
                                         });
    REQUIRE(server3.ok());
    resp = parse_line(pump_roundtrip(io, dir.path + "/u.sock", "{}\n"));
    CHECK(resp["error"] == "bad \xef\xbf\xbd");
}

TEST_CASE("control_server: request size limit") {
    ctl_tmp_dir dir;
    boost::asio::io_context io;
    std::string path = dir.path + "/meshd.sock";
    int calls = 0;
    auto server = control_server::start(io, path, echo_handler(&calls));
    REQUIRE(server.ok());

    // Exactly 64 KiB including the newline is accepted.
    std::string max_req = "{\"cmd\":\"status\"}";
    max_req.append(64 * 1024 - 1 - max_req.size(), ' ');
    max_req += '\n';
    REQUIRE(max_req.size() == 64 * 1024);
    CHECK(parse_line(pump_roundtrip(io, path, max_req))["ok"] == true);
    CHECK(calls == 1);

    // One byte more is refused, as is a long line without any newline.
    std::string over = max_req;
    over.insert(over.begin() + 1, ' ');
    json resp = parse_line(pump_roundtrip(io, path, over));
    CHECK(resp["ok"] == false);
    CHECK(resp["error"].get<std::string>().find("too long") != std::string::npos);
    resp = parse_line(pump_roundtrip(io, path, std::string(100 * 1024, 'a')));
    CHECK(resp["ok"] == false);
    CHECK(calls == 1);
}

TEST_CASE("control_server: concurrent clients are served at the same time") {
    ctl_tmp_dir dir;
    boost::asio::io_context io;
    std::string path = dir.path + "/meshd.sock";
    constexpr int n = 8;
    // Replies are held back until all n requests are in: only works if the clients are
    // connected concurrently.
    std::vector<std::pair<int, control_server::reply_fn>> pending;
    auto server =
        control_server::start(io, path, [&](const json& req, control_server::reply_fn reply) {
            pending.emplace_back(req.at("i").get<int>(), std::move(reply));
            if (pending.size() == n)
                for (auto& [i, r] : pending) r(json{{"ok", true}, {"result", {{"i", i}}}});
        });
    REQUIRE(server.ok());
    std::vector<std::future<std::string>> clients;
    for (int i = 0; i < n; ++i)
        clients.push_back(std::async(std::launch::async, [&path, i] {
            return roundtrip(path, json{{"i", i}}.dump() + "\n");
        }));
    REQUIRE(pump_until(io, [&] {
        for (auto& c : clients)
            if (c.wait_for(0s) != std::future_status::ready) return false;
        return true;
    }));
    for (int i = 0; i < n; ++i) CHECK(parse_line(clients[i].get())["result"]["i"] == i);
}

TEST_CASE("control_server: idle clients are dropped, busy limit") {
    ctl_tmp_dir dir;
    boost::asio::io_context io;
    std::string path = dir.path + "/meshd.sock";
    control_server::limits lim;
    lim.idle_timeout = 100ms;
    lim.max_clients = 2;
    auto server = control_server::start(io, path, echo_handler(), lim);
    REQUIRE(server.ok());

    // Two silent clients fill the server; a third is told it is busy; after the idle timeout
    // the silent ones are closed without a response and a new client is served again.
    int a = connect_unix(path), b = connect_unix(path);
    REQUIRE(pump_until(io, [&] { return (*server)->connections() == 2; }));
    json resp = parse_line(pump_roundtrip(io, path, "{}\n"));
    CHECK(resp["ok"] == false);
    CHECK(resp["error"].get<std::string>().find("busy") == 0);
    auto fa = std::async(std::launch::async, [a] { return read_all(a); });
    auto fb = std::async(std::launch::async, [b] { return read_all(b); });
    REQUIRE(pump_until(io, [&] {
        return fa.wait_for(0s) == std::future_status::ready &&
               fb.wait_for(0s) == std::future_status::ready;
    }));
    CHECK(fa.get().empty());
    CHECK(fb.get().empty());
    ::close(a);
    ::close(b);
    CHECK((*server)->connections() == 0);
    CHECK(parse_line(pump_roundtrip(io, path, "{}\n"))["ok"] == true);
}

TEST_CASE("control_server: stale socket replaced, other files and live sockets refused") {
    ctl_tmp_dir dir;
    boost::asio::io_context io;
    std::string path = dir.path + "/meshd.sock";

    make_stale_socket(path);
    REQUIRE(fs::is_socket(path));
    auto server = control_server::start(io, path, echo_handler());
    REQUIRE_MESSAGE(server.ok(), (server.ok() ? "" : server.err().message));
    CHECK(parse_line(pump_roundtrip(io, path, "{}\n"))["ok"] == true);

    // A second server on the same live socket is refused, and the first keeps its file.
    auto second = control_server::start(io, path, echo_handler());
    REQUIRE(!second.ok());
    CHECK(second.err().is(mw::errc::already_exists));
    CHECK(second.err().message.find("in use") != std::string::npos);
    CHECK(parse_line(pump_roundtrip(io, path, "{}\n"))["ok"] == true);
    server->reset();
    CHECK(!fs::exists(path));

    // A regular file (a config typo pointing at something else) is never removed.
    std::ofstream(path) << "precious";
    auto refused = control_server::start(io, path, echo_handler());
    REQUIRE(!refused.ok());
    CHECK(refused.err().is(mw::errc::already_exists));
    CHECK(refused.err().message.find("not a socket") != std::string::npos);
    std::ifstream in(path);
    std::string content;
    in >> content;
    CHECK(content == "precious");

    // A directory at the path, too long a path.
    fs::create_directory(dir.path + "/d");
    CHECK(!control_server::start(io, dir.path + "/d", echo_handler()).ok());
    CHECK(!control_server::start(io, dir.path + "/" + std::string(120, 'x'), echo_handler()).ok());
}

TEST_CASE("control_server: stop drops open connections; a later reply is harmless") {
    ctl_tmp_dir dir;
    boost::asio::io_context io;
    std::string path = dir.path + "/meshd.sock";
    control_server::reply_fn held;
    auto server = control_server::start(
        io, path, [&](const json&, control_server::reply_fn reply) { held = std::move(reply); });
    REQUIRE(server.ok());
    auto f = std::async(std::launch::async, [&] { return roundtrip(path, "{}\n"); });
    REQUIRE(pump_until(io, [&] { return static_cast<bool>(held); }));
    server->reset();
    CHECK(!fs::exists(path));
    REQUIRE(pump_until(io, [&] { return f.wait_for(0s) == std::future_status::ready; }));
    CHECK(f.get().empty());
    held(json{{"ok", true}});
    io.restart();
    io.poll();
    held = nullptr;
    CHECK(connect_unix(path) < 0);
}

TEST_CASE("control_server: a handler that drops its reply closes the connection") {
    ctl_tmp_dir dir;
    boost::asio::io_context io;
    std::string path = dir.path + "/meshd.sock";
    auto server = control_server::start(io, path, [](const json&, control_server::reply_fn) {});
    REQUIRE(server.ok());
    CHECK(pump_roundtrip(io, path, "{}\n").empty());
    REQUIRE(pump_until(io, [&] { return (*server)->connections() == 0; }));
}
