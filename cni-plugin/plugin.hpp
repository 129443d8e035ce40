// The meshwire CNI plugin: one invocation = env + stdin in, exit code + stdout out. Kept free of
// process globals so tests can drive it in-process; main.cpp only does the I/O.
#pragma once

#include <string>

#include "cni-plugin/cni_env.hpp"

namespace mw::cni {

struct invocation_output {
    int exit_code = 0;
    std::string stdout_text;  // the result or the error JSON; empty for DEL/STATUS/GC success
};

invocation_output run_invocation(const env_lookup& env, const std::string& stdin_raw);

}  // namespace mw::cni
