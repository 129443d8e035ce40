// The node's identity on disk: `<stateDir>/node.seed`, the 32 raw bytes of the seed that
// node_identity derives both the Ed25519 signing key and the WireGuard key from (see
// meshd/core/node_identity.hpp). Created once from the OS CSPRNG, mode 0600; afterwards only read,
// so the node ID and WireGuard public key survive restarts and reinstalls of the binary.
//
// Refuses (rather than repairs) a seed file of the wrong size, one that group or others can
// access or another user owns, and a stateDir that group or others can access or another user
// owns (check_private_directory): all mean something other than meshd could have read or
// replaced the key, and silently replacing an identity would change the node ID under the whole
// cluster. The seed is written to a temp file of a random name created with O_EXCL|O_NOFOLLOW
// (never a file someone planted), 0600, fsynced, linked into place, the directory fsynced. The
// seed never appears in a log or message.
#pragma once

#include <string>

#include "common/result.hpp"
#include "meshd/core/node_identity.hpp"

namespace mw::meshd {

struct stored_identity {
    node_identity identity;
    std::string path;
    bool created = false;  // true when this call generated the seed
};

class identity_store {
public:
    static constexpr const char* file_name = "node.seed";
    static constexpr size_t seed_size = 32;

    explicit identity_store(std::string state_dir) : state_dir_(std::move(state_dir)) {}

    std::string path() const { return state_dir_ + "/" + file_name; }

    // Reads the seed; errc::not_found (from ENOENT) when there is none yet.
    result<stored_identity> load() const;
    // load(), or on first start: create stateDir (0700), generate a seed and store it. Two
    // processes racing on an empty stateDir end up with the same identity (link(), not rename()).
    result<stored_identity> load_or_create() const;

private:
    std::string state_dir_;
};

}  // namespace mw::meshd
