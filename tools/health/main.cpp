// meshwire-health: the DaemonSet's readiness and liveness probe (exec). Exit 0 and one line when
// meshd answers and its WireGuard interface is up; exit 1 and the failed check otherwise (kubelet
// shows the output in the pod's events).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tools/health/node_health.hpp"

int main(int argc, char** argv) {
    mw::tools::node_health_options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if ((a == "--socket" || a == "--wg-socket-dir" || a == "--timeout") && i + 1 < argc) {
            std::string v = argv[++i];
            if (a == "--socket") o.socket = v;
            if (a == "--wg-socket-dir") o.wg_socket_dir = v;
            if (a == "--timeout")
                o.timeout = std::chrono::milliseconds(std::atoi(v.c_str()) * 1000);
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
