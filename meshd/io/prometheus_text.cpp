#include "meshd/io/prometheus_text.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

namespace mw::meshd {

namespace {

bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// HELP text: backslash and newline are escaped (double quotes are not, per 0.0.4).
void append_help(std::string& out, std::string_view s) {
    for (char c : s) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
}

void append_label_value(std::string& out, std::string_view s) {
    for (char c : s) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
}

// For error messages: the name as given, but never a multi-line or huge string.
std::string printable(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 64)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
    if (s.size() > 64) out += "...";
    return out;
}

}  // namespace

bool prometheus_text::valid_metric_name(std::string_view name) noexcept {
    if (name.empty() || !(is_name_start(name[0]) || name[0] == ':')) return false;
    for (char c : name)
        if (!(is_name_start(c) || is_digit(c) || c == ':')) return false;
    return true;
}

bool prometheus_text::valid_label_name(std::string_view name) noexcept {
    if (name.empty() || !is_name_start(name[0])) return false;
    if (name.starts_with("__")) return false;  // reserved for Prometheus itself
    for (char c : name)
        if (!(is_name_start(c) || is_digit(c))) return false;
    return true;
}

std::string prometheus_text::format_value(std::uint64_t v) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, end);
}

std::string prometheus_text::format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    // 2^63: every integral double below it in magnitude fits an int64 exactly.
    constexpr double two63 = 9223372036854775808.0;
    if (v == std::trunc(v) && std::fabs(v) < two63) {
        auto i = static_cast<std::int64_t>(v);  // -0.0 becomes 0
        char buf[24];
        auto [end, ec] = std::to_chars(buf, buf + sizeof buf, i);
        return std::string(buf, end);
    }
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip
    return std::string(buf, end);
}

void prometheus_text::reject(std::string_view name, std::string_view why) {
    if (invalid_++ == 0) first_invalid_ = "metric \"" + printable(name) + "\": " + std::string(why);
}

void prometheus_text::gauge(std::string_view name, std::string_view help, const labels& l,
                            double v) {
    add(name, help, l, kind::gauge, format_value(v));
}

void prometheus_text::counter(std::string_view name, std::string_view help, const labels& l,
                              double v) {
    if (v < 0) {  // NaN passes: the format allows it
        reject(name, "counter is negative");
        return;
    }
    add(name, help, l, kind::counter, format_value(v));
}

void prometheus_text::counter(std::string_view name, std::string_view help, const labels& l,
                              std::uint64_t v) {
    add(name, help, l, kind::counter, format_value(v));
}

void prometheus_text::add(std::string_view name, std::string_view help, const labels& l, kind type,
                          const std::string& value) {
    if (!valid_metric_name(name)) {
        reject(name, "invalid metric name (must match [a-zA-Z_:][a-zA-Z0-9_:]*)");
        return;
    }
    std::string label_text;
    if (!l.empty()) {
        label_text += '{';
        for (std::size_t i = 0; i < l.size(); ++i) {
            const auto& [k, val] = l[i];
            if (!valid_label_name(k)) {
                reject(name, "invalid label name \"" + printable(k) +
                                 "\" (must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __)");
                return;
            }
            for (std::size_t j = 0; j < i; ++j) {
                if (l[j].first == k) {
                    reject(name, "label \"" + k + "\" given twice");
                    return;
                }
            }
            if (i) label_text += ',';
            label_text += k;
            label_text += "=\"";
            append_label_value(label_text, val);
            label_text += '"';
        }
        label_text += '}';
    }

    auto it = index_.find(std::string(name));
    family* f;
    if (it == index_.end()) {
        index_.emplace(std::string(name), families_.size());
        f = &families_.emplace_back(family{std::string(name), std::string(help), type, {}, {}});
    } else {
        f = &families_[it->second];
        if (f->type != type) {
            reject(name, f->type == kind::gauge ? "already used as a gauge"
                                                : "already used as a counter");
            return;
        }
    }
    // Label order matters to this check ({a,b} and {b,a} are the same series to Prometheus),
    // so compare a sorted rendering.
    std::string key;
    if (l.size() > 1) {
        labels sorted = l;
        std::sort(sorted.begin(), sorted.end());
        for (const auto& [k, val] : sorted) {
            key += k;
            key += '\0';
            key += val;
            key += '\0';
        }
    } else {
        key = label_text;
    }
    if (!f->label_sets.insert(std::move(key)).second) {
        reject(name, "the same label set was added twice" +
                         (label_text.empty() ? std::string() : " (" + printable(label_text) + ")"));
        return;
    }
    std::string line;
    line.reserve(name.size() + label_text.size() + value.size() + 2);
    line += name;
    line += label_text;
    line += ' ';
    line += value;
    line += '\n';
    f->samples.push_back(std::move(line));
}

std::string prometheus_text::str() const {
    std::string out;
    for (const family& f : families_) {
        out += "# HELP ";
        out += f.name;
        out += ' ';
        append_help(out, f.help);
        out += "\n# TYPE ";
        out += f.name;
        out += f.type == kind::gauge ? " gauge\n" : " counter\n";
        for (const auto& s : f.samples) out += s;
    }
    return out;
}

}  // namespace mw::meshd
