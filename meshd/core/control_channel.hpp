// One node's end of the control protocol (version 2), as the daemon and the relay service should
// use it: the receive checks in the one safe order, with a counter for every reason a datagram is
// dropped, and the send side's envelope (our key, the recipient, epoch and counter, pair tag) and
// sealing.
//
// receive(): frame check -> PSK open -> decode -> recipient check -> pair key -> pair tag ->
// replay window -> for HELLO, the record must verify and belong to the sender. Nothing is
// remembered about a sender before its pair tag verified, so a PSK holder cannot move another
// node's replay state. Every failure is an error value and one counter; the caller never answers
// a dropped datagram. RELAY_DATA is not accepted here (the forwarder takes it before the core;
// see wire_codec classify()).
//
// A PING may name no recipient (first contact with an address whose node we do not know: a
// configured relay, a bootstrap address). Its tag is keyed by the PSK only, so its sender is NOT
// proven: it is returned with a zero recipient, it does not touch the replay window, and the
// caller may only answer it (with a pair-tagged PONG of no more bytes), not believe it.
//
// Pure: nonces come from the caller; no clock (a HELLO's record is checked for its signature and
// sender only: its lifetime is counted by the record store, from receipt).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/result.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/node_identity.hpp"
#include "meshd/core/pair_key_cache.hpp"
#include "meshd/core/psk_sealer.hpp"
#include "meshd/core/replay_window.hpp"
#include "meshd/core/wire_codec.hpp"

namespace mw::meshd {

struct control_counters {
    uint64_t accepted = 0;
    uint64_t not_control = 0;  // wrong magic/version/type, oversized, or a RELAY_DATA frame
    uint64_t old_version = 0;  // a version-1 datagram: a node not upgraded yet
    // Sealed with our PSK but of a message type this version does not know: a newer peer's
    // (rolling upgrade). Dropped; the sender gets no answer and carries on without one.
    uint64_t unknown_type = 0;
    uint64_t auth_failed = 0;       // wrong PSK or tampered: the interesting one for operators
    uint64_t malformed = 0;         // opened, but the body does not decode (a buggy PSK holder)
    uint64_t wrong_recipient = 0;   // for another node (a replay or reflection), or no one
    uint64_t pair_auth_failed = 0;  // the pair tag does not verify: a PSK holder forging a sender
    uint64_t stale_epoch = 0;       // from before the sender's last restart
    uint64_t replayed = 0;          // seen before, or below the sender's window
    uint64_t bad_record = 0;        // HELLO whose record does not verify or is not the sender's
    // Cookies (cookie_jar): requests we answered with a COOKIE_REPLY only (their source address
    // was not proven: a spoofed source, or a first request), and COOKIE_REPLYs we got for ours.
    uint64_t cookie_sent = 0;
    uint64_t cookie_required = 0;
    // From a refused node (revokedNodes, or no Node carries it under kubernetes.requireNode):
    // dropped before its pair key is computed or a replay slot is taken (set_refusal).
    uint64_t revoked = 0;
    // Opened under the sealing key (slot 0) or one of the accepted keys (psk.acceptPaths):
    // during a key roll the second shows who still seals with the other key.
    uint64_t opened_seal = 0;
    uint64_t opened_accept = 0;
    // Failed authentication but opens under the retired key (psk_sealer::retire_from): a node
    // still sealing with a key this node dropped. Counted within auth_failed as well.
    uint64_t retired_key = 0;
};

class control_channel {
public:
    // Where send() finds the public key of a recipient it has not heard from (the core's record
    // store); nullopt: unknown.
    using key_source = std::function<std::optional<wg_key>(const node_id&)>;

    control_channel(const node_identity& self, psk_sealer sealer, uint64_t epoch = 0,
                    replay_config replay = {},
                    size_t key_cache_size = pair_key_cache::default_capacity);
    control_channel(const control_channel&) = delete;
    control_channel& operator=(const control_channel&) = delete;
    ~control_channel();

    // Replaces the cluster keys (a key roll, psk.path / psk.acceptPaths re-read). Replay state,
    // epoch and counter stay; the pair keys are computed again under the new keys, as peers
    // speak (one X25519 each). The dropped key becomes the retired verifier.
    void set_sealer(psk_sealer sealer);
    const psk_sealer& sealer() const noexcept { return sealer_; }

    // Errors: errc::parse_error (not ours / malformed / not for us), errc::unsupported (protocol
    // version 1), errc::protocol_error (authentication, replay, bad record), errc::state_mismatch
    // (our own message looped back, not counted; or a newer peer's message type, counted as
    // unknown_type). The matching counter has been incremented.
    result<control_message> receive(std::span<const uint8_t> datagram, uint64_t now_ms);

    // Stamps our key, the recipient, epoch and counter, tags and seals. `to` zero: only for a
    // PING. Fails (errc::not_found) when the recipient's key is unknown. `nonce` must be fresh
    // random bytes.
    result<std::vector<uint8_t>> send(message_body body, const node_id& to,
                                      const aead_nonce& nonce);

    // Whether a sender is admitted (replay_window.hpp, admission: unadmitted senders share a
    // part of the sender table). Unset: everyone is.
    void set_admission(std::function<bool(const node_id&)> admitted) {
        admitted_ = std::move(admitted);
    }
    // Senders refused outright (revoked, or not listed under requireNode): their datagrams are
    // dropped right after the recipient check, before any per-sender state (pair key cache
    // entry, X25519, replay slot) is spent on them; counted as `revoked`. The sender field is
    // not authenticated yet there, which is safe: this only drops, and a forger naming a refused
    // node only gets its own datagram dropped. Unset: nobody is.
    void set_refusal(std::function<bool(const node_id&)> refused) { refused_ = std::move(refused); }

    // The boot epoch our messages carry; the counter starts again at 0. Set once, before sending.
    void set_epoch(uint64_t epoch) noexcept {
        epoch_ = epoch;
        counter_ = 0;
    }
    uint64_t epoch() const noexcept { return epoch_; }
    void set_key_source(key_source f) { key_source_ = std::move(f); }
    // A public key to answer (a first-contact PING's): the pair key is ready for the answer.
    // False for a key no pair key can be made with (low-order point).
    bool learn_key(const wg_key& k) { return keys_[0]->key_for(k).ok(); }
    std::optional<wg_key> public_key_of(const node_id& id) const;

    const control_counters& counters() const noexcept { return counters_; }
    void count_cookie_sent() noexcept { ++counters_.cookie_sent; }
    void count_cookie_required() noexcept { ++counters_.cookie_required; }
    const node_id& self() const noexcept { return self_; }
    // The pair keys under the sealing key (slot 0) or an accepted key's slot.
    const pair_key_cache& keys(size_t slot = 0) const noexcept { return *keys_[slot]; }
    const replay_window& replay() const noexcept { return replay_; }

private:
    node_id self_;
    wg_key self_key_;
    psk_sealer sealer_;
    wg_key self_private_;
    size_t key_cache_size_;
    // One pair key cache per sealer slot: a pair key is keyed by the slot's cluster key.
    std::vector<std::unique_ptr<pair_key_cache>> keys_;
    replay_window replay_;
    control_counters counters_;
    key_source key_source_;
    uint64_t epoch_ = 0;
    uint64_t counter_ = 0;
    std::function<bool(const node_id&)> admitted_;
    std::function<bool(const node_id&)> refused_;
};

}  // namespace mw::meshd
