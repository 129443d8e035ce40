// meshctl: the operator's CLI for meshd. Everything but argument dispatch lives in
// meshctl_cli.cpp (options, help, run) and meshctl_format.cpp (requests, output).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "meshctl/meshctl_cli.hpp"

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    auto opts = mw::meshctl::parse_args(args, std::getenv("MESHCTL_SOCKET"));
    if (!opts) {
        std::fprintf(stderr, "meshctl: %s\nTry 'meshctl --help'.\n", opts.err().message.c_str());
        return mw::meshctl::exit_usage;
    }
    return mw::meshctl::run(*opts, stdout, stderr);
}
