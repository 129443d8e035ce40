#include "cni-plugin/cni_version.hpp"

#include <algorithm>
#include <charconv>

namespace mw::cni {

bool is_supported_version(std::string_view v) {
    return std::find(k_supported_versions.begin(), k_supported_versions.end(), v) !=
           k_supported_versions.end();
}

int compare_versions(std::string_view a, std::string_view b) {
    auto next = [](std::string_view& s) {
        auto dot = s.find('.');
        std::string_view part = s.substr(0, dot);
        s = dot == std::string_view::npos ? std::string_view{} : s.substr(dot + 1);
        int v = 0;
        std::from_chars(part.data(), part.data() + part.size(), v);
        return v;
    };
    for (int i = 0; i < 3; ++i) {
        int x = next(a), y = next(b);
        if (x != y) return x < y ? -1 : 1;
    }
    return 0;
}

}  // namespace mw::cni
