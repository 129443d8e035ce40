// Delegated IPAM (CNI convention): run the plugin named by ipam.type from CNI_PATH with the same
// environment (CNI_COMMAND overridden) and the same network configuration on stdin.
#pragma once

#include <string>
#include <vector>

#include "cni-plugin/cni_result.hpp"
#include "common/result.hpp"

namespace mw::cni {

struct delegate_outcome {
    int exit_code = 0;
    std::string out;      // the plugin's stdout
    int cni_code = 0;     // its CNI error code when it failed with an error JSON
    std::string cni_msg;  // its error message
};

// Locates `type` in the CNI_PATH directories (errc::not_found naming the directories searched).
result<std::string> find_plugin(const std::string& type, const std::vector<std::string>& cni_path);

// Runs the plugin; a non-zero exit is returned in delegate_outcome, not as an error. Errors are for
// failures to run it at all.
result<delegate_outcome> run_plugin(const std::string& binary, const std::string& command,
                                    const std::string& stdin_conf);

// ADD through the delegate; the delegate's failure becomes an error with its message.
result<cni_result> delegate_add(const std::string& type, const std::vector<std::string>& cni_path,
                                const std::string& conf);
// DEL / CHECK / GC / STATUS through the delegate.
status delegate_simple(const std::string& type, const std::vector<std::string>& cni_path,
                       const std::string& command, const std::string& conf);

}  // namespace mw::cni
