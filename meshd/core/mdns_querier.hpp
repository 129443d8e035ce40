// The querier half of meshd's mDNS on one interface, pure like the responder. It browses for
// `_meshwire._udp.local` (RFC 6762 §5.2: the first query 20-120 ms after start, then 1 s apart,
// the interval doubling up to 60 minutes), lists the PTR answers it already holds with more than
// half their TTL left as known answers (§7.1), keeps every response's records in an mdns_cache
// and resolves each instance it learns: SRV and TXT of the instance, A/AAAA of the SRV target,
// asked for when a response left them out (at most once a second per name). An instance whose
// TXT carries `id=<64 hex>` (not ours) and whose SRV target has addresses is a found peer.
// The records of every peer found (SRV, TXT, A/AAAA of its target) are asked for again at 80, 85,
// 90 and 95 % of their TTL (§5.2 cache maintenance), so a live peer stays resolved.
// Queries go out on one family (IPv4 when the link has it): responders answer on all of theirs.
// restart() goes back to the fast start (a link came up, an address changed).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "meshd/core/mdns_cache.hpp"
#include "meshd/core/mdns_message.hpp"
#include "meshd/core/mdns_types.hpp"
#include "meshd/core/node_id.hpp"

namespace mw::meshd {

class mdns_querier {
public:
    static constexpr uint64_t first_interval_ms = 1000;
    static constexpr uint64_t max_interval_ms = 60ull * 60 * 1000;
    static constexpr uint64_t resolve_interval_ms = 1000;

    mdns_querier(node_id self, std::vector<int> families, mdns_rng& rng);

    void start(uint64_t now_ms);
    // This node's own answer to the browse (our PTR), listed as a known answer in every browse
    // query: our responder then stays silent on our own query, and a query from another host is
    // never byte-identical to ours unless it lists our PTR too (so the engine's own-packet check
    // cannot swallow another querier's question). Empty while we announce nothing.
    void set_own_answers(std::vector<mdns_record> own) { own_ = std::move(own); }
    void restart(uint64_t now_ms) { start(now_ms); }
    void stop() { running_ = false; }
    // Records of a response from another responder (ours are filtered out before).
    void on_response(const mdns_message& r, uint64_t now_ms);
    void on_timer(uint64_t now_ms, std::vector<mdns_datagram>& out);
    uint64_t next_deadline() const noexcept;
    // Peers that are new or whose endpoints changed since the last call.
    std::vector<mdns_peer> take_found();
    // Every peer resolved right now.
    std::vector<mdns_peer> peers(uint64_t now_ms) const;
    const mdns_cache& cache() const noexcept { return cache_; }
    uint64_t queries_sent() const noexcept { return queries_sent_; }
    uint64_t current_interval_ms() const noexcept { return interval_ms_; }

private:
    void resolve(uint64_t now_ms);
    // Cache maintenance: due refresh questions into pending_; the next refresh time.
    void maintain(uint64_t now_ms);
    uint64_t next_refresh_ms(uint64_t now_ms) const;
    // The names whose records keep the found peers resolved (instances and SRV targets).
    std::vector<mdns_name> peer_names(uint64_t now_ms) const;
    void want(const mdns_name& n, uint16_t type, uint64_t now_ms);

    node_id self_;
    std::vector<int> families_;
    mdns_rng& rng_;
    mdns_cache cache_;
    bool running_ = false;
    uint64_t browse_due_ms_ = 0;
    uint64_t interval_ms_ = first_interval_ms;
    // Resolution questions waiting for the next query, and when each name/type was last asked.
    std::vector<mdns_question> pending_;
    uint64_t pending_due_ms_ = 0;
    std::map<std::pair<std::string, uint16_t>, uint64_t> asked_ms_;
    // The endpoints last reported per instance (lower-cased instance name).
    std::map<std::string, mdns_peer> reported_;
    std::vector<mdns_peer> found_;
    std::vector<mdns_record> own_;
    uint64_t next_refresh_ms_ = UINT64_MAX;
    uint64_t queries_sent_ = 0;
};

}  // namespace mw::meshd
