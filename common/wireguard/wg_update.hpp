// A change to a WireGuard device, in the vocabulary both WireGuard configuration protocols share
// (UAPI `set=1` and the kernel's WG_CMD_SET_DEVICE): device fields to set, "replace all peers",
// and per peer remove / update-only / replace-allowed-ips plus the fields to set. The reconciler
// produces these; the backends only encode them.
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include "common/wireguard/wg_device.hpp"

namespace mw {

struct wg_peer_update {
    wg_key public_key;
    bool remove = false;       // WGPEER_F_REMOVE_ME / remove=true
    bool update_only = false;  // WGPEER_F_UPDATE_ONLY / update_only=true: never create the peer
    std::optional<wg_key> preshared_key;  // an all-zero key clears it
    std::optional<wg_endpoint> endpoint;
    std::optional<uint16_t> persistent_keepalive;
    bool replace_allowed_ips = false;  // drop the peer's allowed-ips before adding `allowed_ips`
    std::vector<ip_prefix> allowed_ips;

    friend bool operator==(const wg_peer_update&, const wg_peer_update&) = default;
};

struct wg_device_update {
    std::optional<wg_key> private_key;
    std::optional<uint16_t> listen_port;
    std::optional<uint32_t> fwmark;
    bool replace_peers = false;  // remove every peer not listed here
    std::vector<wg_peer_update> peers;

    bool empty() const noexcept {
        return !private_key && !listen_port && !fwmark && !replace_peers && peers.empty();
    }
    // Number of individual changes (device fields, peer fields, allowed-ips), the unit in which
    // reconcile cost is reported: applying an unchanged state costs 0.
    size_t operation_count() const noexcept;

    // The whole of `desired` as one update that replaces everything (used to (re)create a device
    // and to restore a restarted wireguard-go).
    static wg_device_update full(const wg_device& desired);

    friend bool operator==(const wg_device_update&, const wg_device_update&) = default;
};

// Applies an update to a device model with WireGuard's own semantics. The userspace supervisor
// uses it to remember the full state it must restore; tests use it as the reference behaviour.
void apply_update(wg_device& model, const wg_device_update& u);

}  // namespace mw
