// Codec for the WireGuard generic-netlink family (linux/wireguard.h): WG_CMD_SET_DEVICE requests
// built from a wg_device_update, and WG_CMD_GET_DEVICE dump answers parsed into a wg_device.
// Written on libmnl in the manner of wireguard-tools' embeddable-wg-library (not copied from it).
// A set larger than one message is split: device fields and WGDEVICE_F_REPLACE_PEERS go in the
// first message only, and a peer whose allowed-ips do not fit continues in the next message with
// WGPEER_F_UPDATE_ONLY (so a continuation can never create a peer the first part did not) and
// without WGPEER_F_REPLACE_ALLOWEDIPS (so it adds to, not replaces, the first part).
// Pure functions over byte buffers: no sockets, so everything here is unit-tested without root.
#pragma once

#include <libmnl/libmnl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/wireguard/wg_device.hpp"
#include "common/wireguard/wg_update.hpp"

namespace mw {

class wg_genl {
public:
    using message = std::vector<char>;

    // The smallest max_size that always fits a device header plus one peer header and one
    // allowed-ip.
    static constexpr size_t min_message_size = 512;

    // WG_CMD_SET_DEVICE messages for `u` (NLM_F_REQUEST | NLM_F_ACK; seq and pid are left 0 for
    // the sender), each at most max_size bytes.
    static result<std::vector<message>> encode_set(const wg_device_update& u,
                                                   const std::string& ifname, uint16_t family_id,
                                                   size_t max_size);
    // WG_CMD_GET_DEVICE dump request.
    static message encode_get(const std::string& ifname, uint16_t family_id);

    // Adds one message of a WG_CMD_GET_DEVICE answer to `dev` (nlh->nlmsg_len bytes must be
    // readable, as the receive loop guarantees). A peer split over two messages
    // (same public key ending one and starting the next) is merged.
    static status decode_get(const nlmsghdr* nlh, wg_device& dev);
    // Reassembles set messages into the update they carry (tests and diagnostics).
    static result<wg_device_update> decode_set(const std::vector<message>& messages);
};

}  // namespace mw
