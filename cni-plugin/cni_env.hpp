// The CNI_* environment a runtime passes to the plugin, parsed and validated per command.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cni-plugin/cni_error.hpp"

namespace mw::cni {

enum class command { add, del, check, version, status, gc };

struct cni_env {
    command cmd = command::version;
    std::string container_id;
    std::string netns;  // may be empty for DEL / GC / STATUS
    std::string ifname;
    std::vector<std::string> path;            // CNI_PATH split on ':'
    std::map<std::string, std::string> args;  // CNI_ARGS "K=V;K=V"
};

// getenv-like lookup, injectable for tests.
using env_lookup = std::function<std::optional<std::string>(const char*)>;
env_lookup process_env();

// Reads and validates the variables the command needs. Errors carry code 4 (invalid_env).
struct env_result {
    std::optional<cni_env> env;
    cni_error err;
};
env_result parse_env(const env_lookup& get);

// Spec rules: container ID is [A-Za-z0-9][A-Za-z0-9_.-]*; ifname is 1–15 bytes, not "." or "..",
// without '/', ':' or whitespace.
bool valid_container_id(const std::string& id);
bool valid_ifname(const std::string& name);

}  // namespace mw::cni
