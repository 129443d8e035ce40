// meshwire's error values. Below main(), failures travel as `mw::error` (an std::error_code plus a
// human message that says what to fix) inside `mw::result<T>`; exceptions are only used while
// parsing configuration at startup.
#pragma once

#include <string>
#include <system_error>

namespace mw {

// Our own error conditions. OS and netlink failures use std::system_category() with the errno.
enum class errc {
    ok = 0,
    invalid_argument = 1,  // bad input from a caller or a config file
    parse_error,           // malformed text or bytes
    not_found,             // the object asked for does not exist
    already_exists,        // the object to create is already there
    exhausted,             // no free resource (e.g. no free address in a pod CIDR)
    unsupported,           // valid but not supported by this build / kernel
    io_error,              // file or socket I/O failed in a way errno does not describe
    protocol_error,        // a peer (kernel, daemon, plugin) answered something we cannot use
    timeout,
    state_mismatch,  // observed state differs from what was expected (CNI CHECK)
};

const std::error_category& mw_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), mw_category()};
}

struct error {
    std::error_code code;
    std::string message;

    error() = default;
    error(std::error_code c, std::string msg) : code(c), message(std::move(msg)) {}
    error(errc c, std::string msg) : code(make_error_code(c)), message(std::move(msg)) {}

    // errno-based error: message gets ": <strerror>" appended.
    static error from_errno(int err, const std::string& what);

    // The message, prefixed with context ("opening netns /x: ...").
    error wrap(const std::string& context) const { return {code, context + ": " + message}; }
    bool is(errc c) const noexcept { return code == make_error_code(c); }
    bool is_errno(int e) const noexcept {
        return code.category() == std::system_category() && code.value() == e;
    }
};

}  // namespace mw

template <>
struct std::is_error_code_enum<mw::errc> : std::true_type {};
