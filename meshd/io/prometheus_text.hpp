// A writer for the Prometheus text exposition format 0.0.4 (what meshd's metrics endpoint
// serves). Samples may be added in any order; str() emits each family once, in the order its
// first sample was added, as `# HELP`, `# TYPE` and then all of its samples in the order they
// were added. A family's HELP text is the one given with its first sample. No timestamps.
// Pure: no I/O, no clock.
//
// A sample that would make Prometheus reject the whole scrape is skipped and counted instead
// (invalid_samples()): an invalid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), an invalid or
// reserved label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__"), a label name given twice,
// a name already used with the other type, the same label set twice in one family, or a
// negative counter. The count covers samples added so far, so a provider can add it last as
// its own metric, and first_invalid() says what was wrong with the first one (for a log line).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace mw::meshd {

class prometheus_text {
public:
    // Label names and values in the order they are written. Values may hold any bytes
    // (backslash, double quote and newline are escaped); they should be UTF-8.
    using labels = std::vector<std::pair<std::string, std::string>>;

    void gauge(std::string_view name, std::string_view help, const labels& l, double v);
    void counter(std::string_view name, std::string_view help, const labels& l, double v);
    // Exact (no rounding through double) for values above 2^53.
    void counter(std::string_view name, std::string_view help, const labels& l, std::uint64_t v);
    // Any other integer type (so `counter(..., 3)` is not ambiguous); negative values are
    // invalid samples.
    template <std::integral T>
    requires(!std::same_as<T, std::uint64_t> &&
             !std::same_as<T, bool>) void counter(std::string_view name, std::string_view help,
                                                  const labels& l, T v) {
        if (v < 0) {
            reject(name, "counter is negative");
            return;
        }
        counter(name, help, l, static_cast<std::uint64_t>(v));
    }

    // The exposition; ends with a newline unless empty.
    std::string str() const;

    std::size_t invalid_samples() const noexcept { return invalid_; }
    // Empty while invalid_samples() == 0.
    const std::string& first_invalid() const noexcept { return first_invalid_; }

    // Number formatting as written in samples: integers without exponent (also integral doubles
    // below 2^63 in magnitude), other finite values shortest round-trip ("0.25", "1.5e-07"),
    // "NaN", "+Inf", "-Inf". Exposed for tests.
    static std::string format_value(double v);
    static std::string format_value(std::uint64_t v);

    static bool valid_metric_name(std::string_view name) noexcept;
    static bool valid_label_name(std::string_view name) noexcept;

private:
    enum class kind { gauge, counter };
    struct family {
        std::string name;
        std::string help;
        kind type;
        std::vector<std::string> samples;            // whole lines, newline included
        std::unordered_set<std::string> label_sets;  // rendered "{...}" to catch duplicates
    };

    void add(std::string_view name, std::string_view help, const labels& l, kind type,
             const std::string& value);
    void reject(std::string_view name, std::string_view why);

    std::vector<family> families_;
    std::unordered_map<std::string, std::size_t> index_;  // name -> families_ position
    std::size_t invalid_ = 0;
    std::string first_invalid_;
};

}  // namespace mw::meshd
