// meshctl's request building and output formatting: pure functions from JSON to text, so the
// wire contract (docs/meshctl-json.md) and the tables are tested without a daemon. The
// formatters never throw on a result of unexpected shape (an older or newer meshd): a missing or
// mistyped field prints as "-".
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mw::meshctl {

// The request line's object: {"cmd":"status"}, {"cmd":"ping","node":N,"count":C}, ...
nlohmann::json build_request(const std::string& command, const std::string& node, int count);

// A response line, checked against the envelope {"ok":true,"result":{...}} |
// {"ok":false,"error":"..."}. errc::protocol_error when it is anything else.
// bugprone-exception-escape flags the implicit noexcept members that move nlohmann::json, whose
// move constructor is noexcept: a false positive.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct response {
    bool ok = false;
    nlohmann::json result;  // an object when ok
    std::string error;      // when !ok
};
result<response> parse_response(std::string_view line);

// --json: the result object, 2-space indented, keys sorted (stable), with a trailing newline.
std::string format_json(const nlohmann::json& result);

// Human output per command. `now_unix` (seconds) is used only for a peer whose
// lastHandshakeAgoSeconds is absent but lastHandshake is given.
std::string format_status(const nlohmann::json& result);
std::string format_peers(const nlohmann::json& result, std::int64_t now_unix);
std::string format_relays(const nlohmann::json& result);
std::string format_ping(const nlohmann::json& result);
std::string format_human(const std::string& command, const nlohmann::json& result,
                         std::int64_t now_unix);

// ping's exit status: 0 when at least one reply came back, else 1.
int ping_exit_code(const nlohmann::json& result);

// Pieces, exposed for tests. RTT in ms: "0.05ms", "1.2ms", "250.0ms", "1.25s"; "-" for null.
std::string format_rtt(const nlohmann::json& ms);
// Durations: "0s", "59s", "3m07s", "2h05m", "3d04h".
std::string format_duration(std::int64_t seconds);
// Bytes: "512 B", "1.5 KiB", "3.2 MiB", "1.0 GiB".
std::string format_bytes(std::int64_t bytes);

}  // namespace mw::meshctl
