// What meshd's mDNS did, for `meshctl status` and the metrics (node_snapshot); kept apart from
// mdns_service.hpp so that the snapshot does not pull in Asio.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mw::meshd {

// Totals over every engine this service ran (for meshctl status and the metrics).
struct mdns_service_stats {
    std::vector<std::string> interfaces;  // running now
    uint64_t announcements = 0, answers = 0, legacy_answers = 0, conflicts = 0;
    uint64_t queries = 0, received = 0, sent = 0, malformed = 0, ignored = 0, own_looped = 0;
    uint64_t peers_found = 0, send_errors = 0;
    std::string instance;  // as announced (renamed after a conflict)
};

}  // namespace mw::meshd
