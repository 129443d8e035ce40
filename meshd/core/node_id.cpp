#include "meshd/core/node_id.hpp"
#include "common/hex.hpp"

#include <sodium.h>

namespace mw::meshd {

node_id node_id::of(const wg_key& wg_public_key) {
    node_id id;
    crypto_generichash(id.bytes_.data(), size, wg_public_key.data(), wg_key::size, nullptr, 0);
    return id;
}

bool node_id::is_zero() const noexcept {
    uint8_t acc = 0;
    for (auto b : bytes_) acc |= b;
    return acc == 0;
}

std::string node_id::hex() const {
    return mw::to_hex(bytes_.data(), size);
}

std::optional<node_id> node_id::from_hex(std::string_view text) {
    if (text.size() != 2 * size) return std::nullopt;
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    node_id id;
    for (size_t i = 0; i < size; ++i) {
        int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        id.bytes_[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return id;
}

}  // namespace mw::meshd
