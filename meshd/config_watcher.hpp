// Live configuration: the file is read again every 2 s (a mounted ConfigMap changes under us).
// relayNodes, dht.bootstrap and logLevel apply live; every other field is fixed for the process's
// life, and a change there is logged, naming the field, not half-applied.
//
// Which fields changed is derived, not listed by hand: both configurations are printed with
// print_yaml() (the effective configuration, every field, as `meshd --check-config` shows it) and
// compared leaf by leaf. A field added to meshd_config and print_yaml is covered without touching
// this file; the hand-written list this replaces had missed mdns, dht.enable, kubernetes and
// logLevel, whose edits vanished without a log line.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "meshd/meshd_config.hpp"

namespace mw::meshd {

struct config_change {
    // Leaf paths ("mdns.enable", "wireguard.listenPort", "podCIDRs") that differ and need a
    // restart, in print_yaml order.
    std::vector<std::string> restart_only;
    bool relay_nodes = false;    // relayNodes (live)
    bool dht_bootstrap = false;  // dht.bootstrap (live)
    bool log_level = false;      // logLevel (live)
    bool revoked_nodes = false;  // revokedNodes (live)
    bool psk = false;            // psk.path, psk.acceptPaths (live: a key roll)
    bool empty() const {
        return restart_only.empty() && !relay_nodes && !dht_bootstrap && !log_level &&
               !revoked_nodes && !psk;
    }
};

// Pure.
config_change compare_configs(const meshd_config& running, const meshd_config& next);

class config_watcher {
public:
    explicit config_watcher(std::string path) : path_(std::move(path)) {}
    // Remembers the file's current text (read at start) as applied.
    void prime();
    // The file's configuration when its text changed since the last call and it parses; a file
    // that does not parse is logged once per change and the running configuration stays.
    std::optional<meshd_config> poll();
    const std::string& path() const noexcept { return path_; }

private:
    std::string path_;
    std::string text_;  // the file's content last applied (or refused)
};

}  // namespace mw::meshd
