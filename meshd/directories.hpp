// Creating meshd's directories (stateDir, runDir) on first start.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <span>
#include <string>

#include "common/result.hpp"

namespace mw::meshd {

// mkdir -p: missing parents are created 0755, the last component with final_mode (e.g. 0700 for
// the state dir, which holds the identity seed). An existing directory is left as it is: its mode
// is the operator's choice, and the secrets inside carry their own 0600.
status make_directories(const std::string& path, mode_t final_mode);

// A directory that holds secrets (the state dir): it must exist, be a directory (a symbolic link
// to one is followed: the operator may keep state on another disk), be owned by this process's
// effective uid and not be accessible by group or others. `what` names it in the error (e.g.
// "stateDir"); errc::not_found when it does not exist. Checked, not repaired: a wider mode or
// another owner means someone else could have read or replaced what is inside.
status check_private_directory(const std::string& path, const std::string& what);

// fsync of a directory, so that a rename or link into it survives a crash.
status sync_directory(const std::string& dir);

// Replaces file `path` in directory `dir` (made 0700 if missing) with `bytes`, mode 0600,
// atomically: written to `path`.tmp, fsynced, renamed over `path`, and `dir` fsynced. A crash
// leaves the old file or the new one, never a mix. The temporary is created with O_EXCL and
// O_NOFOLLOW after removing a leftover one (a crash between create and rename), so it is never
// written through a link planted by someone else.
status replace_file(const std::string& dir, const std::string& path,
                    std::span<const uint8_t> bytes);

}  // namespace mw::meshd
