// Lower-case hex of a byte string (keys, node IDs in logs and file names).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mw {

inline std::string to_hex(const uint8_t* data, size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string s(2 * n, '0');
    for (size_t i = 0; i < n; ++i) {
        s[2 * i] = digits[data[i] >> 4];
        s[2 * i + 1] = digits[data[i] & 15];
    }
    return s;
}

}  // namespace mw
