// Membership (DESIGN §4, §6): the record store, our own signed record, and the records' flow —
// HELLO (a node registers with us, a rendezvous), RECORDS (answers and pushes), and the one entry
// for records from any discovery source, offer_record(). Also how each node was learned
// (learned_via bits, meshctl's learnedVia).
//
// Every node sends HELLO (its signed record, "send me RECORDS", and the digest of every record it
// holds) to every relay every hello_interval (relay_directory sends them; more often until the
// relay answered once); a relay stores the record and compares the digests (issue 18): equal,
// it answers nothing (a node registering anew: its own record, which tells the node it is
// registered); different, every record it holds, its own included. It pushes a new or changed
// record to every node registered with it at once: that push, not the HELLO, is what spreads a
// change, so at idle a node's HELLOs cost one small datagram per relay per interval whatever
// the number of nodes. A HELLO without a digest (anti-entropy's older peers) gets every record.
// Records are the record_store's: verified, newest seq wins, bounded.
//
// Refreshes (issue 18): a record re-signed with nothing changed but its seq (every half
// lifetime, 6 h by default) is pushed by a relay only to the nodes that take refreshes from it
// (refreshes_via_us: the first relay their record lists), and not passed on to anti-entropy:
// every node receives each refresh once, where a change reaches it from every relay and its
// neighbours (docs/architecture.md "Record refresh").
//
// Admission (issue 17): a relay registers a node it holds no record of (a new identity) only
// within its source address's budget (node_core_config new_ids_*, source_buckets), and the store
// lets no new identity evict an established node (record_store). Refusals are counted
// (core_context::admission) and logged once per (node, reason) per minute.
//
// Couplings, as explicit calls (wired by node_core): on_record_changed for every record that is
// new or changed (relay_directory decides whether it adds, drops or re-addresses a found relay).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "meshd/core/admission.hpp"
#include "meshd/core/core_context.hpp"
#include "meshd/core/record_changes.hpp"
#include "meshd/core/record_digest.hpp"
#include "meshd/core/record_store.hpp"
#include "meshd/core/relay_directory.hpp"
#include "meshd/core/relay_role.hpp"
#include "meshd/core/source_buckets.hpp"

namespace mw::meshd {

class membership {
public:
    using record_changed_fn =
        std::function<void(const peer_record& rec, const std::optional<relay_facts>& before)>;

    membership(core_context& ctx, const relay_role& role, record_store_config store_cfg,
               record_changed_fn on_record_changed);

    // Our record's sequence numbers: seq = boot epoch * 2^30 + the number of records signed
    // before in this run. The boot epoch is persisted and strictly larger on every start
    // (boot_epoch.hpp), so a restarted node's first record is newer than anything it signed
    // before, whatever its wall clock says; within a run the counter only grows. No collision:
    // two runs have different epochs, and the counter cannot reach the next epoch's range (2^30
    // records in one run is 34 years of a re-sign every second; beyond it we stop signing and say
    // so rather than wrap). No overflow: the epoch is seeded from unix seconds, below 2^34 until
    // the year 2514; a larger one (a clock centuries ahead) refuses to sign, logged.
    static constexpr unsigned seq_counter_bits = 30;
    static constexpr uint64_t max_seq_counter = (1ull << seq_counter_bits) - 1;
    static constexpr uint64_t max_seq_epoch = (1ull << (64 - seq_counter_bits)) - 1;

    // Re-signs our record when what it says changed (`attached`: relays and published RTTs, see
    // relay_directory::attachments), when half its lifetime has passed since we signed it (on the
    // core's clock; every receiver counts the lifetime from its own first receipt, so the newer
    // record reaches it before the older runs out), or when forced. Returns true if it did (the
    // new record was pushed to registered nodes; the caller HELLOs the relays).
    bool refresh_self(std::vector<std::pair<node_id, uint16_t>> attached, bool force, uint64_t now);
    void mark_self_dirty() noexcept { self_dirty_ = true; }
    // When our record must be signed again at the latest.
    uint64_t self_refresh_due() const noexcept;
    // Our record's re-signs in this run by reason (meshwire_record_resigns_total).
    const std::array<uint64_t, resign_reason_count>& resigns() const noexcept { return resigns_; }

    // The discovery entry for records: a signed record learned through `via` (RECORDS from a
    // relay, and every later source). Verified and stored (newest seq wins); a new or changed one
    // is pushed on to the nodes registered with us except `from` (who sent it; our own ID for a
    // local source). Errors: record_store::put's, errc::invalid_argument for our own record.
    // `max_remaining_ms`: see record_store::put (the on-disk cache).
    result<put_outcome> offer_record(const peer_record& rec, learned_via via, const node_id& from,
                                     uint64_t now, uint64_t max_remaining_ms = UINT64_MAX);
    void on_hello(const control_message& m, const hello_msg& b, const wg_endpoint& from,
                  uint64_t now);
    // RECORDS from a relay (the caller checked that the sender is one).
    void on_records(const control_message& m, const records_msg& b, learned_via via, uint64_t now);
    // Drops expired records; returns true if any went.
    bool expire(uint64_t now);

    // Relay role: the nodes registered with us and where their HELLOs come from, so a new or
    // changed record reaches every node at once instead of at its next HELLO.
    struct registration {
        wg_endpoint from;
        uint64_t last_hello_ms = 0;
    };
    // Removes the records and registrations of the nodes in cfg.revoked; returns how many
    // records went.
    size_t drop_revoked();
    // Relay role: a node whose registration drop_revoked() removed, and that is admitted again
    // (taken off revokedNodes, listed again): where it registered from and its key, so that we
    // can ask it for its record (HELLO_WANTED) instead of waiting up to hello_interval for its
    // next HELLO. It does not know it was dropped: its datagrams were dropped, not answered.
    struct dropped_registration {
        node_id id;
        wg_key key;
        wg_endpoint from;
    };
    // Removes and returns the dropped registrations whose node ctx_.revoked() admits now.
    std::vector<dropped_registration> take_readmitted();
    // At most this many dropped registrations are remembered (the oldest by node ID go first):
    // a revocation list is short; this bounds a Kubernetes API that unlists everyone.
    static constexpr size_t max_dropped_registrations = 1024;
    const std::map<node_id, registration>& registrations() const noexcept { return registered_; }

    const record_store& store() const noexcept { return store_; }
    const peer_record& self() const noexcept { return self_; }
    // The digest of every (node ID, seq) we hold, our own record included (record_digest.hpp):
    // what HELLO and anti-entropy's AE_DIGEST compare. Recomputed when the store or our record
    // changed since the last call.
    const record_digest& digest();
    // How long a node counts as registered after its last HELLO: pushes go to it meanwhile.
    // Three HELLO intervals, so that two lost HELLOs in a row do not cost its pushes.
    uint64_t registration_ms() const noexcept { return 3 * ctx_.cfg.hello_interval_ms; }
    learned_via_set learned_of(const node_id& id) const;

private:
    // put + the couplings (relay facts, learned_via).
    result<put_outcome> accept(const peer_record& rec, learned_via via, uint64_t now,
                               uint64_t max_remaining_ms = UINT64_MAX);
    // To every node registered with us but `except` and the record's own node; a refresh
    // (record_store's put_outcome::refreshed) only to the nodes that get refreshes from us.
    void push_record(const peer_record& rec, const node_id& except, uint64_t now, bool refresh);
    bool refreshes_via_us(const node_id& to) const;
    // A refused registration: logged once per (node, reason) per interval, else counted.
    void refused(const node_id& who, const std::string& name, const std::string& why,
                 const std::string& reason, uint64_t now);
    // Every record we hold to node `to` at `ep`, answering the HELLO `request_id`.
    void send_records(const node_id& to, const wg_endpoint& ep, uint64_t request_id, uint64_t now);

    // Counts and logs a re-sign of ours (record_changes.hpp): `next` replaces self_.
    void note_resign(const peer_record& next, const record_changes& changes, bool first, bool due,
                     uint64_t now);

    core_context& ctx_;
    const relay_role& role_;
    record_changed_fn on_record_changed_;
    record_store store_;
    peer_record self_;
    uint64_t self_lifetime_ms() const noexcept {
        return std::clamp<uint64_t>(ctx_.cfg.record_lifetime_ms, 1, peer_record::max_lifetime_ms);
    }

    bool self_dirty_ = true;
    uint64_t self_signed_ms_ = 0;
    uint64_t seq_counter_ = 0;  // records signed in this run
    std::array<uint64_t, resign_reason_count> resigns_{};
    log_throttle resign_log_;
    std::map<node_id, registration> registered_;
    std::map<node_id, dropped_registration> dropped_;  // relay: see take_readmitted
    std::map<node_id, learned_via_set> learned_;       // follows the store
    source_buckets new_ids_;                           // relay: new identities per source address
    record_digest digest_;
    uint64_t digest_generation_ = UINT64_MAX, digest_self_seq_ = 0;
};

}  // namespace mw::meshd
