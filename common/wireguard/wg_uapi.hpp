// The WireGuard cross-platform UAPI text protocol (https://www.wireguard.com/xplatform/), spoken by
// wireguard-go on /var/run/wireguard/<ifname>.sock: a request is `get=1` or `set=1` followed by
// key=value lines and a blank line; the answer ends with `errno=N` and a blank line. Keys travel
// as hex. This is only the codec; the socket I/O lives in wg_userspace_backend.
#pragma once

#include <string>
#include <string_view>

#include "common/result.hpp"
#include "common/wireguard/wg_device.hpp"
#include "common/wireguard/wg_update.hpp"

namespace mw {

class wg_uapi {
public:
    static std::string encode_get() { return "get=1\n\n"; }
    static std::string encode_set(const wg_device_update& u);

    // Parses a complete `get=1` answer (ending in "errno=0\n\n") into a device. A nonzero errno
    // comes back as that errno; anything malformed as errc::protocol_error.
    static result<wg_device> parse_get(std::string_view answer);
    // Parses the answer to `set=1` ("errno=0\n\n" on success).
    static status parse_set(std::string_view answer);

    // True once `buf` holds a complete answer (it ends with an empty line).
    static bool answer_complete(std::string_view buf) {
        return buf.size() >= 2 && buf.substr(buf.size() - 2) == "\n\n";
    }
    // The error for an `errno=N` answer. wireguard-go sends negative numbers (-EINVAL), the C
    // implementations positive ones; both mean the same errno.
    static error errno_error(long value, std::string_view what);
};

}  // namespace mw
