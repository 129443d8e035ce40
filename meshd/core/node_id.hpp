// A node's identifier: BLAKE2b-256 of its WireGuard public key. Fixed 32 bytes on the wire, hex in
// logs. Deriving the ID from the WG key (rather than from the node name, as EdgeMesh does) means
// the ID names exactly one tunnel endpoint and cannot be claimed without that key's record signer
// (see peer_record for how the signing key is bound to the WG key).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/wireguard/wg_key.hpp"

namespace mw::meshd {

class node_id {
public:
    static constexpr size_t size = 32;

    node_id() = default;
    explicit node_id(const std::array<uint8_t, size>& bytes) : bytes_(bytes) {}

    static node_id of(const wg_key& wg_public_key);
    static node_id from_bytes(const void* data) {
        node_id id;
        std::memcpy(id.bytes_.data(), data, size);
        return id;
    }

    const uint8_t* data() const noexcept { return bytes_.data(); }
    const std::array<uint8_t, size>& bytes() const noexcept { return bytes_; }
    bool is_zero() const noexcept;
    std::string hex() const;
    // The inverse of hex() (either case); nullopt unless exactly 64 hex digits.
    static std::optional<node_id> from_hex(std::string_view text);
    // First 12 hex digits: enough to tell nodes apart in logs and meshctl output.
    std::string short_hex() const { return hex().substr(0, 12); }

    friend bool operator==(const node_id& a, const node_id& b) noexcept {
        return a.bytes_ == b.bytes_;
    }
    friend auto operator<=>(const node_id& a, const node_id& b) noexcept {
        return a.bytes_ <=> b.bytes_;
    }

private:
    std::array<uint8_t, size> bytes_{};
};

}  // namespace mw::meshd

template <>
struct std::hash<mw::meshd::node_id> {
    size_t operator()(const mw::meshd::node_id& id) const noexcept {
        // The ID is already a uniform hash; its first bytes are a fine bucket index.
        size_t h;
        std::memcpy(&h, id.data(), sizeof h);
        return h;
    }
};
