#include "meshd/kube_client.hpp"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>

#include "common/ip_address.hpp"
#include "common/log.hpp"

namespace mw::meshd {

namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto k_request_timeout = 30s;
constexpr auto k_backoff_min = 1s;
// client-go's reflector backs off to 30 s; 15 s brings a node back sooner after an API outage,
// and the jitter spreads a cluster's reconnects.
constexpr auto k_backoff_max = 15s;
constexpr auto k_patch_retry = 30s;
constexpr size_t k_max_body = 64u << 20;  // a NodeList of thousands of nodes fits
constexpr size_t k_max_line = 4u << 20;   // one watch event

error http_error(const std::string& what, unsigned code, const std::string& body) {
    std::string msg = what + ": HTTP " + std::to_string(code);
    if (auto st = parse_kube_status(body); st && !st->second.empty())
        msg += ": " + st->second.substr(0, 300);
    errc c = code == 404 ? errc::not_found : errc::protocol_error;
    return error(c, msg);
}

std::string url_escape(std::string_view s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

result<std::string> read_token(const kube_access& a) {
    if (a.token_file.empty()) return a.token;
    std::ifstream f(a.token_file, std::ios::binary);
    if (!f) return error(errc::io_error, "cannot read the token file " + a.token_file);
    std::ostringstream ss;
    ss << f.rdbuf();
    std::string t = ss.str();
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
    return t;
}

result<std::shared_ptr<ssl::context>> make_tls_context(const kube_access& a) {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    boost::system::error_code ec;
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                         ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                     ec);
    ctx->set_verify_mode(ssl::verify_peer, ec);
    if (!a.ca_pem.empty()) {
        ctx->add_certificate_authority(asio::buffer(a.ca_pem), ec);
    } else {
        ctx->set_default_verify_paths(ec);
    }
    if (ec) return error(errc::invalid_argument, "kubernetes CA: " + ec.message());
    if (!a.cert_pem.empty()) {
        ctx->use_certificate_chain(asio::buffer(a.cert_pem), ec);
        if (!ec) ctx->use_private_key(asio::buffer(a.key_pem), ssl::context::pem, ec);
        if (ec)
            return error(errc::invalid_argument, "kubernetes client certificate: " + ec.message());
    }
    return ctx;
}

// One HTTP/1.1 connection, driven synchronously on the calling thread: each operation is
// started asynchronously on a private io_context and run until it completes, its deadline
// passes, `stop` is set, or `idle` (asked every second) says to give up — then the socket is
// closed and the operation fails. That keeps every wait bounded and stop() prompt.
class http_conn {
public:
    http_conn(const kube_access& a, ssl::context* tls, const std::atomic<bool>* stop)
        : a_(a), tls_ctx_(tls), stop_(stop) {}
    ~http_conn() { close(); }

    status connect(clock::time_point deadline) {
        asio::ip::tcp::resolver res(ioc_);
        asio::ip::tcp::resolver::results_type eps;
        boost::system::error_code ec = wait(
            [&](auto h) {
                res.async_resolve(
                    a_.host, std::to_string(a_.port),
                    [&, h](boost::system::error_code e, asio::ip::tcp::resolver::results_type r) {
                        eps = std::move(r);
                        h(e);
                    });
            },
            deadline, nullptr, [&] { res.cancel(); });
        if (ec) return net_error("cannot resolve " + a_.host, ec);
        if (a_.tls) {
            tls_.emplace(ioc_, *tls_ctx_);
            SSL* s = tls_->native_handle();
            if (ip_address::parse(a_.host)) {
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), a_.host.c_str());
            } else {
                SSL_set_tlsext_host_name(s, a_.host.c_str());
                SSL_set1_host(s, a_.host.c_str());
            }
            tls_->set_verify_mode(ssl::verify_peer);
        } else {
            plain_.emplace(ioc_);
        }
        ec = wait([&](auto h) { lowest().async_connect(eps, [h](auto e, auto&&) { h(e); }); },
                  deadline, nullptr, [&] { lowest().close(); });
        if (ec) return net_error("cannot connect to " + a_.url(), ec);
        if (a_.tls) {
            ec = wait([&](auto h) { tls_->async_handshake(ssl::stream_base::client, h); }, deadline,
                      nullptr, [&] { lowest().close(); });
            if (ec) return net_error("TLS handshake with " + a_.url() + " failed", ec);
        }
        return {};
    }

    status send(http::verb verb, const std::string& target, const std::string& body,
                const std::string& content_type, const std::string& token, const std::string& agent,
                clock::time_point deadline) {
        http::request<http::string_body> req{verb, target, 11};
        bool v6 = a_.host.find(':') != std::string::npos;
        req.set(http::field::host,
                (v6 ? "[" + a_.host + "]" : a_.host) + ":" + std::to_string(a_.port));
        req.set(http::field::user_agent, agent);
        req.set(http::field::accept, "application/json");
        if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
        if (!body.empty()) {
            req.set(http::field::content_type, content_type);
            req.body() = body;
        }
        req.prepare_payload();
        auto ec = wait(
            [&](auto h) {
                if (tls_) {
                    http::async_write(*tls_, req, [h](auto e, auto&&) { h(e); });
                } else {
                    http::async_write(*plain_, req, [h](auto e, auto&&) { h(e); });
                }
            },
            deadline, nullptr, [&] { lowest().close(); });
        if (ec) return net_error("cannot send to " + a_.url(), ec);
        return {};
    }

    result<unsigned> read_header(clock::time_point deadline, bool unlimited) {
        parser_.emplace();
        if (unlimited) {
            parser_->body_limit(boost::none);
        } else {
            parser_->body_limit(k_max_body);
        }
        auto ec = wait(
            [&](auto h) {
                if (tls_) {
                    http::async_read_header(*tls_, buf_, *parser_, [h](auto e, auto&&) { h(e); });
                } else {
                    http::async_read_header(*plain_, buf_, *parser_, [h](auto e, auto&&) { h(e); });
                }
            },
            deadline, nullptr, [&] { lowest().close(); });
        if (ec) return net_error("no answer from " + a_.url(), ec);
        return parser_->get().result_int();
    }

    // Appends what arrives of the body to `out`; false once the message is complete.
    result<bool> read_some(std::string& out, clock::time_point deadline,
                           const std::function<bool()>* idle) {
        if (parser_->is_done()) return false;
        parser_->get().body().data = chunk_;
        parser_->get().body().size = sizeof chunk_;
        auto ec = wait(
            [&](auto h) {
                if (tls_) {
                    http::async_read_some(*tls_, buf_, *parser_, [h](auto e, auto&&) { h(e); });
                } else {
                    http::async_read_some(*plain_, buf_, *parser_, [h](auto e, auto&&) { h(e); });
                }
            },
            deadline, idle, [&] { lowest().close(); });
        if (ec == http::error::need_buffer) ec = {};
        out.append(chunk_, sizeof chunk_ - parser_->get().body().size);
        if (ec) return net_error("reading from " + a_.url(), ec);
        return !parser_->is_done();
    }

    result<std::string> read_body(clock::time_point deadline) {
        std::string body;
        while (true) {
            auto more = read_some(body, deadline, nullptr);
            if (!more) return more.err();
            if (!*more) return body;
            if (body.size() > k_max_body)
                return error(errc::protocol_error, "answer from " + a_.url() + " too large");
        }
    }

    void close() {
        boost::system::error_code ec;
        if (tls_) beast::get_lowest_layer(*tls_).socket().close(ec);
        if (plain_) plain_->socket().close(ec);
    }

    std::string closed_because;  // "stopping", "deadline" or what idle() said

private:
    beast::tcp_stream& lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }

    error net_error(const std::string& what, const boost::system::error_code& ec) {
        std::string why = closed_because.empty() ? ec.message() : closed_because;
        if (ec.category() == asio::error::get_ssl_category() ||
            ec.category() == asio::ssl::error::get_stream_category()) {
            why = ec.message();
            // The verify result names the certificate problem (unknown CA, wrong host, expired).
            if (tls_) {
                long v = SSL_get_verify_result(tls_->native_handle());
                if (v != X509_V_OK)
                    why += " (certificate: " + std::string(X509_verify_cert_error_string(v)) + ")";
            }
        }
        return error(closed_because == "deadline" ? errc::timeout : errc::io_error,
                     what + ": " + why);
    }

    template <class Start, class Cancel>
    boost::system::error_code wait(Start&& start, clock::time_point deadline,
                                   const std::function<bool()>* idle, Cancel&& cancel) {
        bool done = false;
        boost::system::error_code ec;
        start([&](boost::system::error_code e) {
            ec = e;
            done = true;
        });
        auto next_idle = clock::now() + 1s;
        bool cancelled = false;
        // bugprone-infinite-loop: `done` is set by the callback above, which ioc_.run_for() runs;
        // the check does not follow captures into a lambda.
        // NOLINTNEXTLINE(bugprone-infinite-loop)
        while (!done) {
            ioc_.restart();
            ioc_.run_for(100ms);
            if (done || cancelled) continue;
            auto now = clock::now();
            if (stop_->load()) {
                closed_because = "stopping";
            } else if (now >= deadline) {
                closed_because = "deadline";
            } else if (idle && now >= next_idle) {
                next_idle = now + 1s;
                if ((*idle)()) closed_because = "closed to reconnect";
            }
            if (!closed_because.empty()) {
                cancel();
                cancelled = true;
            }
        }
        return ec;
    }

    const kube_access& a_;
    ssl::context* tls_ctx_;
    const std::atomic<bool>* stop_;
    asio::io_context ioc_;
    std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
    std::optional<beast::tcp_stream> plain_;
    beast::flat_buffer buf_;
    std::optional<http::response_parser<http::buffer_body>> parser_;
    char chunk_[16384];
};

struct response {
    unsigned status = 0;
    std::string body;
};

result<response> do_request(const kube_access& a, ssl::context* tls, const std::atomic<bool>* stop,
                            http::verb verb, const std::string& target, const std::string& body,
                            const std::string& content_type, const std::string& agent,
                            clock::duration timeout) {
    auto token = read_token(a);
    if (!token) return token.err();
    const auto deadline = clock::now() + timeout;
    http_conn c(a, tls, stop);
    MW_TRY_STATUS(c.connect(deadline));
    MW_TRY_STATUS(c.send(verb, target, body, content_type, *token, agent, deadline));
    response r;
    r.status = MW_TRY(c.read_header(deadline, false));
    r.body = MW_TRY(c.read_body(deadline));
    return r;
}

}  // namespace

struct kube_client::impl {
    std::shared_ptr<ssl::context> tls;
    std::mt19937_64 rng{std::random_device{}()};
    clock::duration backoff = k_backoff_min;
};

kube_client::kube_client(kube_client_config cfg, boost::asio::io_context& home, update_fn on_update)
    : cfg_(std::move(cfg)),
      home_(home),
      on_update_(std::move(on_update)),
      impl_(std::make_unique<impl>()) {}

kube_client::~kube_client() {
    stop();
}

void kube_client::start() {
    thread_ = std::thread([this] { run(); });
}

void kube_client::stop() {
    stop_ = true;
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

kube_client_stats kube_client::stats() const {
    std::lock_guard lk(mu_);
    return stats_;
}

void kube_client::sleep_for(std::chrono::milliseconds d) {
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, d, [this] { return stop_.load(); });
}

void kube_client::fail(const error& e) {
    {
        std::lock_guard lk(mu_);
        ++stats_.failures;
        stats_.synced = false;
        stats_.last_error = e.message;
    }
    log::warn(
        "kubernetes API: retrying; what was learned stays",
        {{"error", e.message},
         {"retry_in_ms",
          std::to_string(
              std::chrono::duration_cast<std::chrono::milliseconds>(impl_->backoff).count())}});
}

void kube_client::run() {
    if (cfg_.access.tls) {
        auto t = make_tls_context(cfg_.access);
        if (!t) {
            log::error("kubernetes client disabled", {{"error", t.err().message}});
            return;
        }
        impl_->tls = *t;
    }
    log::info("kubernetes client started",
              {{"api", cfg_.access.url()}, {"via", cfg_.access.source}, {"node", cfg_.node_name}});
    while (!stop_) {
        auto st = list_and_watch();
        if (stop_) break;
        if (st) continue;  // 410 Gone: LIST again at once
        fail(st.err());
        // Full jitter around the step: 75-125 %.
        std::uniform_real_distribution<double> j(0.75, 1.25);
        auto d =
            std::chrono::duration_cast<std::chrono::milliseconds>(impl_->backoff * j(impl_->rng));
        sleep_for(d);
        impl_->backoff = std::min<clock::duration>(impl_->backoff * 2, k_backoff_max);
    }
}

void kube_client::post_update() {
    auto snap = std::make_shared<const kube_node_map>(nodes_);
    boost::asio::post(home_, [fn = on_update_, snap] { fn(snap); });
}

void kube_client::maybe_patch(const kube_node& self) {
    if (cfg_.annotations.empty()) return;
    bool same = std::all_of(cfg_.annotations.begin(), cfg_.annotations.end(), [&](const auto& kv) {
        auto it = self.annotations.find(kv.first);
        return it != self.annotations.end() && it->second == kv.second;
    });
    if (same) return;
    auto now = clock::now();
    if (last_patch_try_ != clock::time_point{} && now - last_patch_try_ < k_patch_retry) return;
    last_patch_try_ = now;
    auto r = do_request(cfg_.access, impl_->tls.get(), &stop_, http::verb::patch,
                        "/api/v1/nodes/" + url_escape(cfg_.node_name),
                        annotation_patch(cfg_.annotations), "application/merge-patch+json",
                        cfg_.user_agent, k_request_timeout);
    if (!r || r->status != 200) {
        error e =
            r ? http_error("PATCH /api/v1/nodes/" + cfg_.node_name, r->status, r->body) : r.err();
        std::string hint = r && r->status == 403
                               ? "meshd's ServiceAccount needs patch on nodes (ClusterRole)"
                               : "retried in 30 s";
        log::warn("cannot publish our annotations on our Node",
                  {{"node", cfg_.node_name}, {"error", e.message}, {"hint", hint}});
        return;
    }
    last_patch_try_ = {};
    {
        std::lock_guard lk(mu_);
        ++stats_.patches;
    }
    if (auto n = parse_kube_node(r->body); n && n->name == cfg_.node_name) nodes_[n->name] = *n;
    log::info("annotations published on our Node",
              {{"node", cfg_.node_name}, {"annotations", std::to_string(cfg_.annotations.size())}});
}

status kube_client::list_and_watch() {
    auto r = do_request(cfg_.access, impl_->tls.get(), &stop_, http::verb::get, "/api/v1/nodes", "",
                        "", cfg_.user_agent, k_request_timeout);
    if (!r) return r.err();
    if (r->status != 200) return http_error("LIST /api/v1/nodes", r->status, r->body);
    auto list = parse_kube_node_list(r->body);
    if (!list) return list.err();
    nodes_.clear();
    for (auto& n : list->items) nodes_[n.name] = std::move(n);
    {
        std::lock_guard lk(mu_);
        ++stats_.lists;
        stats_.synced = true;
        stats_.last_error.clear();
    }
    impl_->backoff = k_backoff_min;
    log::info("kubernetes nodes listed", {{"nodes", std::to_string(nodes_.size())},
                                          {"resource_version", list->resource_version}});
    if (auto it = nodes_.find(cfg_.node_name); it != nodes_.end()) {
        maybe_patch(it->second);
    } else {
        log::warn("our Node is not in the API's node list", {{"node", cfg_.node_name}});
    }
    post_update();
    std::string rv = list->resource_version;

    while (!stop_) {
        auto token = read_token(cfg_.access);
        if (!token) return token.err();
        const std::string target =
            "/api/v1/nodes?watch=1&allowWatchBookmarks=true&resourceVersion=" + url_escape(rv) +
            "&timeoutSeconds=" + std::to_string(cfg_.watch_timeout_s);
        // The whole watch is bounded: the server ends it after timeoutSeconds; a server that
        // keeps it open silently much longer is considered gone.
        const auto deadline = clock::now() + std::chrono::seconds(cfg_.watch_timeout_s + 60);
        http_conn c(cfg_.access, impl_->tls.get(), &stop_);
        const auto start = clock::now() + k_request_timeout;
        MW_TRY_STATUS(c.connect(start));
        MW_TRY_STATUS(c.send(http::verb::get, target, "", "", *token, cfg_.user_agent, start));
        unsigned code = MW_TRY(c.read_header(start, true));
        if (code == 410) {
            std::lock_guard lk(mu_);
            ++stats_.relists_gone;
            log::info("kubernetes watch: resourceVersion too old (410); listing again");
            return {};
        }
        if (code != 200) {
            std::string body;
            (void)c.read_some(body, start, nullptr);
            return http_error("WATCH /api/v1/nodes", code, body);
        }
        {
            std::lock_guard lk(mu_);
            ++stats_.watches;
        }
        // A rotated token: this watch ends and the next one uses the new token.
        bool rotated = false;
        auto check_at = clock::now() + 5s;
        std::function<bool()> idle = [&] {
            if (clock::now() < check_at) return false;
            check_at = clock::now() + 5s;
            auto t = read_token(cfg_.access);
            rotated = t && *t != *token;
            return rotated;
        };
        std::string pending;
        while (true) {
            auto more = c.read_some(pending, deadline, &idle);
            bool changed = false;
            size_t pos = 0;
            while (true) {
                size_t nl = pending.find('\n', pos);
                if (nl == std::string::npos) break;
                std::string_view line(pending.data() + pos, nl - pos);
                pos = nl + 1;
                if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
                auto ev = parse_kube_watch_event(line);
                if (!ev) {
                    if (changed) post_update();
                    return ev.err();
                }
                {
                    std::lock_guard lk(mu_);
                    ++stats_.events;
                }
                switch (ev->type) {
                    case kube_event_type::added:
                    case kube_event_type::modified: {
                        if (!ev->node.resource_version.empty()) rv = ev->node.resource_version;
                        auto& slot = nodes_[ev->node.name];
                        if (!(slot == ev->node)) {
                            slot = ev->node;
                            changed = true;
                        }
                        if (ev->node.name == cfg_.node_name) maybe_patch(ev->node);
                        break;
                    }
                    case kube_event_type::deleted:
                        if (!ev->node.resource_version.empty()) rv = ev->node.resource_version;
                        changed = nodes_.erase(ev->node.name) > 0 || changed;
                        break;
                    case kube_event_type::bookmark:
                        rv = ev->node.resource_version;
                        break;
                    case kube_event_type::error:
                        if (changed) post_update();
                        if (ev->status_code == 410) {
                            std::lock_guard lk(mu_);
                            ++stats_.relists_gone;
                            log::info("kubernetes watch: 410 Gone; listing again",
                                      {{"detail", ev->status_message}});
                            return {};
                        }
                        return error(errc::protocol_error, "kubernetes watch: ERROR event " +
                                                               std::to_string(ev->status_code) +
                                                               ": " +
                                                               ev->status_message.substr(0, 300));
                }
            }
            pending.erase(0, pos);
            if (changed) post_update();
            // Events every second keep wait() from asking idle(): ask after each read too.
            if (more && *more && idle()) {
                log::info("kubernetes token changed; watching again with the new one");
                break;
            }
            if (pending.size() > k_max_line)
                return error(errc::protocol_error, "kubernetes watch: an event over 4 MiB");
            if (!more) {
                if (rotated) {
                    log::info("kubernetes token changed; watching again with the new one");
                    break;
                }
                return more.err();
            }
            if (!*more) break;  // the server ended the watch (timeoutSeconds): again from rv
        }
    }
    return {};
}

result<kube_node> kube_client::get_node(const kube_access& a, const std::string& name,
                                        std::chrono::milliseconds timeout) {
    std::shared_ptr<ssl::context> tls;
    if (a.tls) tls = MW_TRY(make_tls_context(a));
    std::atomic<bool> never{false};
    auto r = do_request(a, tls.get(), &never, http::verb::get, "/api/v1/nodes/" + url_escape(name),
                        "", "", "meshd", timeout);
    if (!r) return r.err();
    if (r->status != 200) return http_error("GET /api/v1/nodes/" + name, r->status, r->body);
    return parse_kube_node(r->body);
}

}  // namespace mw::meshd
