#include "meshd/record_cache_wiring.hpp"

#include <chrono>
#include <cstring>

#include "common/log.hpp"
#include "meshd/daemon_clock.hpp"

namespace mw::meshd {

namespace {

// The record cache is checked for changes this often and written (besides at shutdown) at most
// every k_cache_min_interval_ms when the set of nodes changed (a node joined or left: what a
// restart without an uplink must know), and at most every k_cache_refresh_ms when only records
// were re-signed (relays' RTTs change them often; a cached older seq only lives shorter, never
// longer): not on every refresh, and at 16,384 records (a few MB) not every few seconds.
constexpr auto k_cache_poll = std::chrono::seconds(2);
constexpr uint64_t k_cache_min_interval_ms = 5000;
constexpr uint64_t k_cache_refresh_ms = 60'000;

}  // namespace

record_cache_wiring::record_cache_wiring(const std::string& state_dir, const cache_key& mac_key,
                                         std::vector<cache_key> accepted_keys,
                                         boost::asio::io_context& io, const node_id& self,
                                         dataplane_planner& planner,
                                         const std::optional<wg_device>& observed)
    : io_(io),
      timer_(io),
      self_(self),
      planner_(planner),
      observed_(observed),
      state_dir_(state_dir),
      cache_(state_dir, mac_key, record_store_config{}.max_records) {
    cache_.set_accepted_keys(std::move(accepted_keys));
}

void record_cache_wiring::set_keys(const cache_key& seal, std::vector<cache_key> accepted) {
    cache_ = record_cache(state_dir_, seal, record_store_config{}.max_records);
    cache_.set_accepted_keys(std::move(accepted));
    nodes_ = seqs_ = 0;  // rewritten under the new key at the next poll
    written_ms_ = 0;
    if (writer_) {
        writer_->stop();
        writer_ = std::make_unique<record_cache_writer>(cache_, io_);
    }
}

void record_cache_wiring::load(node_core& core) {
    core_ = &core;
    stats_.path = cache_.path();
    auto now = cache_clock::now();
    if (!now) {
        // Without the boot ID nothing can say how much of a lifetime passed: no cache at all
        // rather than one that might extend a record's life.
        stats_.load = "off";
        stats_.load_error = now.err().message;
        log::warn("record cache off: cannot read the clocks", {{"error", now.err().message}});
        return;
    }
    ok_ = true;
    auto got = cache_.load(*now);
    if (!got) {
        if (got.err().is(errc::not_found)) return;  // a first start
        // Unusable: kept aside for a look, and the daemon starts without it.
        stats_.load_error = got.err().message;
        auto aside = cache_.set_aside();
        stats_.load = aside ? "set aside" : "unreadable";
        log::warn("record cache not used; starting without it",
                  {{"path", cache_.path()},
                   {"error", got.err().message},
                   {"kept_as", aside ? *aside : "-"},
                   {"rename_error", aside ? "-" : aside.err().message}});
        return;
    }
    if (got->basis == elapsed_basis::wall_clock_behind) {
        log::warn(
            "record cache: the wall clock is behind the time it was written (another "
            "boot); the downtime counts as 0, records keep at most the lifetime they had "
            "left",
            {{"path", cache_.path()}});
    }
    const uint64_t t = core_ms();
    auto imp = offer_cached(*core_, self_, got->records, t);
    for (const auto& c : got->records) {
        const node_id id = c.record.id();
        if (id == self_ || !core_->store().find(id)) continue;
        // The data plane installs it at once (dataplane_planner::seed): its last direct
        // WireGuard endpoint, else its record's first address at its WireGuard port.
        std::optional<wg_endpoint> ep = c.hint;
        if (ep) {
            hints_[id] = *ep;
        } else if (!c.record.endpoints.empty() && c.record.wg_port) {
            ep = wg_endpoint{c.record.endpoints.front().address, c.record.wg_port};
        }
        planner_.seed(id, ep);
    }
    for (const auto& r : imp.refusals) {
        log::info("cached record refused", {{"record", r}});
    }
    // The peers now, not at the first timer: the first data-plane plan then has them, and a
    // kernel device kept across the restart does not lose them for a moment.
    if (imp.offered > 0) core_->tick(t);
    stats_.load = "loaded";
    stats_.loaded = imp.offered;
    stats_.expired = got->expired;
    stats_.refused = imp.refused;
    stats_.elapsed_ms = got->elapsed_ms;
    stats_.basis = got->basis;
    nodes_ = digest(false);
    seqs_ = digest(true);
    log::info("record cache loaded", {{"path", cache_.path()},
                                      {"records", std::to_string(imp.offered)},
                                      {"expired", std::to_string(got->expired)},
                                      {"refused", std::to_string(imp.refused)},
                                      {"elapsed_ms", std::to_string(got->elapsed_ms)},
                                      {"clock", to_string(got->basis)}});
}

uint64_t record_cache_wiring::digest(bool with_seqs) const {
    // What the file holds depends on (node, seq) only: a record's expiry is fixed at its first
    // receipt, so the same set written again would say the same.
    uint64_t h = 1469598103934665603ull;
    auto mix = [&](uint64_t v) {
        h ^= v;
        h *= 1099511628211ull;
    };
    core_->store().for_each_with_id([&](const node_id& id, const peer_record& r) {
        uint64_t head = 0;
        std::memcpy(&head, id.data(), sizeof head);
        mix(head);
        if (with_seqs) mix(r.seq);
    });
    mix(core_->store().size());
    return h;
}

std::vector<cached_record> record_cache_wiring::entries() {
    std::vector<cached_record> out;
    const uint64_t now = core_ms();
    // The endpoint each peer is reached at directly now (else the one remembered).
    for (const auto& v : core_->peers()) {
        if (v.path == path_kind::direct && v.endpoint && !v.learned) {
            hints_[v.id] = *v.endpoint;
        } else if (const wg_peer* w = observed_ ? observed_->find_peer(v.wg_public_key) : nullptr;
                   w && w->endpoint && v.path == path_kind::direct) {
            hints_[v.id] = *w->endpoint;  // learned by WireGuard
        }
    }
    std::erase_if(hints_, [&](const auto& kv) { return !core_->store().find(kv.first); });
    out.reserve(core_->store().size());
    core_->store().for_each_with_id([&](const node_id& id, const peer_record& r) {
        auto exp = core_->store().expires_at(id);
        if (!exp || *exp <= now) return;
        cached_record c{r, *exp - now, std::nullopt};
        if (auto h = hints_.find(id); h != hints_.end()) c.hint = h->second;
        out.push_back(std::move(c));
    });
    return out;
}

void record_cache_wiring::poll() {
    if (stopped_) return;
    const uint64_t nodes = digest(false), seqs = digest(true);
    const uint64_t now = steady_ms();
    const bool due = (nodes != nodes_ && now >= written_ms_ + k_cache_min_interval_ms) ||
                     (seqs != seqs_ && now >= written_ms_ + k_cache_refresh_ms);
    if (due) {
        auto at = cache_clock::now();
        if (at) {
            nodes_ = nodes;
            seqs_ = seqs;
            written_ms_ = now;
            auto batch = entries();
            const size_t n = batch.size();
            const uint64_t wall = at->unix_ms;
            writer_->write(std::move(batch), *at, [this, n, wall](const status& st) {
                if (!st) {
                    ++stats_.write_failures;
                    nodes_ = seqs_ = 0;  // again at the next poll after the interval
                    log::warn("cannot write the record cache",
                              {{"path", cache_.path()}, {"error", st.err().message}});
                    return;
                }
                ++stats_.writes;
                stats_.records_written = n;
                stats_.last_write_unix_ms = wall;
                log::debug("record cache written",
                           {{"path", cache_.path()}, {"records", std::to_string(n)}});
            });
        }
    }
    timer_.expires_after(k_cache_poll);
    timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) poll();
    });
}

void record_cache_wiring::start_writing() {
    if (!ok_) return;
    writer_ = std::make_unique<record_cache_writer>(cache_, io_);
    written_ms_ = steady_ms();
    poll();
}

void record_cache_wiring::stop() {
    stopped_ = true;
    timer_.cancel();
    if (!writer_) return;
    // The last state, written here on our thread: nothing else runs any more. A write in
    // progress finishes first (a waiting one is replaced by this).
    writer_->stop();
    writer_.reset();
    auto all = entries();
    if (auto at = cache_clock::now()) {
        if (auto st = cache_.save(all, *at); !st) {
            log::warn("cannot write the record cache",
                      {{"path", cache_.path()}, {"error", st.err().message}});
        } else {
            log::info("record cache written",
                      {{"path", cache_.path()}, {"records", std::to_string(all.size())}});
        }
    }
}

}  // namespace mw::meshd
