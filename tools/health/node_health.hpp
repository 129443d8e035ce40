// node_health: what the DaemonSet's probes ask (`meshwire-health`): is meshd answering on its
// control socket, and is the WireGuard interface it owns there and up, with wireguard-go serving
// its UAPI socket when the backend is userspace? `meshctl status` alone answers only the first:
// meshd keeps answering while its interface is gone, and then the node carries no pod traffic.
#pragma once

#include <chrono>
#include <string>

#include "common/result.hpp"

namespace mw::tools {

struct node_health_options {
    std::string socket = "/run/meshwire/meshd.sock";
    std::string wg_socket_dir = "/var/run/wireguard";
    std::chrono::milliseconds timeout{3000};
};

struct node_health_report {
    std::string interface;  // the WireGuard interface meshd reports
    std::string backend;    // "kernel" or "userspace"
};

class node_health {
public:
    explicit node_health(node_health_options o) : opts_(std::move(o)) {}

    // The report when healthy; otherwise the error says which check failed and why.
    result<node_health_report> check() const;

private:
    node_health_options opts_;
};

}  // namespace mw::tools
