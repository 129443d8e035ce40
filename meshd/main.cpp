// meshd: the meshwire node daemon. Everything but argument dispatch lives in meshd_cli.cpp.
#include <cstdio>

#include "meshd/meshd_cli.hpp"

int main(int argc, char** argv) {
    auto opts = mw::meshd::parse_cli(argc, argv);
    if (!opts) {
        std::fprintf(stderr, "meshd: %s\nTry 'meshd --help'.\n", opts.err().message.c_str());
        return mw::meshd::exit_usage;
    }
    return mw::meshd::run_meshd(*opts, stdout);
}
