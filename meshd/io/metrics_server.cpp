#include "meshd/io/metrics_server.hpp"

#include <time.h>

#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <exception>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/ip_address.hpp"
#include "common/log.hpp"

namespace mw::meshd {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

class metrics_connection;

constexpr std::string_view metrics_path = "/metrics";
constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view error_content_type = "text/plain; charset=utf-8";
// After the response, what the client still sends (a body, pipelined requests) is read and
// discarded up to this much, so closing does not reset the connection under the response.
constexpr std::size_t max_drain_bytes = std::size_t{64} * 1024;

// RFC 7230 tchar: the characters of a method and of a header name.
bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (!is_tchar(c)) return false;
    return true;
}

// IMF-fixdate (RFC 7231 7.1.1.1), without strftime so the locale cannot change it.
std::string http_date() {
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = ::time(nullptr);
    struct tm t {};
    ::gmtime_r(&now, &t);
    char buf[40];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[t.tm_wday % 7],
                  t.tm_mday, months[t.tm_mon % 12], t.tm_year + 1900, t.tm_hour, t.tm_min,
                  t.tm_sec);
    return buf;
}

std::string_view reason_phrase(int code) {
    switch (code) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 505:
            return "HTTP Version Not Supported";
    }
    return "Error";
}

// A whole response. `head_only`: HEAD, so the headers describe `body` but it is not sent.
std::string make_response(int code, std::string_view content_type, const std::string& body,
                          bool head_only, std::string_view extra_headers = {}) {
    std::string out;
    out.reserve(200 + (head_only ? 0 : body.size()));
    out += "HTTP/1.1 ";
    out += std::to_string(code);
    out += ' ';
    out += reason_phrase(code);
    out += "\r\nDate: ";
    out += http_date();
    out += "\r\nContent-Type: ";
    out += content_type;
    out += "\r\nContent-Length: ";
    out += std::to_string(body.size());
    out += "\r\nConnection: close\r\n";
    out += extra_headers;
    out += "\r\n";
    if (!head_only) out += body;
    return out;
}

std::string error_response(int code, const std::string& text, bool head_only = false,
                           std::string_view extra_headers = {}) {
    return make_response(
        code, error_content_type,
        std::to_string(code) + " " + std::string(reason_phrase(code)) + ": " + text + "\n",
        head_only, extra_headers);
}

// Where the head ends (the index after the blank line), or npos. A blank line is "\r\n" or a
// bare "\n" (RFC 7230 3.5 lets a server accept LF alone).
std::size_t find_head_end(const std::string& s, std::size_t from) {
    for (std::size_t i = s.find('\n', from); i != std::string::npos; i = s.find('\n', i + 1)) {
        if (i + 1 < s.size() && s[i + 1] == '\n') return i + 2;
        if (i + 2 < s.size() && s[i + 1] == '\r' && s[i + 2] == '\n') return i + 3;
    }
    return std::string::npos;
}

struct parsed_request {
    int error_code = 0;  // 0: well-formed; else 400 or 505
    std::string error_text;
    std::string method;
    std::string path;  // without query or fragment
};

parsed_request parse_head(std::string_view head) {
    parsed_request r;
    auto fail = [&](int code, std::string text) {
        r.error_code = code;
        r.error_text = std::move(text);
        return r;
    };
    std::vector<std::string_view> lines;
    while (!head.empty()) {
        auto nl = head.find('\n');
        std::string_view line = head.substr(0, nl);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        lines.push_back(line);
        if (nl == std::string_view::npos) break;
        head.remove_prefix(nl + 1);
    }
    std::size_t i = 0;
    while (i < lines.size() && lines[i].empty()) ++i;  // RFC 7230 3.5: ignore leading CRLFs
    if (i == lines.size()) return fail(400, "empty request");
    std::string_view rl = lines[i++];
    auto sp1 = rl.find(' ');
    auto sp2 = sp1 == std::string_view::npos ? sp1 : rl.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || rl.find(' ', sp2 + 1) != std::string_view::npos)
        return fail(400, "malformed request line (expected METHOD TARGET HTTP/1.1)");
    std::string_view method = rl.substr(0, sp1);
    std::string_view target = rl.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = rl.substr(sp2 + 1);
    if (!is_token(method)) return fail(400, "malformed method");
    if (version.size() != 8 || !version.starts_with("HTTP/") || version[6] != '.' ||
        version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
        return fail(400, "malformed HTTP version");
    if (version[5] != '1') return fail(505, "only HTTP/1.x is served here");
    if (target.empty()) return fail(400, "empty request target");
    for (char c : target)
        if (c <= 0x20 || c >= 0x7f) return fail(400, "malformed request target");
    // absolute-form (RFC 7230 5.3.2): keep the path.
    for (std::string_view scheme : {"http://", "https://"}) {
        if (target.size() >= scheme.size()) {
            bool match = true;
            for (std::size_t k = 0; k < scheme.size(); ++k)
                if (std::tolower(static_cast<unsigned char>(target[k])) != scheme[k]) match = false;
            if (match) {
                auto slash = target.find('/', scheme.size());
                target =
                    slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
                break;
            }
        }
    }
    if (target != "*" && target.front() != '/') return fail(400, "malformed request target");
    target = target.substr(0, target.find_first_of("?#"));
    for (; i < lines.size(); ++i) {
        std::string_view h = lines[i];
        if (h.empty()) break;
        if (h.front() == ' ' || h.front() == '\t')
            return fail(400, "folded header lines are not accepted");
        auto colon = h.find(':');
        if (colon == std::string_view::npos || !is_token(h.substr(0, colon)))
            return fail(400, "malformed header line");
    }
    r.method = std::string(method);
    r.path = std::string(target);
    return r;
}

error listen_error(const std::string& listen, const std::string& why) {
    return error(errc::invalid_argument,
                 "metrics listen address \"" + listen +
                     "\" is not IP:PORT (e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::]:9464): " + why);
}

result<tcp::endpoint> parse_listen(const std::string& listen) {
    std::string_view s = listen;
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return listen_error(listen, "missing :PORT");
    std::string_view host = s.substr(0, colon);
    std::string_view port = s.substr(colon + 1);
    bool bracketed = !host.empty() && host.front() == '[';
    if (bracketed) {
        if (host.size() < 3 || host.back() != ']')
            return listen_error(listen, "expected [IPv6]:PORT");
        host = host.substr(1, host.size() - 2);
    }
    auto ip = ip_address::parse(host);
    if (!ip) return listen_error(listen, "not an IP address (host names are not resolved)");
    if (ip->is_v6() && !bracketed) return listen_error(listen, "IPv6 addresses need [brackets]");
    if (ip->is_v4() && bracketed) return listen_error(listen, "brackets are for IPv6 addresses");
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || p > 65535)
        return listen_error(listen, "port must be 0-65535");
    boost::system::error_code aec;
    auto addr = asio::ip::make_address(ip->str(), aec);
    if (aec) return listen_error(listen, "not an IP address");
    return tcp::endpoint(addr, static_cast<unsigned short>(p));
}

}  // namespace

struct metrics_server::state : std::enable_shared_from_this<metrics_server::state> {
    state(asio::io_context& io_, std::string listen_, provider p_, limits lim_)
        : io(io_),
          acceptor(io_),
          retry_timer(io_),
          listen(std::move(listen_)),
          p(std::move(p_)),
          lim(lim_) {}

    asio::io_context& io;
    tcp::acceptor acceptor;
    asio::steady_timer retry_timer;  // after an accept error such as EMFILE, so we do not spin
    std::string listen;
    provider p;
    limits lim;
    wg_endpoint local;
    bool stopped = false;
    std::unordered_map<metrics_connection*, std::weak_ptr<metrics_connection>> conns;
    uint64_t accepted = 0;  // numbers connections in accept order (the oldest goes first)
    uint64_t evicted = 0;

    void accept_next();
    // At max_clients: closes the oldest connection that is not being answered (still sending
    // its head, or done and draining); false when every one is being answered.
    bool evict_oldest_idle();
};

namespace {

// One client, one request. Lives as long as an operation holds it; all on the io thread.
class metrics_connection : public std::enable_shared_from_this<metrics_connection> {
public:
    metrics_connection(std::shared_ptr<metrics_server::state> s, tcp::socket sock)
        : s_(std::move(s)), sock_(std::move(sock)), timer_(s_->io), serial_(++s_->accepted) {}

    uint64_t serial() const noexcept { return serial_; }
    // Not in the middle of writing a response: waiting for (the rest of) its head, or draining.
    bool idle() const noexcept { return !closed_ && !writing_; }

    ~metrics_connection() { s_->conns.erase(this); }

    void start() {
        arm_timer();  // the whole head must arrive within one timeout
        read_head();
    }

    void close() noexcept {
        if (closed_) return;
        closed_ = true;
        boost::system::error_code ignored;
        sock_.shutdown(tcp::socket::shutdown_both, ignored);
        sock_.close(ignored);
        timer_.cancel(ignored);
        s_->conns.erase(this);
    }

private:
    void arm_timer() {
        timer_.expires_after(s_->lim.idle_timeout);
        std::weak_ptr<metrics_connection> weak = shared_from_this();
        timer_.async_wait([weak](const boost::system::error_code& ec) {
            if (ec) return;  // cancelled or re-armed
            if (auto self = weak.lock()) {
                log::debug("metrics client too slow, dropped");
                self->close();
            }
        });
    }

    void read_head() {
        auto self = shared_from_this();
        sock_.async_read_some(asio::buffer(buf_), [self](const boost::system::error_code& ec,
                                                         std::size_t n) { self->on_read(ec, n); });
    }

    void on_read(const boost::system::error_code& ec, std::size_t n) {
        if (closed_ || s_->stopped) return;
        if (ec) {
            if (ec == asio::error::eof && !in_.empty())
                respond(error_response(400, "incomplete request head"));
            else
                close();
            return;
        }
        // The blank line may straddle reads: look back far enough for "\n\r\n".
        std::size_t from = in_.size() >= 2 ? in_.size() - 2 : 0;
        in_.append(buf_.data(), n);
        std::size_t end = find_head_end(in_, from);
        if (end == std::string::npos) {
            if (in_.size() >= s_->lim.max_head_bytes)
                respond(error_response(
                    431, "request head over " + std::to_string(s_->lim.max_head_bytes) + " bytes"));
            else
                read_head();
            return;
        }
        if (end > s_->lim.max_head_bytes) {
            respond(error_response(
                431, "request head over " + std::to_string(s_->lim.max_head_bytes) + " bytes"));
            return;
        }
        handle(parse_head(std::string_view(in_).substr(0, end)));
    }

    void handle(const parsed_request& r) {
        if (r.error_code) {
            respond(error_response(r.error_code, r.error_text));
            return;
        }
        bool head_only = r.method == "HEAD";
        if (r.path != metrics_path) {
            respond(error_response(404, "the metrics are at /metrics", head_only));
            return;
        }
        if (r.method != "GET" && !head_only) {
            respond(error_response(405, "use GET or HEAD", false, "Allow: GET, HEAD\r\n"));
            return;
        }
        std::string body;
        try {
            body = s_->p();
        } catch (const std::exception& e) {
            log::error("metrics provider threw", {{"error", e.what()}});
            respond(error_response(500, "internal error", head_only));
            return;
        }
        respond(make_response(200, metrics_content_type, body, head_only));
    }

    // Writes the response, half-closes, reads and discards what the client still sends until
    // it closes (or the timeout), then closes.
    void respond(std::string response) {
        writing_ = true;
        out_ = std::move(response);
        in_.clear();
        in_.shrink_to_fit();
        arm_timer();
        auto self = shared_from_this();
        asio::async_write(sock_, asio::buffer(out_),
                          [self](const boost::system::error_code& ec, std::size_t) {
                              if (self->closed_) return;
                              self->writing_ = false;
                              if (ec) {
                                  log::debug("metrics client went away before its response",
                                             {{"error", ec.message()}});
                                  self->close();
                                  return;
                              }
                              self->out_.clear();
                              self->out_.shrink_to_fit();
                              boost::system::error_code ignored;
                              self->sock_.shutdown(tcp::socket::shutdown_send, ignored);
                              self->drain();
                          });
    }

    void drain() {
        auto self = shared_from_this();
        sock_.async_read_some(asio::buffer(buf_),
                              [self](const boost::system::error_code& ec, std::size_t n) {
                                  if (self->closed_) return;
                                  self->drained_ += n;
                                  if (ec || self->drained_ > max_drain_bytes)
                                      self->close();
                                  else
                                      self->drain();
                              });
    }

    std::shared_ptr<metrics_server::state> s_;
    tcp::socket sock_;
    asio::steady_timer timer_;
    std::array<char, 4096> buf_;
    std::string in_;
    std::string out_;
    std::size_t drained_ = 0;
    uint64_t serial_ = 0;
    bool closed_ = false;
    bool writing_ = false;
};

}  // namespace

void metrics_server::state::accept_next() {
    if (stopped) return;
    acceptor.async_accept(
        [self = shared_from_this()](const boost::system::error_code& ec, tcp::socket sock) {
            if (self->stopped || ec == asio::error::operation_aborted) return;
            if (ec) {
                // EMFILE and friends: the pending connection stays queued; try again shortly.
                log::warn("metrics endpoint accept failed",
                          {{"listen", self->listen}, {"error", ec.message()}});
                self->retry_timer.expires_after(std::chrono::milliseconds(100));
                self->retry_timer.async_wait([self](const boost::system::error_code& tec) {
                    if (!tec) self->accept_next();
                });
                return;
            }
            // At the limit the oldest idle connection makes room: idle connections held open
            // (a slow-loris, a stuck scraper) must not lock the scraper out until they time out.
            if (self->conns.size() >= self->lim.max_clients && !self->evict_oldest_idle()) {
                log::debug("metrics endpoint busy, connection closed", {{"listen", self->listen}});
                boost::system::error_code ignored;
                sock.close(ignored);
            } else {
                auto c = std::make_shared<metrics_connection>(self, std::move(sock));
                self->conns.emplace(c.get(), c);
                c->start();
            }
            self->accept_next();
        });
}

bool metrics_server::state::evict_oldest_idle() {
    std::shared_ptr<metrics_connection> oldest;
    for (auto& [raw, weak] : conns) {
        auto c = weak.lock();
        if (c && c->idle() && (!oldest || c->serial() < oldest->serial())) oldest = std::move(c);
    }
    if (!oldest) return false;
    oldest->close();
    if (evicted++ == 0) {
        log::info(
            "metrics endpoint at its connection limit: the oldest idle connection is closed "
            "for each new one (logged once)",
            {{"listen", listen}, {"max_clients", std::to_string(lim.max_clients)}});
    }
    return true;
}

metrics_server::metrics_server(std::shared_ptr<state> s) : s_(std::move(s)) {}

metrics_server::~metrics_server() {
    stop();
}

result<std::unique_ptr<metrics_server>> metrics_server::start(asio::io_context& io,
                                                              const std::string& listen,
                                                              provider p) {
    return start(io, listen, std::move(p), limits{});
}

result<std::unique_ptr<metrics_server>> metrics_server::start(asio::io_context& io,
                                                              const std::string& listen, provider p,
                                                              limits lim) {
    tcp::endpoint ep = MW_TRY(parse_listen(listen));
    if (!p) return error(errc::invalid_argument, "metrics endpoint needs a provider");
    if (lim.max_head_bytes < 16 || lim.max_clients == 0)
        return error(errc::invalid_argument, "metrics endpoint limits out of range");

    auto s = std::make_shared<state>(io, listen, std::move(p), lim);
    auto fail = [&](const boost::system::error_code& ec, const char* what) {
        return error(std::error_code(ec.value(), std::system_category()),
                     std::string(what) + " metrics endpoint " + listen + ": " + ec.message());
    };
    boost::system::error_code ec;
    s->acceptor.open(ep.protocol(), ec);
    if (ec) return fail(ec, "opening a socket for");
    s->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (ec) return fail(ec, "setting SO_REUSEADDR on");
    if (ep.address().is_v6()) {
        s->acceptor.set_option(asio::ip::v6_only(false), ec);
        if (ec) return fail(ec, "clearing IPV6_V6ONLY on");
    }
    s->acceptor.bind(ep, ec);
    if (ec) return fail(ec, "binding");
    s->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return fail(ec, "listening on");
    tcp::endpoint bound = s->acceptor.local_endpoint(ec);
    if (ec) return fail(ec, "reading the address of");
    auto local = wg_endpoint::from_sockaddr(bound.data(), bound.size());
    if (!local) return error(errc::io_error, "metrics endpoint " + listen + ": unexpected family");
    s->local = *local;
    std::unique_ptr<metrics_server> server(new metrics_server(s));
    s->accept_next();
    log::info("metrics endpoint listening", {{"listen", s->local.str()}});
    return server;
}

wg_endpoint metrics_server::local_endpoint() const {
    return s_->local;
}

void metrics_server::stop() noexcept {
    if (!s_ || s_->stopped) return;
    s_->stopped = true;
    boost::system::error_code ignored;
    s_->acceptor.close(ignored);
    s_->retry_timer.cancel(ignored);
    // close() erases itself from s_->conns: walk a map taken out of it.
    auto open = std::move(s_->conns);
    s_->conns.clear();
    for (auto& [raw, weak] : open)
        if (auto c = weak.lock()) c->close();
    // The provider may capture daemon objects that die right after the server.
    s_->p = nullptr;
}

std::size_t metrics_server::connections() const noexcept {
    return s_->conns.size();
}

uint64_t metrics_server::evicted() const noexcept {
    return s_->evicted;
}

}  // namespace mw::meshd
