// libsodium must be initialised once before use (it selects CPU-specific implementations).
// sodium_init() draws no randomness that meshd/core uses: the core never calls randombytes_*.
#pragma once

#include <sodium.h>

#include <mutex>

namespace mw::meshd {

inline void ensure_sodium() {
    static std::once_flag once;
    // A failure only affects randombytes (unused here); the primitives work regardless.
    std::call_once(once, [] {
        if (sodium_init() < 0) return;
    });
}

}  // namespace mw::meshd
