// Built-in IPAM store in the host-local on-disk layout, so operators and tools that know
// host-local can read it:
//   <dataDir>/<network>/<ip>                  "containerID\r\nifname"
//   <dataDir>/<network>/last_reserved_ip.<N>  last address handed out in range N
//   <dataDir>/<network>/lock                  flock()ed for the whole of one plugin invocation
// Every allocation is an O_CREAT|O_EXCL file, so even a store shared with another writer that
// ignores the lock cannot hand one address out twice.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "cni-plugin/net_conf.hpp"
#include "common/ip_address.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace mw::cni {

class ipam_store {
public:
    // Creates the directory if needed and takes the exclusive lock (released on destruction).
    static result<ipam_store> open_locked(const std::string& data_dir, const std::string& network);

    // The addresses held by `who`, in any range.
    result<std::vector<ip_address>> find(const attachment& who) const;
    // One address from `range` (range index `range_id`) for `who`: the one it already holds in
    // that range, else the next free one after last_reserved_ip. errc::exhausted when full.
    // `created` tells whether a new file was written (for rollback).
    result<ip_address> allocate(const ip_prefix& range, int range_id, const attachment& who,
                                bool* created = nullptr);
    status release(const ip_address& ip);
    // Releases everything `who` holds; returns how many.
    result<int> release_all(const attachment& who);
    // Every allocation in the store.
    result<std::vector<std::pair<ip_address, attachment>>> list() const;

    const std::string& dir() const noexcept { return dir_; }

    // Usable host addresses of a range: not the network address, not the gateway (first + 1),
    // not the IPv4 broadcast.
    static std::pair<u128, u128> usable_span(const ip_prefix& range);

private:
    ipam_store(std::string dir, unique_fd lock) : dir_(std::move(dir)), lock_(std::move(lock)) {}
    std::string dir_;
    unique_fd lock_;
};

// STATUS: can the store be created and written?
status check_store_writable(const std::string& data_dir, const std::string& network);

}  // namespace mw::cni
