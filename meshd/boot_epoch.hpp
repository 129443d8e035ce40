// The control protocol's boot epoch on disk: `<stateDir>/boot.epoch`, one decimal number.
//
// Every control message carries (epoch, counter) for replay protection (replay_window): the
// counter restarts at 0 on every start, so the epoch must be larger on every start, or a
// receiver that remembers our previous run would refuse our first messages as replays (and an
// attacker could replay the previous run's). next() takes max(stored + 1, unix seconds now),
// writes it durably, and only then may the node send anything. The clock only seeds it: a clock
// that is wrong or went backwards still gives a larger epoch than the last one stored.
//
// The file is 0600, written as a temporary file created with O_EXCL, fsynced, renamed over the
// old one, and the directory fsynced: a crash leaves the old or the new value, never a torn one.
// A file that is not a plain decimal number, a symbolic link or accessible by group or others is
// refused (something other than meshd touched it), with the command that resets it.
#pragma once

#include <cstdint>
#include <string>

#include "common/result.hpp"

namespace mw::meshd {

class boot_epoch {
public:
    static constexpr const char* file_name = "boot.epoch";

    explicit boot_epoch(std::string state_dir) : state_dir_(std::move(state_dir)) {}
    std::string path() const { return state_dir_ + "/" + file_name; }

    // The stored epoch; errc::not_found when there is none yet.
    result<uint64_t> load() const;
    // The epoch for this start (see above), stored before it is returned.
    result<uint64_t> next(uint64_t now_unix_s) const;

private:
    std::string state_dir_;
};

}  // namespace mw::meshd
