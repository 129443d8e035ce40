// meshd's Kubernetes API client (issue 11 §3), on its own thread: blocking network I/O never runs
// on the core's thread (the same rule as wireguard_worker and record_cache_writer).
//
//   LIST /api/v1/nodes, then WATCH from the list's resourceVersion with allowWatchBookmarks;
//   a watch that ends (timeoutSeconds) is opened again from the last resourceVersion seen
//   (bookmarks move it on without events); 410 Gone (as the watch's HTTP status or an ERROR event)
//   → LIST again; any other failure → back off (1 s doubling to 30 s, ±25 % jitter) and LIST again.
//   Nothing depends on /api or /version (KubeEdge's edge endpoint fails them: kubeedge#3053), and
//   watch events without kind are taken as Nodes (kubeedge#2616).
//   The bearer token is read from its file before every request (service account tokens rotate);
//   an open watch is closed and opened again with the new token when the file changes, and a 401
//   makes the next attempt read it again.
//   Our own Node: when its meshwire.io/ annotations differ from what we publish (our node ID,
//   WireGuard key, control port), a merge PATCH sets them (again after a failure, at most every
//   30 s).
//
// Results are posted to `home` (the core's io_context): the whole node set after each LIST and
// after each batch of events. When the API is unreachable nothing is posted: the core keeps what
// it was told last.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/result.hpp"
#include "meshd/kube_access.hpp"
#include "meshd/kube_json.hpp"

namespace mw::meshd {

using kube_node_map = std::map<std::string, kube_node>;

struct kube_client_config {
    kube_access access;
    std::string node_name;                           // our own Node
    std::map<std::string, std::string> annotations;  // to publish on it (empty: none)
    int watch_timeout_s = 300;                       // the server ends a watch after this
    std::string user_agent = "meshd";
};

// Counters for meshctl status and the logs; read from any thread.
struct kube_client_stats {
    uint64_t lists = 0, watches = 0, events = 0, relists_gone = 0, failures = 0, patches = 0;
    bool synced = false;  // the last LIST succeeded and its watch has not failed since
    std::string last_error;
};

class kube_client {
public:
    using update_fn = std::function<void(std::shared_ptr<const kube_node_map>)>;

    kube_client(kube_client_config cfg, boost::asio::io_context& home, update_fn on_update);
    ~kube_client();
    kube_client(const kube_client&) = delete;
    kube_client& operator=(const kube_client&) = delete;

    void start();
    // Closes the connection in progress (within ~100 ms) and joins the thread. Updates not yet
    // run on `home` may still run; the caller stops `home` or ignores them.
    void stop();
    kube_client_stats stats() const;

    // One GET /api/v1/nodes/NAME, blocking, on the calling thread (startup, before the core
    // runs: the pod CIDRs). errc::not_found for a 404.
    static result<kube_node> get_node(const kube_access& a, const std::string& name,
                                      std::chrono::milliseconds timeout);

private:
    void run();
    status list_and_watch();
    void maybe_patch(const kube_node& self);
    void post_update();
    void sleep_for(std::chrono::milliseconds d);
    void fail(const error& e);

    kube_client_config cfg_;
    boost::asio::io_context& home_;
    update_fn on_update_;
    kube_node_map nodes_;  // the client thread's
    std::chrono::steady_clock::time_point last_patch_try_{};
    std::string patched_rv_;  // our Node's resourceVersion after our last successful PATCH

    struct impl;
    std::unique_ptr<impl> impl_;
    std::atomic<bool> stop_{false};
    mutable std::mutex mu_;
    std::condition_variable cv_;
    kube_client_stats stats_;  // under mu_
    std::thread thread_;
};

}  // namespace mw::meshd
