// One node's end of the control protocol, as the daemon and the relay service should use it:
// the receive checks in the one safe order, with a counter for every reason a datagram is
// dropped, and the send side's sender ID, strictly increasing timestamps and sealing.
//
// receive(): frame check -> AEAD open (PSK) -> decode -> replay window -> for HELLO, the record
// must verify and belong to the sender. Every failure is an error value and one counter; the
// caller never answers a dropped datagram. RELAY_DATA is not accepted here (the forwarder takes
// it before the core; see wire_codec classify()).
//
// Pure: `now` and nonces come from the caller.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "common/result.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/psk_sealer.hpp"
#include "meshd/core/replay_window.hpp"
#include "meshd/core/wire_codec.hpp"

namespace mw::meshd {

struct control_counters {
    uint64_t accepted = 0;
    uint64_t not_control = 0;  // wrong magic/version/type, oversized, or a RELAY_DATA frame
    uint64_t auth_failed = 0;  // wrong PSK or tampered: the interesting one for operators
    uint64_t malformed = 0;    // opened, but the body does not decode (a buggy PSK holder)
    uint64_t stale = 0;        // timestamp older than the window (or a clock far behind)
    uint64_t future = 0;       // timestamp newer than the window (or a clock far ahead)
    uint64_t replayed = 0;     // exact repeat, or below the sender's floor
    uint64_t table_full = 0;   // too many live senders
    uint64_t bad_record = 0;   // HELLO whose record does not verify or is not the sender's
    uint64_t revoked = 0;      // from a node in revokedNodes (counted by node_core)
};

class control_channel {
public:
    control_channel(const node_id& self, psk_sealer sealer, replay_config replay = {})
        : self_(self), sealer_(std::move(sealer)), replay_(in_us(replay)) {}

    // Errors: errc::parse_error (not ours / malformed), errc::protocol_error (authentication,
    // replay, bad record), errc::timeout (stale or future timestamp), errc::exhausted (table
    // full). The matching counter has been incremented.
    result<control_message> receive(std::span<const uint8_t> datagram, uint64_t now_ms);

    // Stamps sender and timestamp and seals. `nonce` must be fresh random bytes.
    result<std::vector<uint8_t>> send(message_body body, const aead_nonce& nonce, uint64_t now_ms);

    // Whether a sender is admitted (replay_window rule 6: unadmitted senders share a part of the
    // sender table). Unset: everyone is.
    void set_admission(std::function<bool(const node_id&)> admitted) {
        admitted_ = std::move(admitted);
    }

    // Forget replay state that can no longer matter (call every few seconds).
    void expire(uint64_t now_ms) { replay_.expire(now_ms * 1000); }

    const control_counters& counters() const noexcept { return counters_; }
    const node_id& self() const noexcept { return self_; }

private:
    node_id self_;
    psk_sealer sealer_;
    replay_window replay_;
    control_counters counters_;
    // Envelope timestamps are unix microseconds, strictly increasing per sender (replay_window
    // rule 4). Milliseconds would cap a sender at 1000 messages/s before its timestamps run ahead
    // of its clock and receivers call them "future": a relay answering hundreds of HELLOs and
    // pushing records sends more than that.
    static replay_config in_us(replay_config c) {
        c.window_ms *= 1000;
        return c;
    }
    uint64_t last_sent_us_ = 0;
    std::function<bool(const node_id&)> admitted_;
};

}  // namespace mw::meshd
