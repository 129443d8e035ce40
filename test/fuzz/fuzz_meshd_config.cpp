// libFuzzer target: meshd's YAML config parser. Properties: never crashes or throws out of
// parse_meshd_config, and an accepted config printed by print_yaml parses back to the same print
// (the effective config shown by --check-config is itself a valid config).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "meshd/meshd_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size > 64 * 1024) return 0;
    mw::meshd::config_environment env;
    env.hostname = "fuzz-host";
    auto c = mw::meshd::parse_meshd_config(
        std::string_view(reinterpret_cast<const char*>(data), size), env);
    if (!c) return 0;
    std::string printed = mw::meshd::print_yaml(*c);
    auto again = mw::meshd::parse_meshd_config(printed, env);
    if (!again || mw::meshd::print_yaml(*again) != printed) std::abort();
    return 0;
}
