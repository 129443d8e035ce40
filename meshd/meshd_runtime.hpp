// The running daemon: wires node_core (pure) to the real world. The parts, each in its own file:
//
//   transport          UDP listenPort: relay_forwarder on relay nodes, relay_proxy otherwise
//   dataplane_planner  (pure) desired data plane + kept state + now -> WireGuard peers and
//                      relay_proxy operations
//   wireguard_worker   wg_backend + wg_reconciler on their own thread; results posted back
//   node_snapshot      one read of the node's state, rendered by control_api (meshctl JSON of
//                      docs/meshctl-json.md) and metrics_export (Prometheus text)
//   config_watcher     the config file, re-read every 2 s; which edits apply live
//   host_addresses     our advertised endpoints (rtnetlink)
//   kube_wiring        kubernetes.enable: kube_client and its node set fed to the core
//   record_cache_wiring  the on-disk record cache: loaded at start, written on changes
//   daemon_clock       core_ms() (the core's clock), steady_ms(), unix_ms()
//   node.json          for the CNI plugin (written at startup, by meshd_cli)
//
// Threading: the core, its timers, the control socket, the metrics endpoint, the planner and the
// views run on one io_context thread. The forwarder's and the proxy's loop threads only post
// received control datagrams to it; the WireGuard thread posts call results to it. Nothing on it
// waits for WireGuard (a UAPI request may block for seconds), so the 100 ms relay probes keep time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/result.hpp"
#include "meshd/cluster_keys.hpp"
#include "meshd/core/node_identity.hpp"
#include "meshd/meshd_config.hpp"

namespace mw::meshd {

// Runs until SIGINT/SIGTERM. Returns the process exit status (0 after a clean stop).
// `config_path` is watched: relayNodes edits apply live; the PSK files (psk.path,
// psk.acceptPaths) are re-read at every config poll, and a changed key set applies live.
// `mtu`: the WireGuard interface's (the same as node.json's; 0 leaves the device default).
int run_daemon(const meshd_config& cfg, const std::string& config_path,
               const node_identity& identity, const cluster_keys& keys, unsigned mtu = 0);

}  // namespace mw::meshd
