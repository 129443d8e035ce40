// meshctl's side of the control socket: connect, send one request line, read one response line.
// Plain blocking-free POSIX with poll() so one deadline covers connect, write and read; meshctl
// is a short-lived CLI and needs no event loop.
#pragma once

#include <chrono>
#include <string>

#include "common/result.hpp"

namespace mw::meshctl {

// Sends `request_line` (which must end in '\n') to the unix socket at `socket_path` and returns
// the response line without its newline. Fails with the socket path and the errno text when it
// cannot connect, with errc::timeout when meshd does not answer in time, and with
// errc::protocol_error when meshd closes the connection without a complete line.
result<std::string> exchange(const std::string& socket_path, const std::string& request_line,
                             std::chrono::milliseconds timeout);

}  // namespace mw::meshctl
