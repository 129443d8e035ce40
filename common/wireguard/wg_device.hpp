// The WireGuard device model shared by both backends, the reconciler, meshd and meshctl.
// One struct serves as desired state (what meshd wants; runtime fields ignored) and as observed
// state (what the device reports, including handshake time and byte counters), so "set, then read
// back identical" is a plain comparison of the configuration part.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.hpp"
#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "common/wireguard/wg_key.hpp"

namespace mw {

struct wg_peer {
    wg_key public_key;
    std::optional<wg_key> preshared_key;  // nullopt: none (the device reports all-zero)
    std::optional<wg_endpoint> endpoint;  // nullopt: unknown until the peer talks to us
    std::vector<ip_prefix> allowed_ips;
    uint16_t persistent_keepalive = 0;  // seconds; 0 = off

    // Observed only.
    int64_t last_handshake_sec = 0;  // unix time; 0 = never
    int64_t last_handshake_nsec = 0;
    uint64_t rx_bytes = 0;
    uint64_t tx_bytes = 0;

    // Configuration equality (runtime counters ignored; allowed-ips compared as sets).
    bool same_config(const wg_peer& other) const;
};

struct wg_device {
    std::optional<wg_key> private_key;    // nullopt: leave (desired) / none set (observed)
    std::optional<uint16_t> listen_port;  // nullopt: leave as is (the device picks one)
    std::optional<uint32_t> fwmark;       // nullopt: leave; 0 = off
    std::vector<wg_peer> peers;

    // Observed only.
    std::optional<wg_key> public_key;

    const wg_peer* find_peer(const wg_key& public_key) const;
    // Sorts peers by public key and normalizes allowed-ips (host bits cleared, sorted, unique),
    // so that two descriptions of the same configuration compare equal.
    void normalize();
    // Configuration equality after normalization (fields unset in `this` are not compared).
    bool same_config(const wg_device& observed) const;
};

// Normalized allowed-ips of one peer: host bits cleared, sorted, duplicates removed — which is how
// both WireGuard implementations store them.
std::vector<ip_prefix> normalize_allowed_ips(const std::vector<ip_prefix>& in);
bool allowed_ips_normalized(const std::vector<ip_prefix>& v);
// Set equality of two allowed-ip lists (no allocation when both are already normalized).
bool same_allowed_ips(const std::vector<ip_prefix>& a, const std::vector<ip_prefix>& b);

// Rejects bad input before anything is applied: zero or duplicate peer keys, endpoints without
// address or port, malformed prefixes, and one allowed-ip claimed by two peers (WireGuard would
// silently move it to the later peer, which is never what a config means).
status validate(const wg_device& desired);

// Interface names as the kernel accepts them (1-15 chars, no '/', no whitespace, not "." / "..").
status validate_ifname(const std::string& name);

}  // namespace mw
