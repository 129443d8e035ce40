// meshwire: the CNI plugin binary. stdout carries only the CNI result or error JSON; logs go to
// stderr or the config's logFile.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "cni-plugin/plugin.hpp"
#include "common/log.hpp"

namespace {

bool read_all(int fd, std::string& out) {
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n == 0) return true;
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > (16u << 20)) return false;  // no sane config is this big
    }
}

bool write_all(int fd, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
        ssize_t n = ::write(fd, s.data() + off, s.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        off += static_cast<size_t>(n);
    }
    return true;
}

const char* k_help =
    "meshwire - the meshwire CNI plugin (routed veth pod networking for meshd's WireGuard mesh)\n"
    "\n"
    "This binary is run by a container runtime, not by hand. It reads the network configuration\n"
    "as JSON on stdin and the CNI_* environment variables "
    "(CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC,\n"
    "CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH, CNI_ARGS), and prints the CNI result or\n"
    "error JSON on stdout. Supported spec versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0.\n"
    "\n"
    "Try:  echo '{\"cniVersion\":\"1.1.0\"}' | CNI_COMMAND=VERSION meshwire\n"
    "Docs: README.md (configuration, error codes) in the meshwire sources.\n";

}  // namespace

int main(int argc, char** argv) {
    mw::log::set_component("cni");
    if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
        std::fputs(k_help, stdout);
        return 0;
    }
    if (argc > 1 && std::strcmp(argv[1], "--version") == 0) {
        std::puts("meshwire CNI plugin 0.1.0 (CNI 0.3.0-1.1.0)");
        return 0;
    }
    if (!std::getenv("CNI_COMMAND") && isatty(STDIN_FILENO)) {
        std::fputs(k_help, stderr);
        return 1;
    }
    std::string input;
    if (!read_all(STDIN_FILENO, input)) {
        std::string err =
            R"({"cniVersion":"1.1.0","code":5,"msg":"cannot read the network configuration from stdin"})";
        write_all(STDOUT_FILENO, err);
        return 1;
    }
    auto out = mw::cni::run_invocation(mw::cni::process_env(), input);
    if (!out.stdout_text.empty()) write_all(STDOUT_FILENO, out.stdout_text + "\n");
    return out.exit_code;
}
