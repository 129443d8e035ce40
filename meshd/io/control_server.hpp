// The meshctl control socket: a unix stream socket on which each client sends one request line
// (a JSON object, newline-terminated) and gets one response line back, then the connection
// closes. Runs on the daemon's single-threaded boost::asio::io_context. The wire contract (field
// names) is documented in docs/meshctl-json.md; this class only moves lines and knows nothing of
// the commands.
#pragma once

#include <sys/types.h>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace mw::meshd {

// A unix stream socket bound at `path` whose file has exactly `mode` from the moment it exists:
// the mode is set on the socket before bind() (Linux creates the file with the socket inode's
// mode, narrowed by the umask), then set again exactly. Not listening yet. (Before: bind() with
// the umask's mode, chmod after: with a umask of 0 the file was 0777 until the chmod.)
result<unique_fd> bind_unix_socket(const std::string& path, mode_t mode);

class control_server {
public:
    // Sends `response` (the whole object, e.g. {"ok":true,"result":{...}}) and closes the
    // connection. Call it exactly once; later calls are ignored (and logged). It may be called
    // from any thread, and later than the handler returns: the write is posted to the
    // io_context. Calling it after the client went away or after the server stopped is harmless.
    using reply_fn = std::function<void(nlohmann::json response)>;
    // Called on the io_context's thread for each well-formed request (a JSON object). Malformed,
    // oversize and non-object requests are answered by the server itself with
    // {"ok":false,"error":"..."} and never reach the handler. If the handler throws before
    // replying, the client gets {"ok":false,"error":"internal error: ..."}.
    using handler = std::function<void(const nlohmann::json& request, reply_fn reply)>;

    struct limits {
        std::size_t max_request_bytes =
            std::size_t{64} * 1024;  // the request line including its newline
        // A client that has not finished its request line after this long is dropped, and so is
        // one that does not read its response; the handler's own time is not limited.
        std::chrono::milliseconds idle_timeout{5000};
        // Connections beyond this are answered {"ok":false,"error":"busy..."} at once, so a
        // stuck script cannot exhaust the daemon's file descriptors.
        std::size_t max_clients = 64;
    };

    // The socket file's mode: owner and group (meshctl runs as root or as a member of meshd's
    // group); never others, not even for an instant (see bind_unix_socket).
    static constexpr mode_t socket_mode = 0660;

    // Creates the parent directory if missing (mode 0755) and refuses one that another user owns
    // (other than root) or that group or others may write without the sticky bit (they could
    // replace the socket with their own and answer meshctl); replaces a stale socket file
    // (refuses a path that is not a socket, or a socket some process still accepts on), binds
    // with mode socket_mode and starts accepting on `io`.
    static result<std::unique_ptr<control_server>> start(boost::asio::io_context& io,
                                                         const std::string& path, handler h);
    static result<std::unique_ptr<control_server>> start(boost::asio::io_context& io,
                                                         const std::string& path, handler h,
                                                         limits lim);

    // stop(): stop accepting, drop every open connection (pending replies become no-ops), remove
    // the socket file. Idempotent; the destructor calls it. Must run on the io_context's thread
    // (or while it is not running).
    void stop() noexcept;
    ~control_server();

    control_server(const control_server&) = delete;
    control_server& operator=(const control_server&) = delete;

    const std::string& path() const noexcept;
    // Open connections right now (for tests and metrics).
    std::size_t connections() const noexcept;

    struct state;  // shared with the connections; defined in the .cpp

private:
    explicit control_server(std::shared_ptr<state> s);
    std::shared_ptr<state> s_;
};

}  // namespace mw::meshd
