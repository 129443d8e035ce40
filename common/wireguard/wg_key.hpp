// WireGuard keys: 32-byte X25519 keys, written as base64 exactly like `wg genkey` / `wg pubkey`
// (so an operator can paste keys between meshwire and wireguard-tools) and as hex on the UAPI
// socket. A private key never appears in logs: there is deliberately no operator<< and the only
// textual forms are the explicit to_base64()/to_hex() calls.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mw {

class wg_key {
public:
    static constexpr size_t size = 32;

    wg_key() = default;
    explicit wg_key(const std::array<uint8_t, size>& bytes) : bytes_(bytes) {}

    // A fresh private key from the OS CSPRNG, clamped as X25519 requires (same as `wg genkey`).
    static wg_key generate_private();
    // "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=" (44 chars, one '=' of padding).
    static result<wg_key> from_base64(std::string_view text);
    // 64 lowercase or uppercase hex digits (the UAPI form).
    static result<wg_key> from_hex(std::string_view text);
    static wg_key from_bytes(const void* data) {
        wg_key k;
        const auto* p = static_cast<const uint8_t*>(data);
        for (size_t i = 0; i < size; ++i) k.bytes_[i] = p[i];
        return k;
    }

    // The public key for this private key (X25519 base-point multiplication).
    wg_key public_key() const;

    std::string to_base64() const;
    std::string to_hex() const;
    bool is_zero() const noexcept;
    const uint8_t* data() const noexcept { return bytes_.data(); }
    const std::array<uint8_t, size>& bytes() const noexcept { return bytes_; }

    friend bool operator==(const wg_key& a, const wg_key& b) noexcept {
        return a.bytes_ == b.bytes_;
    }
    friend bool operator<(const wg_key& a, const wg_key& b) noexcept { return a.bytes_ < b.bytes_; }

    // Wipes the bytes (used by holders of private keys when they are done).
    void wipe() noexcept;

private:
    std::array<uint8_t, size> bytes_{};
};

// Private key files: base64 plus newline, mode 0600, like `wg genkey > key` with umask 077.
// write_private_key_file replaces the file atomically (temp file + rename).
status write_private_key_file(const std::string& path, const wg_key& key);
// Reads a key file written by us or by `wg genkey`. Refuses files readable by group/others,
// because a leaked node key lets anyone impersonate the node.
result<wg_key> read_private_key_file(const std::string& path);
// The node's key: read it when the file exists, else generate it once and write it.
result<wg_key> load_or_create_private_key(const std::string& path);

}  // namespace mw
