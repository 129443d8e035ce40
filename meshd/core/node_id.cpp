#include "common/hex.hpp"
#include "meshd/core/node_id.hpp"

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

std::string node_id::hex() const { return mw::to_hex(bytes_.data(), size); }

}  // namespace mw::meshd
