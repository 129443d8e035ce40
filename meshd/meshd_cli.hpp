// meshd's command line and its startup sequence, kept out of main.cpp so that main stays a few
// lines and the exit-code contract below is testable.
//
// Exit codes (documented in --help; a supervisor can tell them apart):
//   0   --help, --version, or --check-config found the config valid
//   1   runtime failure: state dir, node identity, node.json
//   64  command-line usage error (EX_USAGE)
//   69  startup completed but the data plane is not implemented yet (EX_UNAVAILABLE); meshd
//       does not pretend to run. systemd: RestartPreventExitStatus=64 69 78
//   78  the configuration (or the PSK file it names) is invalid (EX_CONFIG)
#pragma once

#include <cstdio>
#include <string>

#include "common/result.hpp"

namespace mw::meshd {

enum exit_code : int {
    exit_ok = 0,
    exit_failure = 1,
    exit_usage = 64,
    exit_config = 78,
};

struct cli_options {
    enum class mode { run, help, version, check_config };
    mode what = mode::run;
    std::string config_path;
};

// errc::invalid_argument with a one-line reason for anything it does not understand.
result<cli_options> parse_cli(int argc, const char* const* argv);

const char* help_text();
std::string version_text();

// Carries out the options. Normal output (help, version, effective config) goes to out;
// errors and logs go to stderr.
int run_meshd(const cli_options& options, std::FILE* out);

}  // namespace mw::meshd
