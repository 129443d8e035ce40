// Anti-entropy between nodes that reach each other directly (issue 10 §3): a LAN island keeps one
// membership without relays, and the steady-state cost per neighbour per round is two small
// datagrams, whatever the number of records.
//
// Neighbours: the nodes we reach directly (a direct path with a recent PONG, or a rendezvous
// address that answers), except relays we register with (they answer HELLO with every record
// and push changes to us, relay_directory/membership). node_core collects them; at most
// max_neighbours, a sample by a hash of the node ID keyed with a salt of our own beyond that.
//
// A round, per neighbour B, every interval (phases spread at random; a round B started with us
// counts as ours, so one exchange per pair per round). At idle the digests match round after
// round: each match doubles the pair's interval, up to max_interval_ms (issue 18: the rounds
// are a node's largest idle cost on a LAN otherwise, one datagram each way per neighbour per
// interval). A round that differs, and a new neighbour, start again from interval_ms. A change
// does not need the rounds to spread (the pushes below carry it); a lost push is found by the
// next round of any neighbour that has the change, within max_interval_ms:
//   A -> B  AE_DIGEST  count + digest (record_digest) of every (node ID, seq) A holds, its own
//                      record included; with A's cookie for B's address.
//   B -> A  AE_DIGEST  reply: B's count + digest. Equal: done. Different: B adds its 32 bucket
//                      digests — only if A's cookie proves A's address (else a COOKIE_REPLY,
//                      and A asks again at once): that reply is larger than the request.
//   A -> B  AE_SUMMARY A's (node ID, seq) entries of the buckets that differ, paged (a page
//                      covers a node ID range and says everything A holds in it).
//   B -> A  RECORDS    per page, what A lacks or holds older; and
//   B -> A  AE_WANT    the node IDs of what B lacks or holds older (not revoked, not below a
//                      tombstone of B's), which A answers with RECORDS.
// A sends only to the address it chose (B's neighbour endpoint) and B only to the address its
// cookie proved: nobody answers a spoofed source with more than it sent (issue 17). SUMMARY and
// WANT count only within the exchange they name (request id, node, address, exchange_ttl_ms);
// anything else is counted as unsolicited and dropped.
//
// Changes spread faster than a round: a record that is new or changed here (from any source,
// our own re-signs included) is pushed (RECORDS) to push_fanout random neighbours, not back to
// the node it came from; each of them pushes it on only if it was new there too (a duplicate
// stops), so a change reaches the island in O(log N) hops with about fanout x N datagrams, and
// the next round catches whatever a lost push missed.
//
// RECORDS are accepted from a neighbour or a node we exchanged with within two intervals;
// every record is verified against its own node's key and goes through the record store's
// rules (newest seq wins, tombstones, admission of new identities), learned_via::neighbour.
//
// Bounds: state for at most max_partners nodes (neighbours and nodes that started exchanges
// with us), pending pushes at most max_pending_pushes; per partner and round at most
// max_records_out records sent, max_records_in accepted and max_pages summary pages sent or
// accepted. What is over a budget is counted and dropped; the next round goes on from there.
//
// Pure like the rest of the core: events and `now` in, datagrams (through core_context) and
// deadlines (core_context::due) out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "meshd/core/core_context.hpp"
#include "meshd/core/membership.hpp"
#include "meshd/core/record_digest.hpp"

namespace mw::meshd {

struct anti_entropy_config {
    uint64_t interval_ms = 10'000;
    uint64_t max_interval_ms = 640'000;  // a pair's interval after matched rounds, at most
    size_t max_neighbours = 64;
    size_t max_partners = 256;
    size_t push_fanout = 3;
    size_t max_pending_pushes = 1024;
    size_t max_records_out = 512;
    size_t max_records_in = 1024;
    size_t max_pages = 64;
    uint64_t exchange_ttl_ms = 5'000;
    // A new neighbour's first round starts within this (then every interval).
    uint64_t first_round_ms = 1'000;
    uint64_t hello_grace_ms = 7'000;
};

struct anti_entropy_counters {
    uint64_t digests_sent = 0, digests_received = 0, digests_matched = 0;
    uint64_t summaries_sent = 0, summaries_received = 0;  // pages
    uint64_t wants_sent = 0, wants_received = 0;
    uint64_t records_sent = 0;      // pushes and answers
    uint64_t records_accepted = 0;  // new or newer, stored
    uint64_t unsolicited = 0;  // SUMMARY/WANT/reply outside an exchange, RECORDS from a stranger
    uint64_t over_budget = 0;  // pages or records over a partner's budget for the round
};

class anti_entropy {
public:
    struct neighbour {
        node_id id;
        wg_endpoint ep;
    };
    // Proves a request's source address by its cookie, or answers COOKIE_REPLY and returns false
    // (node_core::source_proven).
    using prove_fn = std::function<bool(const control_message&, uint64_t request_id,
                                        const cookie_bytes&, const wg_endpoint&, uint64_t now)>;

    anti_entropy(core_context& ctx, membership& members, anti_entropy_config cfg, prove_fn prove);

    // The neighbours now (the whole list; one not in it is a neighbour no more).
    void set_neighbours(const std::vector<neighbour>& nbrs, uint64_t now);
    // Rounds due, pending pushes. Asks core_context for its next deadline.
    void tick(uint64_t now);
    // A record that is new or changed here, told by `from` (zero: a local source; our own ID:
    // our own record): pushed on at the next tick.
    void note_changed(const node_id& id, const node_id& from);

    void on_digest(const control_message& m, const ae_digest_msg& b, const wg_endpoint& from,
                   uint64_t now);
    void on_summary(const control_message& m, const ae_summary_msg& b, const wg_endpoint& from,
                    uint64_t now);
    void on_want(const control_message& m, const ae_want_msg& b, const wg_endpoint& from,
                 uint64_t now);
    // RECORDS from a node that is not a relay of ours; false if it is no partner (dropped).
    bool on_records(const control_message& m, const records_msg& b, uint64_t now);
    // A COOKIE_REPLY to one of our DIGESTs: ask again now, with the cookie.
    void on_cookie(const node_id& sender, uint64_t now);

    // Whether the node answered us in this protocol.
    bool speaks(const node_id& id) const;
    // An mDNS rendezvous that is no relay, about to be asked for every record with HELLO
    // (relay_directory): not if it speaks anti-entropy, nor while our first rounds may still
    // show that it does (hello_grace_ms from the first time we are asked); a node of an older
    // version, which drops our DIGESTs, gets HELLO as before.
    bool defer_hello(const node_id& id, uint64_t now);
    size_t neighbours() const noexcept { return neighbour_count_; }
    const anti_entropy_counters& counters() const noexcept { return counters_; }
    // The digest of what we hold now (our own record included): membership's.
    const record_digest& current() { return members_.digest(); }

private:
    struct partner {
        wg_endpoint ep;  // its neighbour endpoint (where our rounds go)
        bool neighbour = false;
        bool speaks = false;
        uint64_t hello_grace_until = 0;
        uint64_t rank = 0;
        uint64_t next_round_ms = 0;
        unsigned matched = 0;  // rounds in a row whose digests matched (the interval doubles)
        uint64_t last_exchange_ms = 0;
        // Our round with it: our DIGEST's request id and where it went.
        uint64_t out_req = 0, out_ms = 0;
        wg_endpoint out_ep;
        // Its round with us, once we sent bucket digests (it may send SUMMARY pages).
        uint64_t in_req = 0, in_ms = 0;
        wg_endpoint in_ep;
        // Budgets, per interval.
        uint64_t window_ms = 0;
        size_t records_out = 0, records_in = 0, pages_out = 0, pages_in = 0;
    };
    partner* find(const node_id& id);
    // The partner's state, made if there is room (a neighbour may take a stranger's place).
    partner* track(const node_id& id, uint64_t now);
    void open_window(partner& p, uint64_t now);
    // The pair's interval now: interval_ms doubled per matched round, up to max_interval_ms.
    uint64_t round_interval(const partner& p) const;
    // A round with the partner ended, with digests equal or not.
    void note_round(partner& p, bool equal);
    void start_round(const node_id& id, partner& p, uint64_t now);
    void send_summary(const node_id& id, partner& p, const std::vector<uint64_t>& theirs,
                      uint64_t now);
    // Our (node ID, seq) entries in [first, last], our own record included, in ID order.
    std::vector<ae_summary_entry> entries_in(const node_id& first, const node_id& last) const;
    const peer_record* record_of(const node_id& id) const;
    // Packs records into RECORDS datagrams to `to` at `ep`, within the partner's budget.
    void send_records(const node_id& to, partner& p, const wg_endpoint& ep,
                      const std::vector<const peer_record*>& recs, uint64_t request_id,
                      uint64_t now);
    void flush_pushes(uint64_t now);
    uint64_t rank_of(const node_id& id) const;

    core_context& ctx_;
    membership& members_;
    anti_entropy_config cfg_;
    prove_fn prove_;
    std::map<node_id, partner> partners_;
    size_t neighbour_count_ = 0;
    std::map<node_id, node_id> pending_;  // record's node ID -> who told us
    uint64_t salt_ = 0;
    anti_entropy_counters counters_;
};

}  // namespace mw::meshd
