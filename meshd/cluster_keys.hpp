// The cluster keys a node holds, read from psk.path (the key it seals with) and psk.acceptPaths
// (keys it also opens with during a key roll, issue 14 §2), with everything derived from them:
// the control sealer (psk_sealer, one slot per key) and the record cache's MAC keys. Read at
// start and again at every config poll, so that a roll needs no restart (meshd_runtime).
//
// Only fingerprints (psk_sealer::fingerprint_of) leave this class: they name keys in logs,
// metrics and `meshctl status` without saying anything about them.
#pragma once

#include <string>
#include <vector>

#include "common/result.hpp"
#include "meshd/core/psk_sealer.hpp"
#include "meshd/meshd_config.hpp"
#include "meshd/record_cache.hpp"

namespace mw::meshd {

struct cluster_keys {
    psk_sealer sealer;
    cache_key cache_seal{};                 // MACs the record cache we write
    std::vector<cache_key> cache_accept;    // also accepted when loading it
    std::vector<std::string> fingerprints;  // the sealing key's first, then the accepted ones'
    std::vector<std::string> warnings;      // files accepted with a caveat (group-readable)

    // Reads and checks every file (psk_file: permissions, strength); errors name the field.
    static result<cluster_keys> load(const meshd_config& c);

    // The accepted keys' fingerprints, comma-separated ("-": none), for a log line.
    std::string accepted_list() const;
};

}  // namespace mw::meshd
