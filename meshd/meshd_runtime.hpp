// The running daemon: wires node_core (pure) to the real world on one Asio io_context thread.
//
//   UDP listenPort  relay nodes: relay_forwarder (RELAY_DATA hot path on its own thread; control
//                   datagrams are posted here); other nodes: relay_proxy (its uplink is the
//                   control socket, so relay sessions are bound to the address control comes from)
//   node_core       timers (one steady_timer on the core's deadline), datagrams, meshctl pings
//   WireGuard       wg_backend + wg_reconciler: one peer per remote node, allowed-ips = its pod
//                   CIDRs (routes via the interface), endpoint by path: direct address, nothing
//                   (learned by roaming), or the relay_proxy's loopback socket for the peer
//   control socket  control_server, the meshctl JSON of docs/meshctl-json.md
//   node.json       for the CNI plugin (written at startup)
//
// Threading: everything here runs on the io_context thread; the forwarder's and the proxy's loop
// threads only post received control datagrams to it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/result.hpp"
#include "meshd/core/node_identity.hpp"
#include "meshd/meshd_config.hpp"

namespace mw::meshd {

// Runs until SIGINT/SIGTERM. Returns the process exit status (0 after a clean stop).
// `config_path` is watched: relayNodes edits apply live.
int run_daemon(const meshd_config& cfg, const std::string& config_path,
               const node_identity& identity, std::span<const uint8_t> psk);

}  // namespace mw::meshd
