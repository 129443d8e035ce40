// meshd's Prometheus endpoint (config `metrics.listen`): a minimal HTTP/1.1 server on the
// daemon's single-threaded boost::asio::io_context. One request per connection, answered with
// `Connection: close`:
//   GET|HEAD /metrics (a query string is ignored) -> 200, text/plain; version=0.0.4, body = the
//                                                    provider's string (HEAD: headers only)
//   another path -> 404; another method on /metrics -> 405 with `Allow: GET, HEAD`;
//   a malformed head -> 400; a head over limits::max_head_bytes -> 431; HTTP/2+ -> 505;
//   a provider that throws -> 500 (logged).
// The server knows nothing of the metrics; prometheus_text builds the body.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"

namespace mw::meshd {

class metrics_server {
public:
    // Called on the io_context's thread once per GET or HEAD of /metrics; returns the body.
    using provider = std::function<std::string()>;

    struct limits {
        // The request line and headers including the blank line that ends them.
        std::size_t max_head_bytes = std::size_t{8} * 1024;
        // A client gets this long from connecting to finish its request head (in total, so
        // dribbling bytes does not extend it), and again this long to read the response.
        std::chrono::milliseconds idle_timeout{5000};
        // At this many open connections, a new one closes the oldest idle one (still sending its
        // head, or answered and not yet closed), so idle connections (a slow-loris) cannot lock
        // the scraper out; only when every one is being written to is the new one closed.
        std::size_t max_clients = 32;
    };

    // `listen`: "IP:PORT" or "[IPv6]:PORT"; port 0 picks an ephemeral port (see
    // local_endpoint()). "[::]:PORT" also accepts IPv4 (dual-stack). A malformed string or a
    // bind/listen failure is an error naming the address.
    static result<std::unique_ptr<metrics_server>> start(boost::asio::io_context& io,
                                                         const std::string& listen, provider p);
    static result<std::unique_ptr<metrics_server>> start(boost::asio::io_context& io,
                                                         const std::string& listen, provider p,
                                                         limits lim);

    // The bound address and port (the real port when started with port 0). Still valid after
    // stop().
    wg_endpoint local_endpoint() const;

    // Stop accepting (the listening socket is closed), drop every open connection, release the
    // provider. Idempotent; the destructor calls it. Must run on the io_context's thread (or
    // while it is not running).
    void stop() noexcept;
    ~metrics_server();

    metrics_server(const metrics_server&) = delete;
    metrics_server& operator=(const metrics_server&) = delete;

    // Open connections right now (for tests).
    std::size_t connections() const noexcept;
    // Idle connections closed to make room for new ones (for tests).
    uint64_t evicted() const noexcept;

    struct state;  // shared with the connections; defined in the .cpp

private:
    explicit metrics_server(std::shared_ptr<state> s);
    std::shared_ptr<state> s_;
};

}  // namespace mw::meshd
