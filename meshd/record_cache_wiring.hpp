// The on-disk record cache in the daemon (record_cache.hpp; docs/architecture.md "Record
// cache"): loaded once at start into the core (and the data plane's seeds, so the peers are
// installed at once), written by record_cache_writer (its own thread) when the store changed,
// debounced, and at shutdown on the core's thread. Its own file so that meshd_runtime.cpp's
// daemon only wires the parts together.
#pragma once

#include <boost/asio.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/wireguard/wg_device.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd/dataplane_planner.hpp"
#include "meshd/record_cache.hpp"
#include "meshd/record_cache_writer.hpp"

namespace mw::meshd {

class record_cache_wiring {
public:
    // `<state_dir>/records.cache`, MACed with `mac_key`. Everything runs on `io`'s thread (the
    // core's). `planner` (seeds) and `observed` (the daemon's last WireGuard device read: the
    // endpoints WireGuard learned) must outlive this.
    record_cache_wiring(const std::string& state_dir, const cache_key& mac_key,
                        std::vector<cache_key> accepted_keys, boost::asio::io_context& io,
                        const node_id& self, dataplane_planner& planner,
                        const std::optional<wg_device>& observed);

    // At start, after node_core::start: the file's records offered to `core` (kept for the
    // writes). An unusable file is set aside; without the clocks there is no cache at all.
    void load(node_core& core);
    // After load: writes when the store changes (checked every 2 s), if load could read the
    // clocks.
    void start_writing();
    // At shutdown: no more polls; the last state written here, on the core's thread (a write
    // in progress finishes first).
    void stop();

    // A key roll: the file is MAC'd under `seal` from the next write on (written at the next
    // poll), and a file under one of `accepted` still loads. The writer thread is restarted
    // with the new keys (it finishes a write in progress first).
    void set_keys(const cache_key& seal, std::vector<cache_key> accepted);

    const record_cache_stats& stats() const noexcept { return stats_; }

private:
    void poll();
    std::vector<cached_record> entries();
    // Of the store's node IDs (`with_seqs` false) or (node ID, seq) pairs.
    uint64_t digest(bool with_seqs) const;

    boost::asio::io_context& io_;
    boost::asio::steady_timer timer_;
    node_id self_;
    dataplane_planner& planner_;
    const std::optional<wg_device>& observed_;
    node_core* core_ = nullptr;  // load()'s
    bool stopped_ = false;

    std::string state_dir_;
    record_cache cache_;
    std::unique_ptr<record_cache_writer> writer_;
    record_cache_stats stats_;
    uint64_t nodes_ = 0, seqs_ = 0;         // digest() as last written (or loaded)
    uint64_t written_ms_ = 0;               // steady ms of the last write handed to the writer
    bool ok_ = false;                       // the boot ID and clocks could be read
    std::map<node_id, wg_endpoint> hints_;  // last direct WireGuard endpoint per peer
};

}  // namespace mw::meshd
