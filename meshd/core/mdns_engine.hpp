// meshd's mDNS on one interface: an mdns_responder (this node's service) and an mdns_querier
// (other meshds) behind one entry, pure like the rest of meshd/core: datagrams and `now` in,
// datagrams, found peers and a deadline out. The socket adapter (meshd/mdns_service) runs one
// engine per selected interface.
//
// What it filters before either half sees a packet: malformed packets (counted, dropped), queries
// or responses with a non-zero opcode or rcode (RFC 6762 §18.3, §18.11), responses whose source
// port is not 5353 (§6: they are not mDNS), and this engine's own packets looped back by the
// kernel (multicast loopback stays on so that a responder on the same host sees us): the bytes of
// every packet sent in the last few seconds are remembered, and a packet from port 5353 with the
// same bytes is ours. The responder also treats records identical to its own as no conflict, so
// a looped packet that slipped past would still not start a rename loop.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "common/ip_address.hpp"
#include "meshd/core/mdns_querier.hpp"
#include "meshd/core/mdns_responder.hpp"
#include "meshd/core/mdns_types.hpp"
#include "meshd/core/node_id.hpp"

namespace mw::meshd {

struct mdns_engine_config {
    mdns_service_info service;
    node_id self;
    std::vector<int> families;  // AF_INET and/or AF_INET6
    uint64_t seed = 0;          // the jitter's random seed (from the OS, in the adapter)
};

class mdns_engine {
public:
    struct counters {
        uint64_t received = 0;
        uint64_t sent = 0;
        uint64_t malformed = 0;    // dropped: did not parse
        uint64_t ignored = 0;      // dropped: opcode/rcode, or a response not from port 5353
        uint64_t own_looped = 0;   // our own packets back through multicast loopback
        uint64_t peers_found = 0;  // found-peer events (new peers or changed endpoints)
    };

    static constexpr uint64_t own_packet_memory_ms = 5000;

    explicit mdns_engine(mdns_engine_config cfg);

    // Starts the responder (probing once there are addresses) and the querier.
    void start(std::vector<ip_address> addrs, uint64_t now_ms);
    // The interface's advertised addresses changed: re-announce and query again soon.
    void set_addresses(std::vector<ip_address> addrs, uint64_t now_ms);
    void on_datagram(std::span<const uint8_t> bytes, const wg_endpoint& from, uint64_t now_ms);
    void on_timer(uint64_t now_ms);
    // Goodbyes for our records; the engine is silent after.
    void stop(uint64_t now_ms);
    uint64_t next_deadline() const noexcept;

    // True when this engine multicast exactly these bytes within own_packet_memory_ms: the
    // adapter asks every engine of the host, so that a node on one LAN through two interfaces
    // does not take its other interface's announcements for a conflict.
    bool sent_recently(std::span<const uint8_t> bytes, uint64_t now_ms) const;

    std::vector<mdns_datagram> take_output();
    std::vector<mdns_peer> take_found();

    const counters& stats() const noexcept { return stats_; }
    // Why the last malformed packet was refused (the parser's message), for a debug log line.
    const std::string& last_malformed() const noexcept { return last_malformed_; }
    const mdns_responder& responder() const noexcept { return responder_; }
    const mdns_querier& querier() const noexcept { return querier_; }

private:
    void note_sent(uint64_t now_ms, size_t from);
    bool is_own(std::span<const uint8_t> bytes, uint64_t now_ms);

    mdns_rng rng_;
    mdns_responder responder_;
    mdns_querier querier_;
    std::vector<mdns_datagram> out_;
    std::vector<mdns_peer> pending_found_;
    struct sent_packet {
        uint64_t hash;
        uint64_t at_ms;
    };
    std::deque<sent_packet> sent_;
    counters stats_;
    std::string last_malformed_;
};

}  // namespace mw::meshd
