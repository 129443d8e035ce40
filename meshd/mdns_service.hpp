// meshd's mDNS on the host (docs/architecture.md "mDNS"): the socket and netlink adapter around
// one pure mdns_engine per selected interface, on the daemon's io_context (the core's thread).
//
// Two sockets, 0.0.0.0:5353 and [::]:5353, with SO_REUSEADDR and SO_REUSEPORT so that avahi,
// a browser or python-zeroconf on the same host keep working beside us; multicast loopback on
// (or a responder on this host never sees us; the engine recognises its own looped packets);
// the groups 224.0.0.251 and ff02::fb joined on each selected interface; IP_PKTINFO /
// IPV6_RECVPKTINFO tell which interface a packet came in on, and multicast goes out on a chosen
// one with IP_MULTICAST_IF / IPV6_MULTICAST_IF. TTL / hop limit 255 (RFC 6762 §11).
//
// Links and addresses are watched through an rtnetlink socket subscribed to link and address
// changes (the project's netlink code does the dumps): any change re-reads the selection (after
// 200 ms, so that a burst of changes is one re-read), starts engines on new interfaces, stops
// them (goodbyes) on gone ones, and hands changed addresses to the engine, which re-announces.
// A re-read every 30 s covers a lost netlink notification (ENOBUFS).
#pragma once

#include <boost/asio.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "meshd/core/mdns_engine.hpp"
#include "meshd/mdns_interfaces.hpp"
#include "meshd/mdns_service_stats.hpp"

namespace mw::meshd {

struct mdns_service_config {
    mdns_link_policy policy;
    mdns_service_info service;  // instance = nodeName, host label, port = listenPort, TXT
    node_id self;
};

class mdns_service {
public:
    using found_fn = std::function<void(const mdns_peer&)>;

    // Opens the sockets and the netlink watch and starts on the current interfaces. Errors: the
    // IPv4 socket cannot be opened (the IPv6 one is optional: a host without IPv6 runs v4 only).
    static result<std::unique_ptr<mdns_service>> start(boost::asio::io_context& io,
                                                       mdns_service_config cfg, found_fn found);
    // Closes the sockets and the netlink watch; no goodbyes (they need stop()).
    ~mdns_service();

    // Goodbyes on every interface, then closes everything. Idempotent.
    void stop();
    mdns_service_stats stats() const;

private:
    struct link_state {
        mdns_link link;
        std::unique_ptr<mdns_engine> engine;
    };

    mdns_service(boost::asio::io_context& io, mdns_service_config cfg, found_fn found);
    status open_sockets();
    void close_sockets() noexcept;
    void open_netlink();
    void wait_socket(int family);
    void wait_netlink();
    void receive(int family);
    void rescan();
    void schedule_rescan(std::chrono::milliseconds after);
    void start_link(const mdns_link& l, uint64_t now);
    void stop_link(link_state& s, uint64_t now);
    void membership(int family, int ifindex, bool join);
    void flush(link_state& s);
    void arm_timer();
    void on_timer();
    void add_totals(const mdns_engine& e);

    boost::asio::io_context& io_;
    mdns_service_config cfg_;
    found_fn found_;
    boost::asio::ip::udp::socket sock4_, sock6_;
    boost::asio::posix::stream_descriptor netlink_;
    boost::asio::steady_timer timer_, rescan_timer_;
    uint64_t armed_ = UINT64_MAX;
    bool rescan_pending_ = false;
    bool stopped_ = false;
    std::map<int, link_state> links_;  // by interface index
    mdns_service_stats totals_;        // of engines already stopped
    uint64_t next_malformed_log_ = 0;  // steady ms
};

}  // namespace mw::meshd
