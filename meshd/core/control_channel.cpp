#include "meshd/core/control_channel.hpp"

namespace mw::meshd {

result<control_message> control_channel::receive(std::span<const uint8_t> datagram,
                                                 uint64_t now_ms) {
    if (datagram.size() > max_control_datagram || classify(datagram) != frame_kind::control) {
        ++counters_.not_control;
        return error(errc::parse_error, "not a control datagram");
    }
    auto opened = sealer_.open(datagram);
    if (!opened) {
        // Too short to hold nonce and tag is "not ours"; everything else is authentication.
        if (opened.err().is(errc::parse_error)) {
            ++counters_.not_control;
        } else {
            ++counters_.auth_failed;
        }
        return std::move(opened).err();
    }
    auto decoded = decode_plaintext(opened->type, opened->plaintext);
    if (!decoded) {
        ++counters_.malformed;
        return std::move(decoded).err();
    }
    control_message& m = *decoded;
    auto verdict = replay_.check(m.sender, m.timestamp_us, opened->nonce, now_ms * 1000,
                                 !admitted_ || admitted_(m.sender));
    switch (verdict) {
        case replay_verdict::accept:
            break;
        case replay_verdict::stale:
            ++counters_.stale;
            return error(errc::timeout, "control message from " + m.sender.short_hex() +
                                            " is older than the replay window (clock skew?)");
        case replay_verdict::future:
            ++counters_.future;
            return error(errc::timeout, "control message from " + m.sender.short_hex() +
                                            " is ahead of the replay window (clock skew?)");
        case replay_verdict::replay:
        case replay_verdict::below_floor:
            ++counters_.replayed;
            return error(errc::protocol_error,
                         "replayed control message from " + m.sender.short_hex());
        case replay_verdict::table_full:
            ++counters_.table_full;
            return error(errc::exhausted,
                         "replay table full; dropped message from " + m.sender.short_hex());
    }
    if (auto* hello = std::get_if<hello_msg>(&m.body)) {
        auto v = hello->record.verify(now_ms, m.sender);
        if (!v) {
            ++counters_.bad_record;
            return v.err().wrap("HELLO");
        }
    }
    ++counters_.accepted;
    return decoded;
}

result<std::vector<uint8_t>> control_channel::send(message_body body, const aead_nonce& nonce,
                                                   uint64_t now_ms) {
    control_message m;
    m.sender = self_;
    m.body = std::move(body);
    uint64_t saved = last_sent_us_;
    m.timestamp_us = next_send_timestamp(last_sent_us_, now_ms * 1000);
    auto sealed = seal_message(sealer_, m, nonce);
    if (!sealed) last_sent_us_ = saved;  // nothing was sent
    return sealed;
}

}  // namespace mw::meshd
