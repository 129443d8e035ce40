#include "common/wireguard/wg_userspace_backend.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "common/wireguard/wg_uapi.hpp"

extern char** environ;

namespace mw {

namespace {

using clock_type = std::chrono::steady_clock;

result<unique_fd> connect_unix(const std::string& path, std::chrono::milliseconds timeout) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (path.size() >= sizeof sun.sun_path) {
        return error(errc::invalid_argument, "socket path too long: " + path);
    }
    std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return error::from_errno(errno, "creating unix socket");
    timeval tv{};
    tv.tv_sec = timeout.count() / 1000;
    tv.tv_usec = (timeout.count() % 1000) * 1000;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
        return error::from_errno(errno, "connecting to " + path);
    }
    return fd;
}

// PATH lookup done before fork(), so the child only calls async-signal-safe functions.
std::string resolve_program(const std::string& prog) {
    if (prog.find('/') != std::string::npos) return prog;
    const char* path = ::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    size_t pos = 0;
    while (pos <= dirs.size()) {
        size_t colon = dirs.find(':', pos);
        if (colon == std::string::npos) colon = dirs.size();
        std::string cand = dirs.substr(pos, colon - pos) + "/" + prog;
        if (::access(cand.c_str(), X_OK) == 0) return cand;
        pos = colon + 1;
    }
    return prog;
}

std::string describe_wait_status(int st) {
    if (WIFEXITED(st)) return "exit code " + std::to_string(WEXITSTATUS(st));
    if (WIFSIGNALED(st)) return std::string("signal ") + strsignal(WTERMSIG(st));
    return "status " + std::to_string(st);
}

}  // namespace

wg_userspace_backend::wg_userspace_backend(wg_backend_options o) : wg_backend(std::move(o)) {}

wg_userspace_backend::~wg_userspace_backend() {
    (void)down();
}

pid_t wg_userspace_backend::pid() const {
    std::lock_guard lk(mu_);
    return pid_;
}

wg_backend_stats wg_userspace_backend::stats() const {
    std::lock_guard lk(stats_mu_);
    return stats_;
}

void wg_userspace_backend::set_restart_hook(std::function<void()> hook) {
    std::lock_guard lk(mu_);
    hook_ = std::move(hook);
}

status wg_userspace_backend::up() {
    MW_TRY_STATUS(validate_ifname(opts_.ifname));
    std::unique_lock lk(mu_);
    if (supervisor_.joinable()) return {};  // already supervised (maybe mid-restart)
    // Another live wireguard-go for this name (not ours, so we could not supervise it).
    if (auto probe = connect_unix(socket_path(), std::chrono::milliseconds(500)); probe) {
        return error(errc::already_exists, "a wireguard-go for " + opts_.ifname +
                                               " is already running (" + socket_path() +
                                               " answers); stop it first");
    }
    ::mkdir(opts_.socket_dir.c_str(), 0755);
    stopping_ = false;
    start_done_ = false;
    start_result_ = {};
    supervisor_ = std::thread([this] { supervise(); });
    cv_.wait(lk, [&] { return start_done_; });
    if (!start_result_) {
        status st = start_result_;
        lk.unlock();
        supervisor_.join();
        return st;
    }
    log::info("wireguard-go started", {{"interface", opts_.ifname}, {"pid", std::to_string(pid_)}});
    return {};
}

status wg_userspace_backend::start_child() {
    unique_fd ns_fd;
    if (!opts_.netns_path.empty()) {
        ns_fd.reset(::open(opts_.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!ns_fd.valid()) {
            return error::from_errno(errno, "opening network namespace " + opts_.netns_path);
        }
    }
    std::string prog = resolve_program(opts_.wireguard_go);
    std::vector<std::string> env_store;
    for (char** e = environ; e && *e; ++e) {
        if (std::strncmp(*e, "WG_PROCESS_FOREGROUND=", 22) == 0 ||
            std::strncmp(*e, "LOG_LEVEL=", 10) == 0)
            continue;
        env_store.emplace_back(*e);
    }
    // Foreground: the process we start is the one that serves, so we can supervise its pid.
    env_store.emplace_back("WG_PROCESS_FOREGROUND=1");
    env_store.emplace_back("LOG_LEVEL=" + opts_.go_log_level);
    std::vector<char*> envp;
    for (auto& s : env_store) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string arg0 = "wireguard-go", arg1 = "-f", arg2 = opts_.ifname;
    char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};

    pid_t parent = ::getpid();
    pid_t child = ::fork();
    if (child < 0) return error::from_errno(errno, "fork for wireguard-go");
    if (child == 0) {
        // Bound to the supervisor thread: if meshd dies, wireguard-go gets SIGTERM and cleans up.
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent) ::_exit(126);
        if (ns_fd.valid() && ::setns(ns_fd.get(), CLONE_NEWNET) != 0) ::_exit(125);
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0) ::dup2(devnull, 0);
        // wireguard-go writes its own log; keep it out of our stdout (the CNI contract channel).
        ::dup2(2, 1);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execve(prog.c_str(), argv, envp.data());
        ::_exit(127);
    }
    {
        std::lock_guard lk(mu_);
        pid_ = child;
    }

    auto deadline = clock_type::now() + opts_.start_timeout;
    for (;;) {
        int st = 0;
        pid_t r = ::waitpid(child, &st, WNOHANG);
        if (r == child) {
            std::lock_guard lk(mu_);
            pid_ = -1;
            std::string why = describe_wait_status(st);
            if (WIFEXITED(st) && WEXITSTATUS(st) == 127) why += " (cannot execute " + prog + ")";
            if (WIFEXITED(st) && WEXITSTATUS(st) == 125)
                why += " (cannot enter " + opts_.netns_path + ")";
            return error(errc::io_error, "wireguard-go for " + opts_.ifname +
                                             " exited before its socket appeared: " + why);
        }
        bool stop_now;
        {
            std::lock_guard lk(mu_);
            stop_now = stopping_;
        }
        if (!stop_now) {
            if (auto c = connect_unix(socket_path(), std::chrono::milliseconds(1000)); c) return {};
        }
        if (stop_now || clock_type::now() > deadline) {
            ::kill(child, SIGKILL);
            ::waitpid(child, &st, 0);
            std::lock_guard lk(mu_);
            pid_ = -1;
            if (stop_now) return error(errc::io_error, "stopped while starting wireguard-go");
            return error(errc::timeout, "wireguard-go for " + opts_.ifname + ": socket " +
                                            socket_path() + " did not appear in time");
        }
        ::usleep(10000);
    }
}

void wg_userspace_backend::supervise() {
    bool first = true;
    auto backoff = std::chrono::milliseconds(100);
    for (;;) {
        auto started = clock_type::now();
        status st = start_child();
        if (first) {
            std::lock_guard lk(mu_);
            start_done_ = true;
            start_result_ = st;
            cv_.notify_all();
            if (!st) return;
            first = false;
        } else if (st) {
            status rs = restore_state();
            {
                std::lock_guard lk(stats_mu_);
                ++stats_.restarts;
            }
            if (!rs) {
                log::error("restoring wireguard-go state failed",
                           {{"interface", opts_.ifname}, {"error", rs.err().message}});
            } else {
                log::info("wireguard-go restarted and state restored",
                          {{"interface", opts_.ifname}, {"pid", std::to_string(pid())}});
            }
            std::function<void()> hook;
            {
                std::lock_guard lk(mu_);
                hook = hook_;
            }
            if (hook) hook();
        } else {
            log::error("restarting wireguard-go failed",
                       {{"interface", opts_.ifname}, {"error", st.err().message}});
        }
        if (st) {
            pid_t child = pid();
            int ws = 0;
            while (::waitpid(child, &ws, 0) < 0 && errno == EINTR) {
            }
            std::lock_guard lk(mu_);
            pid_ = -1;
            cv_.notify_all();
            if (stopping_) return;
            log::warn("wireguard-go died, restarting",
                      {{"interface", opts_.ifname}, {"status", describe_wait_status(ws)}});
        }
        // A process that ran for a while gets restarted at once; a crash loop backs off.
        if (clock_type::now() - started > std::chrono::seconds(10)) {
            backoff = std::chrono::milliseconds(100);
        }
        std::unique_lock lk(mu_);
        if (cv_.wait_for(lk, backoff, [&] { return stopping_; })) return;
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
}

status wg_userspace_backend::down() {
    std::unique_lock lk(mu_);
    if (!supervisor_.joinable()) return {};
    stopping_ = true;
    // SIGTERM lets wireguard-go remove its TUN device and socket itself.
    if (pid_ > 0) ::kill(pid_, SIGTERM);
    cv_.notify_all();
    if (!cv_.wait_for(lk, std::chrono::seconds(3), [&] { return pid_ <= 0; })) {
        log::warn("wireguard-go ignored SIGTERM, killing it", {{"interface", opts_.ifname}});
        if (pid_ > 0) ::kill(pid_, SIGKILL);
    }
    lk.unlock();
    supervisor_.join();
    // After SIGKILL (or a crash) the socket file is left behind.
    if (::unlink(socket_path().c_str()) != 0 && errno != ENOENT) {
        return error::from_errno(errno, "removing " + socket_path());
    }
    return {};
}

result<std::string> wg_userspace_backend::transact(const std::string& request) {
    auto fd = connect_unix(socket_path(), opts_.io_timeout);
    if (!fd) {
        return fd.err().wrap("wireguard-go for " + opts_.ifname + " is not reachable");
    }
    size_t off = 0;
    while (off < request.size()) {
        ssize_t n = ::send(fd->get(), request.data() + off, request.size() - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return error::from_errno(errno, "writing to " + socket_path());
        }
        off += static_cast<size_t>(n);
    }
    std::string answer;
    char buf[65536];
    while (!wg_uapi::answer_complete(answer)) {
        ssize_t n = ::recv(fd->get(), buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return error::from_errno(errno, "reading from " + socket_path());
        }
        if (n == 0) break;  // the parser reports the truncation
        answer.append(buf, static_cast<size_t>(n));
    }
    std::lock_guard lk(stats_mu_);
    ++stats_.messages_sent;
    stats_.bytes_sent += request.size();
    stats_.bytes_received += answer.size();
    return answer;
}

result<wg_device> wg_userspace_backend::get() {
    std::lock_guard io(io_mu_);
    auto answer = MW_TRY(transact(wg_uapi::encode_get()));
    {
        std::lock_guard lk(stats_mu_);
        ++stats_.get_calls;
    }
    auto d = wg_uapi::parse_get(answer);
    if (!d) return d.err().wrap("wireguard-go " + opts_.ifname);
    // Remember a port the device picked by itself, so a restart keeps it and peers still reach us.
    if (!applied_.listen_port && d->listen_port) {
        applied_.listen_port = d->listen_port;
    }
    return d;
}

status wg_userspace_backend::set(const wg_device_update& u) {
    if (u.empty()) return {};
    std::lock_guard io(io_mu_);
    auto answer = MW_TRY(transact(wg_uapi::encode_set(u)));
    {
        std::lock_guard lk(stats_mu_);
        ++stats_.set_calls;
    }
    auto st = wg_uapi::parse_set(answer);
    if (!st) return st.err().wrap("wireguard-go " + opts_.ifname);
    apply_update(applied_, u);
    has_state_ = true;
    return {};
}

status wg_userspace_backend::restore_state() {
    std::lock_guard io(io_mu_);
    if (!has_state_ && !applied_.listen_port) return {};
    auto full = wg_device_update::full(applied_);
    auto answer = MW_TRY(transact(wg_uapi::encode_set(full)));
    return wg_uapi::parse_set(answer);
}

}  // namespace mw
