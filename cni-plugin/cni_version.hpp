// The CNI spec versions meshwire speaks and what each allows.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace mw::cni {

inline constexpr std::array<std::string_view, 5> k_supported_versions = {"0.3.0", "0.3.1", "0.4.0",
                                                                         "1.0.0", "1.1.0"};
inline constexpr std::string_view k_latest_version = "1.1.0";

bool is_supported_version(std::string_view v);
// Compares dotted versions numerically; malformed parts count as 0.
int compare_versions(std::string_view a, std::string_view b);
inline bool version_at_least(std::string_view v, std::string_view min) {
    return compare_versions(v, min) >= 0;
}

}  // namespace mw::cni
