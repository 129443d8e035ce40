// Structured logging: one line per event, logfmt style (`ts=… level=… msg="…" key=value …`).
// Field names are fixed project-wide (peer, endpoint, relay, path, container_id, …) so that logs
// can be grepped and parsed. The sink is stderr by default or an append-only file; the CNI plugin
// must never log to stdout, so stdout is not offered as a sink.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace mw::log {

enum class level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

// A key=value pair. Values are strings; numbers are formatted by the caller (std::to_string).
using field = std::pair<std::string_view, std::string>;

// Parses "debug|info|warn|error|off"; returns false on anything else.
bool parse_level(std::string_view text, level& out);

// Configure the sink. An empty path means stderr. Returns false (and keeps stderr) when the file
// cannot be opened; the caller decides whether that is fatal.
bool set_file(const std::string& path);
void set_level(level l);
level current_level();
// Tag added to every line as `component=<name>` (e.g. "cni", "meshd").
void set_component(std::string_view name);

void write(level l, std::string_view msg, std::initializer_list<field> fields = {});

inline void debug(std::string_view m, std::initializer_list<field> f = {}) {
    write(level::debug, m, f);
}
inline void info(std::string_view m, std::initializer_list<field> f = {}) {
    write(level::info, m, f);
}
inline void warn(std::string_view m, std::initializer_list<field> f = {}) {
    write(level::warn, m, f);
}
inline void error(std::string_view m, std::initializer_list<field> f = {}) {
    write(level::error, m, f);
}

// Formats one line without writing it (exposed for tests).
std::string format_line(level l, std::string_view component, std::string_view msg,
                        std::initializer_list<field> fields, long long unix_ms);

}  // namespace mw::log
