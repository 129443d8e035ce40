// meshwire-health: the DaemonSet's readiness and liveness probe (exec). Exit 0 and one line when
// meshd answers and its WireGuard interface is up; exit 1 and the failed check otherwise (kubelet
// shows the output in the pod's events).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/guarded_main.hpp"
#include "tools/health/node_health.hpp"

namespace {

int run(int argc, char** argv) {
    mw::tools::node_health_options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if ((a == "--socket" || a == "--wg-socket-dir" || a == "--timeout") && i + 1 < argc) {
            std::string v = argv[++i];
            if (a == "--socket") o.socket = v;
            if (a == "--wg-socket-dir") o.wg_socket_dir = v;
            if (a == "--timeout") {
                char* end = nullptr;
                const long s = std::strtol(v.c_str(), &end, 10);
                if (end == v.c_str() || *end != '\0' || s <= 0 || s > 3600) {
                    std::fprintf(stderr, "meshwire-health: --timeout %s: not 1..3600 seconds\n",
                                 v.c_str());
                    return 64;
                }
                o.timeout = std::chrono::seconds(s);
            }
        } else if (a == "-h" || a == "--help") {
            std::puts(
                "usage: meshwire-health [--socket PATH] [--wg-socket-dir DIR] [--timeout SECONDS]\n"
                "exit 0: meshd answers on PATH (default /run/meshwire/meshd.sock) and its "
                "WireGuard\n"
                "interface is up (userspace: wireguard-go's UAPI socket in DIR answers); else 1");
            return 0;
        } else {
            std::fprintf(stderr, "meshwire-health: bad argument %s (see --help)\n", a.c_str());
            return 64;
        }
    }
    auto r = mw::tools::node_health(o).check();
    if (!r) {
        std::printf("unhealthy: %s\n", r.err().message.c_str());
        return 1;
    }
    std::printf("healthy: meshd answers, %s (%s) is up\n", r->interface.c_str(),
                r->backend.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return mw::guarded_main([&] { return run(argc, argv); },
                            [](const char* what) { std::printf("unhealthy: %s\n", what); });
}
