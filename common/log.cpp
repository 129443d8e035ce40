#include "common/log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace mw::log {

namespace {

std::atomic<level> g_level{level::info};
std::atomic<int> g_fd{STDERR_FILENO};
std::mutex g_mu;
std::string g_component;

const char* level_name(level l) {
    switch (l) {
        case level::debug:
            return "debug";
        case level::info:
            return "info";
        case level::warn:
            return "warn";
        case level::error:
            return "error";
        case level::off:
            return "off";
    }
    return "?";
}

bool needs_quotes(std::string_view v) {
    if (v.empty()) return true;
    for (char c : v) {
        if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20)
            return true;
    }
    return false;
}

void append_value(std::string& out, std::string_view v) {
    if (!needs_quotes(v)) {
        out.append(v);
        return;
    }
    out.push_back('"');
    for (char c : v) {
        switch (c) {
            case '"':
                out.append("\\\"");
                break;
            case '\\':
                out.append("\\\\");
                break;
            case '\n':
                out.append("\\n");
                break;
            case '\r':
                out.append("\\r");
                break;
            case '\t':
                out.append("\\t");
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
                    out.append(buf);
                } else {
                    out.push_back(c);
                }
        }
    }
    out.push_back('"');
}

}  // namespace

bool parse_level(std::string_view text, level& out) {
    for (level l : {level::debug, level::info, level::warn, level::error, level::off}) {
        if (text == level_name(l)) {
            out = l;
            return true;
        }
    }
    return false;
}

bool set_file(const std::string& path) {
    int fd = STDERR_FILENO;
    if (!path.empty()) {
        fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) return false;
    }
    int old = g_fd.exchange(fd);
    if (old != STDERR_FILENO) ::close(old);
    return true;
}

void set_level(level l) {
    g_level = l;
}
level current_level() {
    return g_level;
}

void set_component(std::string_view name) {
    std::lock_guard lk(g_mu);
    g_component = name;
}

std::string format_line(level l, std::string_view component, std::string_view msg,
                        std::initializer_list<field> fields, long long unix_ms) {
    std::string line;
    line.reserve(128);
    std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char ts[64];
    std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(unix_ms % 1000));
    line.append("ts=").append(ts).append(" level=").append(level_name(l));
    if (!component.empty()) line.append(" component=").append(component);
    line.append(" msg=");
    append_value(line, msg);
    for (const auto& [k, v] : fields) {
        line.push_back(' ');
        line.append(k).push_back('=');
        append_value(line, v);
    }
    line.push_back('\n');
    return line;
}

void write(level l, std::string_view msg, std::initializer_list<field> fields) {
    if (l < g_level.load(std::memory_order_relaxed) || l == level::off) return;
    auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    std::lock_guard lk(g_mu);
    std::string line = format_line(l, g_component, msg, fields, now);
    // One write() per line: O_APPEND keeps lines from concurrent processes whole.
    [[maybe_unused]] auto n = ::write(g_fd.load(), line.data(), line.size());
}

}  // namespace mw::log
