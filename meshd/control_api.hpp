// meshctl's JSON views (docs/meshctl-json.md) rendered from one node_snapshot, and the parsing of
// control requests. The ping command's timing stays with the daemon (it drives the core).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/result.hpp"
#include "meshd/node_snapshot.hpp"

namespace mw::meshd {

nlohmann::json status_json(const node_snapshot& s);
nlohmann::json peers_json(const node_snapshot& s);
nlohmann::json relays_json(const node_snapshot& s);

struct control_request {
    std::string cmd;   // status | peers | relays | ping
    std::string node;  // ping: name or node ID
    int count = 3;     // ping: 1..100
};
// Errors are the message meshctl shows (errc::invalid_argument).
result<control_request> parse_control_request(const nlohmann::json& req);

}  // namespace mw::meshd
