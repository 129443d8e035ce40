// The on-disk record cache: `<stateDir>/records.cache` holds every verified peer record the node
// held, with what was left of its lifetime, so that a node restarted with no uplink (relays, the
// Kubernetes API unreachable) still knows the cluster: its WireGuard peers and pod routes for the
// remote nodes come back at once (issue 10 §3). At start the records are offered to the core
// through the discovery entry (learned_via::cache), which verifies each again.
//
// Lifetime: a record lives for its signed lifetime counted from this node's first receipt
// (record_store.hpp); the cache never extends that. Each entry stores the record's remaining
// lifetime at the save instant, and the file the save instant on two clocks: the boot ID
// (/proc/sys/kernel/random/boot_id) with CLOCK_BOOTTIME, and the wall clock. At load the time
// since the save is
//   - same boot: the CLOCK_BOOTTIME difference (exact; it counts suspend and never steps);
//   - another boot: the wall-clock difference. A wall clock that is behind the save instant
//     (no RTC, NTP not synced yet, set back by hand) says nothing about how long we were down:
//     the time passed counts as 0, so the records keep at most the life they had at the save,
//     never more (a negative difference is never added), and load() reports it
//     (elapsed_basis::wall_clock_behind) for a warning;
// and each record gets remaining - elapsed (gone when that is <= 0), never more than its signed
// lifetime.
//
// Trust: the records are signed by their nodes, and the core verifies every one again
// (signature and key binding, revokedNodes as configured now, our own record refused). The file
// as a whole carries a keyed BLAKE2b-256 MAC under a key derived from the cluster PSK: a file
// written for another cluster (PSK changed), truncated or altered is refused as a whole, and so
// are the remaining lifetimes and hints, which no node signed.
//
// Format (big-endian), version 1:
//   4    magic "MWRC"
//   u16  version (1)
//   16   boot ID of the save
//   u64  CLOCK_BOOTTIME at the save, ms
//   u64  wall clock at the save, unix ms
//   u32  entry count (<= max_records)
//   each entry:
//     u32  remaining lifetime at the save, ms (<= the record's lifetime)
//     u8   hint family (0: none, 4, 6), 4|16 address bytes, u16 port: the WireGuard endpoint the
//          peer was last reached at directly (dataplane: installed with it at start)
//     u16  record length, the record (peer_record::encode())
//   32   MAC: BLAKE2b-256 keyed with cache_key over every byte above
//
// Files: written as `records.cache.tmp` (0600, O_EXCL), fsynced, renamed over the old one, the
// directory fsynced: a crash leaves the old or the new file. Size bounded: at most max_records
// entries (the record store's bound), so the file is at most max_file_size() bytes; a larger
// file is not read. A file that cannot be used (corrupt, truncated, oversized, another version,
// the MAC fails, unreadable) is renamed to `records.cache.corrupt` by set_aside() and the daemon
// starts without it (a warning says why).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/discovery_sink.hpp"
#include "meshd/core/peer_record.hpp"

namespace mw::meshd {

using cache_key = std::array<uint8_t, 32>;
using boot_id = std::array<uint8_t, 16>;

// One instant on the two clocks the cache compares.
struct cache_clock {
    boot_id boot{};
    uint64_t boottime_ms = 0;  // CLOCK_BOOTTIME
    uint64_t unix_ms = 0;      // the wall clock
    // Reads /proc/sys/kernel/random/boot_id and both clocks.
    static result<cache_clock> now();
};

// Parses the kernel's boot ID ("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\n").
result<boot_id> parse_boot_id(std::string_view text);

struct cached_record {
    peer_record record;
    // Left of its lifetime: at the save (what save() writes), or at the load instant (load()).
    uint64_t remaining_ms = 0;
    // The WireGuard endpoint the peer was last reached at directly, if any.
    std::optional<wg_endpoint> hint;
};

enum class elapsed_basis : uint8_t {
    boot_clock,         // same boot: CLOCK_BOOTTIME
    wall_clock,         // another boot: the wall clock, which moved forward
    wall_clock_behind,  // another boot, the wall clock behind the save: counted as 0
};
const char* to_string(elapsed_basis b) noexcept;

struct cache_contents {
    std::vector<cached_record> records;  // still alive at the load instant
    size_t expired = 0;                  // entries whose remaining lifetime had run out
    uint64_t elapsed_ms = 0;             // since the save, as counted (see the header)
    elapsed_basis basis = elapsed_basis::boot_clock;
};

// The time since `saved`, as the header says (pure; unit-tested).
uint64_t elapsed_since(const cache_clock& saved, const cache_clock& now, elapsed_basis* basis);

class record_cache {
public:
    static constexpr uint16_t version = 1;
    static constexpr const char* file_name = "records.cache";
    static constexpr size_t header_size = 4 + 2 + 16 + 8 + 8 + 4;
    static constexpr size_t mac_size = 32;
    static constexpr size_t max_entry_size = 4 + 1 + 16 + 2 + 2 + peer_record::max_encoded_size;

    record_cache(std::string state_dir, const cache_key& key, size_t max_records)
        : state_dir_(std::move(state_dir)), key_(key), max_records_(max_records) {}

    // The MAC key for a cluster PSK (a keyed BLAKE2b with its own label: not a key anything
    // else uses).
    static cache_key key_from_psk(std::span<const uint8_t> psk);

    // Keys a file may also be MAC'd with (psk.acceptPaths during a key roll): decode() tries
    // them after the sealing key's; encode() always uses the sealing key's.
    void set_accepted_keys(std::vector<cache_key> keys) { accepted_ = std::move(keys); }

    std::string path() const { return state_dir_ + "/" + file_name; }
    size_t max_records() const noexcept { return max_records_; }
    size_t max_file_size() const noexcept {
        return header_size + max_records_ * max_entry_size + mac_size;
    }

    // The file's bytes (at most max_records entries: the first ones are kept). Pure.
    std::vector<uint8_t> encode(const std::vector<cached_record>& records,
                                const cache_clock& at) const;
    // Errors: errc::protocol_error (not a cache file, another version, truncated, trailing
    // bytes, a malformed entry, more than max_records entries, the MAC fails). Pure.
    result<cache_contents> decode(std::span<const uint8_t> bytes, const cache_clock& now) const;

    // Atomic write (see the header). Blocking: not on the core's thread (record_cache_writer).
    status save(const std::vector<cached_record>& records, const cache_clock& at) const;
    // Reads and decodes the file. errc::not_found: there is none (a first start). Other errors:
    // decode()'s, errc::exhausted (larger than max_file_size()), and I/O errors.
    result<cache_contents> load(const cache_clock& now) const;
    // Moves an unusable file out of the way (`records.cache.corrupt`, replacing an older one);
    // returns the new path.
    result<std::string> set_aside() const;

private:
    cache_key mac(std::span<const uint8_t> bytes) const;
    static cache_key mac_with(const cache_key& key, std::span<const uint8_t> bytes);

    std::string state_dir_;
    cache_key key_;
    std::vector<cache_key> accepted_;
    size_t max_records_;
};

// For meshctl status and the metrics (node_snapshot).
struct record_cache_stats {
    std::string path;
    // At start: "loaded", "none" (no file yet), "set aside" (unusable: moved to .corrupt),
    // "unreadable" (could not be read or moved; left where it is), "off" (no clock to count
    // lifetimes with).
    std::string load = "none";
    std::string load_error;                       // why, for "set aside" and "unreadable"
    size_t loaded = 0, expired = 0, refused = 0;  // records offered / run out / refused
    uint64_t elapsed_ms = 0;                      // since the save, as counted
    elapsed_basis basis = elapsed_basis::boot_clock;
    // Writes since start.
    uint64_t writes = 0, write_failures = 0;
    size_t records_written = 0;  // in the last write
    uint64_t last_write_unix_ms = 0;
};

// What offer_cached() did with a load's records.
struct cache_import {
    size_t offered = 0;  // accepted by the core (new, or newer than what it held)
    size_t own = 0;      // our own record: never a peer
    size_t refused = 0;  // refused by the core: bad signature, revoked, store full, ...
    std::vector<std::string> refusals;  // "name: why", for the log (at most 16)
};

// Offers each record to the core through the discovery entry (learned_via::cache) with its
// remaining lifetime, so the core verifies it again and expires it no later than it would
// have without the restart. Our own record (`self`) is skipped.
cache_import offer_cached(discovery_sink& core, const node_id& self,
                          const std::vector<cached_record>& records, uint64_t now_ms);

}  // namespace mw::meshd
