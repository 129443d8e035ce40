// The relay role as the last meshd knew it: `<stateDir>/relay.role`, so that a relay whose meshd
// restarts serves again at once instead of after a new dial-back (issue 14 §3: relayed pairs
// back within 1 s of a relay's restart). node_core_config::saved_role carries it into the core,
// which decides whether it still applies (relay_role.hpp).
//
// Written by the daemon while the role is `active` and dialled back (on each change, and every
// refresh_ms while serving, so the saved instant is "last known serving"); removed when the
// role is anything else (verifying, refused, none), so a role that failed is never restored.
// Text, one "key value" a line:
//   meshwire-relay-role 1
//   boot <32 hex digits>       boot ID of the save
//   boottime_ms <n>            CLOCK_BOOTTIME at the save
//   unix_ms <n>                the wall clock at the save
//   mode listed|offering
//   advertised <endpoint>      each advertised relay endpoint, in order
//   verified <endpoint>        each one dialled back
// The age at load is counted as the record cache counts it (elapsed_since: CLOCK_BOOTTIME in the
// same boot, else the wall clock, 0 when it went back). Written and removed on the daemon's
// background_writer, off the core's thread. Not fsynced (a small rename, never a disk flush: the
// role is verified again anyway if it is lost): a power loss may leave an older or empty file;
// an unusable file (empty, malformed, another version, oversized) is ignored with a warning
// and replaced at the next write, never fatal. Not authenticated: who can write the state dir
// holds the node's identity seed anyway.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/record_cache.hpp"

namespace mw::meshd {

struct saved_role_file {
    bool listed = false;
    std::vector<wg_endpoint> advertised;
    std::vector<wg_endpoint> verified;
    cache_clock at;
};

class relay_role_file {
public:
    static constexpr const char* file_name = "relay.role";
    static constexpr size_t max_file_size = 4096;
    // While serving, the file's instant is refreshed this often.
    static constexpr uint64_t refresh_ms = 20000;

    explicit relay_role_file(std::string state_dir) : state_dir_(std::move(state_dir)) {}
    std::string path() const { return state_dir_ + "/" + file_name; }

    // Pure.
    static std::string encode(const saved_role_file& r);
    // errc::protocol_error: not such a file, another version, a malformed or missing line.
    static result<saved_role_file> decode(std::string_view text);

    // errc::not_found: no file (none saved, or removed).
    result<saved_role_file> load() const;
    // Written as path().tmp (0600, O_EXCL) and renamed over path().
    status save(const saved_role_file& r) const;
    // No file afterwards (none is fine).
    status remove() const;

private:
    std::string state_dir_;
};

}  // namespace mw::meshd
