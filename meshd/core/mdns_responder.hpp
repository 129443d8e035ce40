// The responder half of meshd's mDNS on one interface (RFC 6762, RFC 6763), pure: messages and
// `now` in, datagrams and a deadline out. It owns this node's records:
//
//   _services._dns-sd._udp.local PTR _meshwire._udp.local           4500 s, shared
//   _meshwire._udp.local         PTR <instance>._meshwire._udp.local 4500 s, shared
//   <instance>._meshwire._udp.local SRV 0 0 <listenPort> <host>.local 120 s, unique
//   <instance>._meshwire._udp.local TXT "id=<node id hex>" "v=<ver>" 4500 s, unique
//   <host>.local A / AAAA <each advertised address>                 120 s, unique
//   NSEC for the instance and the host (which types exist)          120 s, unique
//
// and goes idle -> probing (3 probes 250 ms apart, §8.1) -> announcing (3 announcements, 1 s then
// 2 s apart, §8.3) -> announced. It answers QM questions by multicast (unique records at once,
// shared ones after 20-120 ms, at most once a second per record, §6), QU questions by unicast
// unless the record went out by multicast within a quarter of its TTL (§5.4), and legacy unicast
// questions (source port != 5353) with a unicast reply carrying the query's ID and question, no
// cache-flush bit and TTLs of at most 10 s (§6.7). Known answers at least half their TTL suppress
// an answer (§7.1). A conflicting record for its instance or host name renames it ("node (2)",
// §9) and probes again; a record with the same data is not a conflict (that is how our own
// looped-back packets and another copy of us look). It answers only for its own names.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.hpp"
#include "meshd/core/mdns_message.hpp"
#include "meshd/core/mdns_types.hpp"

namespace mw::meshd {

struct mdns_service_info {
    std::string instance;    // nodeName
    std::string host_label;  // "<host_label>.local": a name of this node that no one else uses
    uint16_t port = 0;       // listenPort
    std::vector<std::string> txt;
};

class mdns_responder {
public:
    enum class state : uint8_t { idle, probing, announcing, announced, stopped };

    struct counters {
        uint64_t announcements = 0;  // announcement packets (per family)
        uint64_t answers = 0;        // response packets to questions (multicast, QU, legacy)
        uint64_t legacy_answers = 0;
        uint64_t conflicts = 0;  // renames after a conflict
        uint64_t goodbyes = 0;
    };

    static constexpr uint64_t probe_interval_ms = 250;
    static constexpr int probe_count = 3;
    static constexpr int announce_count = 3;
    static constexpr uint64_t record_interval_ms = 1000;  // §6: per record, per interface
    static constexpr uint64_t probe_defense_interval_ms = 250;
    static constexpr size_t max_addresses = 16;  // per family: keeps a packet under one MTU

    // `families`: AF_INET and/or AF_INET6, the groups this interface's sockets joined.
    mdns_responder(mdns_service_info info, std::vector<int> families, mdns_rng& rng);

    // The addresses to advertise (A/AAAA). The first non-empty set starts probing; a later change
    // sends goodbyes for removed addresses and announces again; an empty set says goodbye to all.
    void set_addresses(std::vector<ip_address> addrs, uint64_t now_ms,
                       std::vector<mdns_datagram>& out);
    void on_query(const mdns_message& q, const wg_endpoint& from, uint64_t now_ms,
                  std::vector<mdns_datagram>& out);
    // A response from another responder: conflicts with our unique records.
    void on_response(const mdns_message& r, uint64_t now_ms);
    void on_timer(uint64_t now_ms, std::vector<mdns_datagram>& out);
    // Goodbyes (TTL 0) for everything announced; then nothing more.
    void stop(uint64_t now_ms, std::vector<mdns_datagram>& out);
    // UINT64_MAX when nothing is due.
    uint64_t next_deadline() const noexcept;

    state current_state() const noexcept { return state_; }
    const std::string& instance() const noexcept { return instance_; }
    const mdns_name& instance_name() const noexcept { return inst_name_; }
    const mdns_name& host_name() const noexcept { return host_name_; }
    // The current record set with full TTLs and cache-flush bits as announced.
    std::vector<mdns_record> records() const;
    // True when `r` is one of our records (same name, type, class and data).
    bool is_own(const mdns_record& r) const noexcept;
    const counters& stats() const noexcept { return stats_; }

private:
    struct owned {
        mdns_record rec;
        std::optional<uint64_t> last_multicast_ms;
        std::optional<uint64_t> pending_ms;  // multicast due at
    };

    void rebuild(std::vector<mdns_datagram>& out, uint64_t now_ms, bool addresses_only);
    void begin_probing(uint64_t now_ms, uint64_t delay_ms);
    void send_probe(uint64_t now_ms, std::vector<mdns_datagram>& out);
    void send_announcement(uint64_t now_ms, std::vector<mdns_datagram>& out);
    void flush_pending(uint64_t now_ms, std::vector<mdns_datagram>& out);
    void conflict(uint64_t now_ms);
    void schedule(owned& o, uint64_t at_ms, uint64_t min_interval_ms);
    // Records to add as additionals for these answers (§12: SRV, TXT, addresses, NSEC).
    std::vector<const owned*> additionals_for(const std::vector<const owned*>& answers) const;
    bool is_our_unique_name(const mdns_name& n) const noexcept;
    void multicast(const mdns_message& m, std::vector<mdns_datagram>& out);
    std::vector<mdns_record> probe_authority() const;

    mdns_service_info info_;
    std::vector<int> families_;
    mdns_rng& rng_;
    std::vector<ip_address> addrs_;
    std::string instance_, host_label_;
    mdns_name inst_name_, host_name_;
    std::vector<owned> records_;
    state state_ = state::idle;
    int step_ = 0;  // probes or announcements sent in the current phase
    uint64_t phase_due_ms_ = 0;
    int rename_count_ = 1;
    counters stats_;
};

}  // namespace mw::meshd
