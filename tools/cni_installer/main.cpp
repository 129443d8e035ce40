// meshwire-install: the DaemonSet's init container. Installs the meshwire CNI plugin and its
// conflist into the node's CNI directories (mounted from the host), atomically and idempotently.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/guarded_main.hpp"
#include "tools/cni_installer/cni_installer.hpp"

#ifndef MESHWIRE_VERSION
#define MESHWIRE_VERSION "unknown"
#endif

namespace {

const char* const k_help = R"(NAME
    meshwire-install - install the meshwire CNI plugin and conflist on a node

SYNOPSIS
    meshwire-install [--plugin FILE] [--conflist FILE] [--bin-dir DIR] [--conf-dir DIR]
                     [--conf-name NAME]
    meshwire-install --help | --version

DESCRIPTION
    Copies the plugin to BIN-DIR/meshwire (mode 0755) and the conflist to CONF-DIR/NAME (0644),
    each through a temporary file in the same directory renamed over the target, so a runtime
    never sees a half-written file. A target whose bytes and mode already match is not touched
    (running twice changes nothing). The conflist is checked first (JSON object, cniVersion,
    name, plugins with meshwire first); nothing is written when it is wrong. No other file is
    touched, and the directories are only created when missing, never removed.

OPTIONS (environment variable in brackets; the option wins)
    --plugin FILE     the plugin binary [default /usr/bin/meshwire]
    --conflist FILE   the conflist to install [default /etc/meshwire/cni.conflist]
    --bin-dir DIR     the host's CNI binary dir, as mounted [CNI_BIN_DIR; /host/opt/cni/bin]
    --conf-dir DIR    the host's CNI config dir, as mounted [CNI_CONF_DIR; /host/etc/cni/net.d]
    --conf-name NAME  the conflist's file name [CNI_CONF_NAME; 10-meshwire.conflist]

EXIT STATUS
    0 installed or already up to date; 1 I/O failure; 64 usage; 78 invalid conflist or name
)";

std::string env_or(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v && *v ? v : fallback;
}

int run(int argc, char** argv) {
    mw::tools::cni_installer_options o;
    o.plugin_source = "/usr/bin/meshwire";
    o.conflist_source = "/etc/meshwire/cni.conflist";
    o.bin_dir = env_or("CNI_BIN_DIR", "/host/opt/cni/bin");
    o.conf_dir = env_or("CNI_CONF_DIR", "/host/etc/cni/net.d");
    o.conf_name = env_or("CNI_CONF_NAME", "10-meshwire.conflist");
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            std::fputs(k_help, stdout);
            return 0;
        }
        if (a == "-V" || a == "--version") {
            std::printf("meshwire-install %s\n", MESHWIRE_VERSION);
            return 0;
        }
        std::string* target = a == "--plugin"      ? &o.plugin_source
                              : a == "--conflist"  ? &o.conflist_source
                              : a == "--bin-dir"   ? &o.bin_dir
                              : a == "--conf-dir"  ? &o.conf_dir
                              : a == "--conf-name" ? &o.conf_name
                                                   : nullptr;
        if (!target || i + 1 >= argc) {
            std::fprintf(stderr, "meshwire-install: %s %s (see --help)\n", a.c_str(),
                         target ? "needs a value" : "is not an option");
            return 64;
        }
        *target = argv[++i];
    }
    auto done = mw::tools::cni_installer(o).run();
    if (!done) {
        std::fprintf(stderr, "meshwire-install: %s\n", done.err().message.c_str());
        bool config =
            done.err().is(mw::errc::invalid_argument) || done.err().is(mw::errc::parse_error);
        return config ? 78 : 1;
    }
    for (const auto& a : *done)
        std::printf("meshwire-install: %s %s\n", a.changed ? "installed" : "unchanged",
                    a.path.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return mw::guarded_main(
        [&] { return run(argc, argv); },
        [](const char* what) { std::fprintf(stderr, "meshwire-install: %s\n", what); });
}
