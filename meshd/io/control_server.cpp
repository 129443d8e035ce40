#include "meshd/io/control_server.hpp"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <cstring>
#include <exception>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/log.hpp"
#include "common/unique_fd.hpp"

namespace mw::meshd {

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;
using json = nlohmann::json;

namespace {

class control_connection;

// Never throws: a request may hold any bytes (nlohmann's default dump throws on invalid UTF-8).
std::string to_line(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

json error_response(const std::string& text) {
    return json{{"ok", false}, {"error", text}};
}

}  // namespace

struct control_server::state : std::enable_shared_from_this<control_server::state> {
    state(asio::io_context& io_, std::string path_, handler h_, limits lim_)
        : io(io_),
          acceptor(io_),
          retry_timer(io_),
          path(std::move(path_)),
          h(std::move(h_)),
          lim(lim_) {}

    asio::io_context& io;
    stream::acceptor acceptor;
    asio::steady_timer retry_timer;  // after an accept error such as EMFILE, so we do not spin
    std::string path;
    handler h;
    limits lim;
    bool stopped = false;
    // The socket file we created: stop() removes the path only if it is still this file, so a
    // second meshd that replaced it (after ours was stopped) keeps its socket.
    dev_t dev = 0;
    ino_t ino = 0;
    std::unordered_map<control_connection*, std::weak_ptr<control_connection>> conns;

    void accept_next();
};

namespace {

// One client. Lives as long as an operation or an outstanding reply_fn holds it; all member
// access happens on the io_context's thread.
class control_connection : public std::enable_shared_from_this<control_connection> {
public:
    control_connection(std::shared_ptr<control_server::state> s, stream::socket sock)
        : s_(std::move(s)), sock_(std::move(sock)), timer_(s_->io) {}

    // A handler that dropped its reply_fn without calling it ends here: the client sees the
    // connection close without an answer, and the server must forget the connection.
    ~control_connection() { s_->conns.erase(this); }

    void start() {
        arm_timer();
        auto self = shared_from_this();
        asio::async_read_until(
            sock_, asio::dynamic_buffer(in_, s_->lim.max_request_bytes), '\n',
            [self](const boost::system::error_code& ec, std::size_t n) { self->on_read(ec, n); });
    }

    void send(const json& response) {
        if (closed_ || sending_) return;
        sending_ = true;
        out_ = to_line(response);
        arm_timer();
        auto self = shared_from_this();
        asio::async_write(sock_, asio::buffer(out_),
                          [self](const boost::system::error_code& ec, std::size_t) {
                              if (ec && ec != asio::error::operation_aborted)
                                  log::debug("control client went away before its response",
                                             {{"error", ec.message()}});
                              self->close();
                          });
    }

    void close() noexcept {
        if (closed_) return;
        closed_ = true;
        boost::system::error_code ignored;
        sock_.shutdown(stream::socket::shutdown_both, ignored);
        sock_.close(ignored);
        timer_.cancel(ignored);
        s_->conns.erase(this);
    }

private:
    void arm_timer() {
        timer_.expires_after(s_->lim.idle_timeout);
        std::weak_ptr<control_connection> weak = shared_from_this();
        timer_.async_wait([weak](const boost::system::error_code& ec) {
            if (ec) return;  // cancelled or re-armed
            if (auto self = weak.lock()) {
                log::debug("control client idle, dropped");
                self->close();
            }
        });
    }

    void on_read(const boost::system::error_code& ec, std::size_t n) {
        if (closed_ || s_->stopped) return;
        std::string line;
        if (!ec) {
            line = in_.substr(0, n - 1);  // without the newline
        } else if (ec == asio::error::not_found) {
            send(error_response("request too long (the limit is " +
                                std::to_string(s_->lim.max_request_bytes) +
                                " bytes including the newline)"));
            return;
        } else if (ec == asio::error::eof && !in_.empty()) {
            // The client half-closed without a newline (printf '...' | socat): still one request.
            line = in_;
        } else {
            close();
            return;
        }
        timer_.cancel();  // the handler may take its time (e.g. a ping)
        if (!line.empty() && line.back() == '\r') line.pop_back();
        json req = json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (req.is_discarded()) {
            send(error_response("malformed request: not valid JSON"));
            return;
        }
        if (!req.is_object()) {
            send(error_response("malformed request: expected a JSON object"));
            return;
        }
        dispatch(req);
    }

    void dispatch(const json& req) {
        auto done = std::make_shared<std::atomic<bool>>(false);
        auto self = shared_from_this();
        control_server::reply_fn reply = [self, done](json response) {
            if (done->exchange(true)) {
                log::warn("control handler replied twice; second reply ignored");
                return;
            }
            // Posted, so a reply from another thread or from inside the handler is safe.
            asio::post(self->s_->io, [self, r = std::move(response)] { self->send(r); });
        };
        try {
            s_->h(req, reply);
        } catch (const std::exception& e) {
            // A handler bug (e.g. a json type_error on an unexpected field type) must not take
            // meshd down through io_context::run().
            log::error("control handler threw", {{"error", e.what()}});
            if (!done->exchange(true))
                send(error_response(std::string("internal error: ") + e.what()));
        }
    }

    std::shared_ptr<control_server::state> s_;
    stream::socket sock_;
    asio::steady_timer timer_;
    std::string in_;
    std::string out_;
    bool closed_ = false;
    bool sending_ = false;
};

// A connection beyond limits::max_clients: one best-effort non-blocking write, then close.
void refuse_busy(stream::socket sock) {
    boost::system::error_code ignored;
    sock.non_blocking(true, ignored);
    std::string line = to_line(error_response("busy: too many control connections, retry"));
    sock.write_some(asio::buffer(line), ignored);
    sock.close(ignored);
}

status make_parent_dirs(const std::string& path) {
    // Every missing ancestor, outermost first; mkdir is subject to the umask, so chmod after.
    for (std::size_t pos = path.find('/', 1); pos != std::string::npos;
         pos = path.find('/', pos + 1)) {
        std::string dir = path.substr(0, pos);
        if (::mkdir(dir.c_str(), 0755) == 0) {
            if (::chmod(dir.c_str(), 0755) != 0)
                return error::from_errno(errno, "chmod 0755 " + dir);
        } else if (errno != EEXIST) {
            return error::from_errno(errno, "creating directory " + dir);
        }
    }
    return {};
}

// The socket's directory decides who can replace the socket (and so who answers meshctl).
status check_socket_directory(const std::string& path) {
    const std::string dir = path.substr(0, std::max<std::size_t>(path.rfind('/'), 1));
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return error::from_errno(errno, "control socket dir " + dir);
    if (st.st_uid != ::geteuid() && st.st_uid != 0) {
        return error(errc::invalid_argument,
                     "control socket directory " + dir + " is owned by uid " +
                         std::to_string(st.st_uid) +
                         "; that user could replace the socket: use a directory owned by meshd's "
                         "user or root (the `socket` setting)");
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
        return error(errc::invalid_argument,
                     "control socket directory " + dir + " is writable by group or others (mode " +
                         mode + "); they could replace the socket: chmod go-w " + dir);
    }
    return {};
}

// Whether some process accepts on the unix socket at `path` right now.
bool socket_is_live(const std::string& path) {
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return true;
    // EAGAIN: the listener's backlog is full, so it is alive.
    return errno == EAGAIN;
}

// Removes a leftover socket file (a crashed meshd). Anything else at the path is refused:
// unlinking a regular file or a live socket because of a config typo would be destructive.
status clear_stale_socket(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return {};
        return error::from_errno(errno, "control socket " + path);
    }
    if (!S_ISSOCK(st.st_mode))
        return error(errc::already_exists,
                     "control socket " + path +
                         " exists and is not a socket; refusing to replace it (remove it or "
                         "choose another path with the `socket` setting)");
    if (socket_is_live(path))
        return error(errc::already_exists,
                     "control socket " + path +
                         " is in use by another process (another meshd with the same socket "
                         "path?)");
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return error::from_errno(errno, "removing stale control socket " + path);
    log::info("removed stale control socket", {{"socket", path}});
    return {};
}

}  // namespace

result<unique_fd> bind_unix_socket(const std::string& path, mode_t mode) {
    sockaddr_un addr{};
    if (path.empty() || path.size() >= sizeof addr.sun_path)
        return error(errc::invalid_argument, "unix socket path " + path + " is empty or too long");
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return error::from_errno(errno, "creating control socket");
    // Linux gives the bound file the socket inode's mode minus the umask; the umask is
    // process-wide (other threads run), so it is not changed here.
    if (::fchmod(fd.get(), mode) != 0) return error::from_errno(errno, "fchmod control socket");
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        return error::from_errno(errno, "binding control socket " + path);
    // The umask may have narrowed it; make it exact (it can only widen to `mode`).
    if (::chmod(path.c_str(), mode) != 0) {
        int e = errno;
        ::unlink(path.c_str());
        return error::from_errno(e, "chmod control socket " + path);
    }
    return fd;
}

void control_server::state::accept_next() {
    if (stopped) return;
    acceptor.async_accept(
        [self = shared_from_this()](const boost::system::error_code& ec, stream::socket sock) {
            if (self->stopped || ec == asio::error::operation_aborted) return;
            if (ec) {
                // EMFILE and friends: the pending connection stays queued; try again shortly.
                log::warn("control socket accept failed",
                          {{"socket", self->path}, {"error", ec.message()}});
                self->retry_timer.expires_after(std::chrono::milliseconds(100));
                self->retry_timer.async_wait([self](const boost::system::error_code& tec) {
                    if (!tec) self->accept_next();
                });
                return;
            }
            if (self->conns.size() >= self->lim.max_clients) {
                refuse_busy(std::move(sock));
            } else {
                auto c = std::make_shared<control_connection>(self, std::move(sock));
                self->conns.emplace(c.get(), c);
                c->start();
            }
            self->accept_next();
        });
}

control_server::control_server(std::shared_ptr<state> s) : s_(std::move(s)) {}

control_server::~control_server() {
    stop();
}

result<std::unique_ptr<control_server>> control_server::start(asio::io_context& io,
                                                              const std::string& path, handler h) {
    return start(io, path, std::move(h), limits{});
}

result<std::unique_ptr<control_server>> control_server::start(asio::io_context& io,
                                                              const std::string& path, handler h,
                                                              limits lim) {
    if (path.empty()) return error(errc::invalid_argument, "control socket path is empty");
    if (path.size() >= sizeof(sockaddr_un::sun_path))
        return error(errc::invalid_argument, "control socket path " + path +
                                                 " is too long (a unix socket path has at most " +
                                                 std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                                                 " bytes)");
    if (path.back() == '/')
        return error(errc::invalid_argument, "control socket path " + path + " names a directory");
    if (!h) return error(errc::invalid_argument, "control socket needs a handler");
    if (lim.max_request_bytes < 2 || lim.max_clients == 0)
        return error(errc::invalid_argument, "control socket limits out of range");

    MW_TRY_STATUS(make_parent_dirs(path));
    MW_TRY_STATUS(check_socket_directory(path));
    MW_TRY_STATUS(clear_stale_socket(path));

    auto s = std::make_shared<state>(io, path, std::move(h), lim);
    auto bound = bind_unix_socket(path, socket_mode);
    if (!bound) return std::move(bound).err();
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        int e = errno;
        ::unlink(path.c_str());
        return error::from_errno(e, "control socket " + path);
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    boost::system::error_code ec;
    const int raw = bound->release();
    s->acceptor.assign(stream(), raw, ec);
    if (ec) {
        ::close(raw);
        ::unlink(path.c_str());
        return error(std::error_code(ec.value(), std::system_category()),
                     "control socket " + path + ": " + ec.message());
    }
    // From here on the file is ours; the server's destructor removes it on every error path.
    std::unique_ptr<control_server> server(new control_server(s));
    s->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
        return error(std::error_code(ec.value(), std::system_category()),
                     "listening on control socket " + path + ": " + ec.message());
    s->accept_next();
    log::info("control socket listening", {{"socket", path}});
    return server;
}

void control_server::stop() noexcept {
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
    // Drop the handler now: it may capture daemon objects that die right after the server,
    // while a pending reply_fn still keeps this state alive.
    s_->h = nullptr;
    struct stat st {};
    if (s_->ino != 0 && ::lstat(s_->path.c_str(), &st) == 0 && st.st_dev == s_->dev &&
        st.st_ino == s_->ino)
        ::unlink(s_->path.c_str());
}

const std::string& control_server::path() const noexcept {
    return s_->path;
}

std::size_t control_server::connections() const noexcept {
    return s_->conns.size();
}

}  // namespace mw::meshd
