#include "common/wireguard/wg_userspace_backend.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "common/log.hpp"
#include "common/netns.hpp"
#include "common/rtnl.hpp"
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

// pidfd_open(2) / pidfd_send_signal(2): an adopted wireguard-go is not our child, so waitpid
// cannot watch it, and its pid could be reused once it exits; a pidfd names the process itself.
int open_pidfd(pid_t pid) {
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

int signal_pidfd(int pidfd, int sig) {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// Waits until the process behind `pidfd` has exited, or `timeout` passed. True if it exited.
bool wait_pidfd(int pidfd, std::chrono::milliseconds timeout) {
    pollfd pfd{pidfd, POLLIN, 0};
    auto deadline = clock_type::now() + timeout;
    for (;;) {
        auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
        if (left.count() < 0) left = std::chrono::milliseconds(0);
        int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
        if (r > 0) return true;
        if (r == 0) return false;
        if (errno != EINTR) return false;
    }
}

result<bool> link_exists(const std::string& netns_path, const std::string& ifname) {
    auto nl = MW_TRY([&]() -> result<rtnl> {
        if (netns_path.empty()) return rtnl::open();
        auto ns = MW_TRY(netns::open(netns_path));
        return rtnl::open_in(ns);
    }());
    auto li = nl.get_link(ifname);
    if (li) return true;
    if (li.err().is_errno(ENODEV)) return false;
    return li.err().wrap("looking up interface " + ifname);
}

// Same file (device and inode) as `path`; false if either cannot be stat'ed.
bool same_file(const std::string& a, const std::string& b) {
    struct stat sa {};
    struct stat sb {};
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

// Whether the process behind `pid` is one this meshd could have started: the wireguard-go
// program it runs (its executable, or for a script its interpreter's first argument), in the
// network namespace it serves. Anything else answering on the shared socket directory (another
// meshd's wireguard-go for the same name in another namespace, boringtun, an operator's own) is
// neither adopted nor stopped. Empty: it is; else why not.
std::string foreign_reason(pid_t pid, const std::string& program, const std::string& netns_path) {
    const std::string proc = "/proc/" + std::to_string(pid);
    bool ours = same_file(proc + "/exe", program);
    if (!ours) {
        std::ifstream in(proc + "/cmdline", std::ios::binary);
        std::string arg;
        for (int i = 0; i < 2 && std::getline(in, arg, '\0'); ++i) {
            if (same_file(arg, program)) ours = true;
        }
    }
    if (!ours) return "it does not run " + program;
    const std::string ns = netns_path.empty() ? "/proc/self/ns/net" : netns_path;
    if (!same_file(proc + "/ns/net", ns)) return "it serves another network namespace";
    return {};
}

std::string describe_wait_status(int st) {
    if (WIFEXITED(st)) return "exit code " + std::to_string(WEXITSTATUS(st));
    if (WIFSIGNALED(st)) return std::string("signal ") + strsignal(WTERMSIG(st));
    return "status " + std::to_string(st);
}

}  // namespace

wg_existing_decision decide_existing(const wg_existing_probe& p) {
    if (!p.socket_answers) return {wg_existing_action::start, "no wireguard-go answers"};
    if (p.socket_pid <= 0) {
        return {wg_existing_action::refuse, "a process answers on the socket, its pid is unknown"};
    }
    if (!p.link_exists) return {wg_existing_action::remove_stale, "its interface is gone"};
    return {wg_existing_action::adopt, "its socket answers and the interface exists"};
}

wg_userspace_backend::wg_userspace_backend(wg_backend_options o) : wg_backend(std::move(o)) {}

wg_userspace_backend::~wg_userspace_backend() {
    (void)down();
}

pid_t wg_userspace_backend::pid() const {
    std::lock_guard lk(mu_);
    return pid_;
}

bool wg_userspace_backend::adopted() const {
    std::lock_guard lk(mu_);
    return adopted_;
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
    ::mkdir(opts_.socket_dir.c_str(), 0755);
    // A wireguard-go left by a meshd that was killed keeps carrying traffic: adopt it.
    auto adopted = take_over_existing();
    if (!adopted) return std::move(adopted).err();
    stopping_ = false;
    start_done_ = false;
    start_result_ = {};
    supervisor_ = std::thread([this, a = *adopted] { supervise(a); });
    cv_.wait(lk, [&] { return start_done_; });
    if (!start_result_) {
        status st = start_result_;
        lk.unlock();
        supervisor_.join();
        return st;
    }
    if (!*adopted) {
        log::info("wireguard-go started",
                  {{"interface", opts_.ifname}, {"pid", std::to_string(pid_)}});
    }
    return {};
}

result<bool> wg_userspace_backend::take_over_existing() {
    wg_existing_probe probe;
    if (auto c = connect_unix(socket_path(), std::chrono::milliseconds(500)); c) {
        probe.socket_answers = true;
        ucred cr{};
        socklen_t len = sizeof cr;
        if (::getsockopt(c->get(), SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && cr.pid > 0) {
            probe.socket_pid = cr.pid;
        }
        probe.link_exists = MW_TRY(link_exists(opts_.netns_path, opts_.ifname));
    }
    auto d = decide_existing(probe);
    const std::string pid_s = std::to_string(probe.socket_pid);
    // Before stopping or adopting it: pin the process (a pidfd names it even if its pid is
    // reused later), then check it is what we would have started.
    unique_fd pinned;
    if (d.action == wg_existing_action::remove_stale || d.action == wg_existing_action::adopt) {
        pinned.reset(open_pidfd(probe.socket_pid));
        if (!pinned.valid()) {
            return error::from_errno(
                errno, "wireguard-go pid " + pid_s + " for " + opts_.ifname + ": pidfd_open");
        }
        if (auto why = foreign_reason(probe.socket_pid, resolve_program(opts_.wireguard_go),
                                      opts_.netns_path);
            !why.empty()) {
            return error(errc::already_exists,
                         "pid " + pid_s + " answers on " + socket_path() + " but " + why +
                             ": not adopting or stopping it (stop it, or use another interface "
                             "name)");
        }
        if (wait_pidfd(pinned.get(), std::chrono::milliseconds(0))) {
            return error(errc::io_error, "wireguard-go pid " + pid_s + " for " + opts_.ifname +
                                             " exited while being adopted; start meshd again");
        }
    }
    switch (d.action) {
        case wg_existing_action::start:
            // A socket file nobody serves (wireguard-go killed with SIGKILL): remove it.
            if (::unlink(socket_path().c_str()) == 0) {
                log::info("stale wireguard-go socket removed",
                          {{"interface", opts_.ifname}, {"socket", socket_path()}});
            }
            return false;
        case wg_existing_action::refuse:
            return error(errc::already_exists, "a wireguard-go for " + opts_.ifname +
                                                   " is already running (" + socket_path() +
                                                   " answers) and cannot be adopted: " + d.reason);
        case wg_existing_action::remove_stale: {
            log::warn("stale wireguard-go stopped",
                      {{"interface", opts_.ifname}, {"pid", pid_s}, {"reason", d.reason}});
            (void)signal_pidfd(pinned.get(), SIGTERM);
            if (!wait_pidfd(pinned.get(), std::chrono::seconds(3))) {
                (void)signal_pidfd(pinned.get(), SIGKILL);
                (void)wait_pidfd(pinned.get(), std::chrono::seconds(1));
            }
            (void)::unlink(socket_path().c_str());
            return false;
        }
        case wg_existing_action::adopt:
            break;
    }
    unique_fd& fd = pinned;
    // What it holds is what was applied so far: if it dies later, a new one gets all of it back,
    // and the reconciler's first full sync only changes what differs (no flush).
    {
        std::lock_guard io(io_mu_);
        auto answer = MW_TRY(transact(wg_uapi::encode_get()));
        auto dev = wg_uapi::parse_get(answer);
        if (!dev) return dev.err().wrap("adopting wireguard-go for " + opts_.ifname);
        applied_ = std::move(*dev);
        has_state_ = true;
        log::info("wireguard-go adopted",
                  {{"interface", opts_.ifname},
                   {"pid", pid_s},
                   {"peers", std::to_string(applied_.peers.size())},
                   {"port", std::to_string(applied_.listen_port.value_or(0))},
                   {"reason", d.reason}});
    }
    pid_ = probe.socket_pid;
    pidfd_ = fd.release();
    adopted_ = true;
    child_ = false;
    return true;
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
    envp.reserve(env_store.size() + 1);
    for (auto& s : env_store) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string arg0 = "wireguard-go", arg1 = "-f", arg2 = opts_.ifname;
    char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};

    pid_t child = ::fork();
    if (child < 0) return error::from_errno(errno, "fork for wireguard-go");
    if (child == 0) {
        // Its own session and process group, no PR_SET_PDEATHSIG: a meshd killed with SIGKILL
        // (or its whole process group) leaves it serving the interface for the next meshd to
        // adopt. A clean stop stops it (down()).
        ::setsid();
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
        child_ = true;
        adopted_ = false;
        pidfd_ = open_pidfd(child);  // -1 on kernels before 5.3: waitpid then
    }

    auto deadline = clock_type::now() + opts_.start_timeout;
    for (;;) {
        int st = 0;
        pid_t r = ::waitpid(child, &st, WNOHANG);
        if (r == child) {
            std::lock_guard lk(mu_);
            forget_process_locked();
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
            forget_process_locked();
            if (stop_now) return error(errc::io_error, "stopped while starting wireguard-go");
            return error(errc::timeout, "wireguard-go for " + opts_.ifname + ": socket " +
                                            socket_path() + " did not appear in time");
        }
        ::usleep(10000);
    }
}

void wg_userspace_backend::forget_process_locked() {
    if (pidfd_ >= 0) ::close(pidfd_);
    pidfd_ = -1;
    pid_ = -1;
    child_ = false;
}

std::string wg_userspace_backend::wait_exit() {
    int fd;
    pid_t pid;
    bool child;
    {
        std::lock_guard lk(mu_);
        fd = pidfd_;
        pid = pid_;
        child = child_;
    }
    if (fd >= 0) {
        pollfd pfd{fd, POLLIN, 0};
        while (::poll(&pfd, 1, -1) < 0 && errno == EINTR) {
        }
    }
    if (!child) return "exited (adopted, not our child: status unknown)";
    int ws = 0;
    while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    return describe_wait_status(ws);
}

void wg_userspace_backend::supervise(bool adopted) {
    bool first = true;
    auto backoff = std::chrono::milliseconds(100);
    for (;;) {
        auto started = clock_type::now();
        // An adopted process is already running: the first round only watches it.
        status st = adopted ? status{} : start_child();
        adopted = false;
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
            std::string how = wait_exit();
            std::lock_guard lk(mu_);
            forget_process_locked();
            cv_.notify_all();
            if (stopping_) return;
            log::warn("wireguard-go died, restarting",
                      {{"interface", opts_.ifname}, {"detail", how}});
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
    // SIGTERM lets wireguard-go remove its TUN device and socket itself. Through the pidfd: an
    // adopted process's pid could have been reused once it exited.
    auto send = [&](int sig) {
        if (pidfd_ >= 0) {
            (void)signal_pidfd(pidfd_, sig);
        } else if (pid_ > 0) {
            ::kill(pid_, sig);
        }
    };
    send(SIGTERM);
    cv_.notify_all();
    if (!cv_.wait_for(lk, std::chrono::seconds(3), [&] { return pid_ <= 0; })) {
        log::warn("wireguard-go ignored SIGTERM, killing it", {{"interface", opts_.ifname}});
        send(SIGKILL);
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
