#include "cni-plugin/ipam_delegate.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.hpp"
#include "common/unique_fd.hpp"

extern char** environ;

namespace mw::cni {

result<std::string> find_plugin(const std::string& type, const std::vector<std::string>& cni_path) {
    std::string searched;
    for (const auto& dir : cni_path) {
        std::string p = dir;
        p += '/';
        p += type;
        if (::access(p.c_str(), X_OK) == 0) return p;
        if (!searched.empty()) searched += ':';
        searched += dir;
    }
    return error(errc::not_found,
                 "IPAM plugin \"" + type + "\" not found in CNI_PATH (" + searched + ")");
}

result<delegate_outcome> run_plugin(const std::string& binary, const std::string& command,
                                    const std::string& stdin_conf) {
    int in_pipe[2], out_pipe[2];
    if (::pipe2(in_pipe, O_CLOEXEC) != 0) return error::from_errno(errno, "pipe");
    unique_fd in_r(in_pipe[0]), in_w(in_pipe[1]);
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) return error::from_errno(errno, "pipe");
    unique_fd out_r(out_pipe[0]), out_w(out_pipe[1]);

    std::vector<std::string> env_store;
    for (char** e = environ; *e; ++e) {
        if (std::strncmp(*e, "CNI_COMMAND=", 12) != 0) env_store.emplace_back(*e);
    }
    env_store.push_back("CNI_COMMAND=" + command);
    std::vector<char*> envp;
    envp.reserve(env_store.size() + 1);
    for (auto& s : env_store) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string arg0 = binary;
    char* argv[] = {arg0.data(), nullptr};

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_r.get(), STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out_w.get(), STDOUT_FILENO);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, binary.c_str(), &fa, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return error::from_errno(rc, "starting " + binary);
    in_r.reset();
    out_w.reset();

    // Write stdin and read stdout together so a large answer cannot deadlock us.
    delegate_outcome outcome;
    size_t written = 0;
    char buf[4096];
    // SIGPIPE would kill us if the delegate exits without reading its stdin.
    struct sigaction ign {
    }, old{};
    ign.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ign, &old);
    while (out_r.valid()) {
        pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {in_w.valid() ? in_w.get() : -1, POLLOUT, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (in_w.valid() && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n =
                ::write(in_w.get(), stdin_conf.data() + written, stdin_conf.size() - written);
            if (n > 0) written += static_cast<size_t>(n);
            if (n < 0 || written == stdin_conf.size()) in_w.reset();
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = ::read(out_r.get(), buf, sizeof buf);
            if (n > 0) {
                outcome.out.append(buf, static_cast<size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                out_r.reset();
            }
        }
    }
    in_w.reset();
    ::sigaction(SIGPIPE, &old, nullptr);
    int wstatus = 0;
    while (::waitpid(pid, &wstatus, 0) < 0) {
        if (errno != EINTR) return error::from_errno(errno, "waiting for " + binary);
    }
    outcome.exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    if (outcome.exit_code != 0) {
        auto j = nlohmann::json::parse(outcome.out, nullptr, false);
        if (j.is_object()) {
            if (auto c = j.find("code"); c != j.end() && c->is_number_integer())
                outcome.cni_code = c->get<int>();
            if (auto m = j.find("msg"); m != j.end() && m->is_string())
                outcome.cni_msg = m->get<std::string>();
            if (auto d = j.find("details");
                d != j.end() && d->is_string() && !d->get<std::string>().empty())
                outcome.cni_msg += " (" + d->get<std::string>() + ")";
        }
        if (outcome.cni_msg.empty())
            outcome.cni_msg = "exited with status " + std::to_string(outcome.exit_code);
    }
    return outcome;
}

static error delegate_failure(const std::string& type, const std::string& command,
                              const delegate_outcome& o) {
    std::string msg = "IPAM plugin " + type + " " + command + " failed: " + o.cni_msg;
    if (o.cni_code) msg += " [code " + std::to_string(o.cni_code) + "]";
    return error(errc::protocol_error, msg);
}

result<cni_result> delegate_add(const std::string& type, const std::vector<std::string>& cni_path,
                                const std::string& conf) {
    auto bin = MW_TRY(find_plugin(type, cni_path));
    auto o = MW_TRY(run_plugin(bin, "ADD", conf));
    if (o.exit_code != 0) return delegate_failure(type, "ADD", o);
    auto j = nlohmann::json::parse(o.out, nullptr, false);
    if (j.is_discarded()) {
        return error(errc::protocol_error, "IPAM plugin " + type + " ADD printed invalid JSON");
    }
    auto r = decode_result(j);
    if (!r) return r.err().wrap("IPAM plugin " + type + " ADD result");
    if (r->ips.empty())
        return error(errc::protocol_error, "IPAM plugin " + type + " returned no IPs");
    log::debug("delegated IPAM allocated",
               {{"ipam", type}, {"ips", std::to_string(r->ips.size())}});
    return r;
}

status delegate_simple(const std::string& type, const std::vector<std::string>& cni_path,
                       const std::string& command, const std::string& conf) {
    auto bin = MW_TRY(find_plugin(type, cni_path));
    auto o = MW_TRY(run_plugin(bin, command, conf));
    if (o.exit_code != 0) return delegate_failure(type, command, o);
    return {};
}

}  // namespace mw::cni
