// meshctl's command line: options, the --help text, and run(), which talks to meshd and prints.
// main.cpp only dispatches, so all of this is unit-tested.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace mw::meshctl {

inline constexpr int exit_ok = 0;
inline constexpr int exit_failed = 1;       // meshd answered with an error; ping got no reply
inline constexpr int exit_unreachable = 2;  // cannot connect, no answer in time, garbled answer
inline constexpr int exit_usage = 64;

inline constexpr const char* default_socket = "/run/meshwire/meshd.sock";

struct options {
    std::string socket = default_socket;
    bool json = false;
    double timeout_seconds = 0;  // 0: the default (see timeout())
    std::string command;         // status | peers | relays | ping
    std::string node;            // ping's target
    int count = 3;               // ping's probes
    bool help = false;
    bool version = false;
};

// Parses argv[1..]. Options may come before or after the command. `env_socket` is
// $MESHCTL_SOCKET (nullptr or empty: unset); --socket wins over it. Usage errors are
// errc::invalid_argument with a message for "meshctl: <message>".
result<options> parse_args(const std::vector<std::string>& args, const char* env_socket);

// How long to wait for meshd: --timeout, else 5 s, and for ping 5 s plus 1 s per probe.
std::chrono::milliseconds timeout(const options& o);

const char* help_text();

// Performs the command and returns the exit status. Results go to `out`, diagnostics to `err`.
int run(const options& o, std::FILE* out, std::FILE* err);

}  // namespace mw::meshctl
