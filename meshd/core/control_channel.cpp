#include "meshd/core/control_channel.hpp"

namespace mw::meshd {

control_channel::control_channel(const node_identity& self, psk_sealer sealer, uint64_t epoch,
                                 replay_config replay, size_t key_cache_size)
    : self_(self.id()),
      self_key_(self.wg_public_key()),
      sealer_(std::move(sealer)),
      self_private_(self.wg_private_key()),
      key_cache_size_(key_cache_size),
      replay_(replay),
      epoch_(epoch) {
    set_sealer(sealer_);
}

control_channel::~control_channel() {
    self_private_.wipe();
}

void control_channel::set_sealer(psk_sealer sealer) {
    if (!keys_.empty()) sealer.retire_from(sealer_);
    sealer_ = std::move(sealer);
    keys_.clear();
    for (size_t i = 0; i < sealer_.slots(); ++i) {
        keys_.push_back(std::make_unique<pair_key_cache>(sealer_.pair_cluster_key(i), self_private_,
                                                         self_key_, key_cache_size_));
    }
}

std::optional<wg_key> control_channel::public_key_of(const node_id& id) const {
    for (const auto& k : keys_) {
        if (auto p = k->public_key_of(id)) return p;
    }
    return std::nullopt;
}

result<control_message> control_channel::receive(std::span<const uint8_t> datagram,
                                                 uint64_t /*now_ms: no check here uses a clock*/) {
    if (datagram.size() >= psk_sealer::header_size && datagram[0] == psk_sealer::magic0 &&
        datagram[1] == psk_sealer::magic1 && datagram[2] == psk_sealer::previous_version) {
        ++counters_.old_version;
        return error(errc::unsupported, "control protocol version 1 (a node not upgraded yet)");
    }
    if (datagram.size() <= max_datagram_of_type(datagram.size() > 3 ? datagram[3] : 0) &&
        datagram.size() >= psk_sealer::header_size && datagram[0] == psk_sealer::magic0 &&
        datagram[1] == psk_sealer::magic1 && datagram[2] == psk_sealer::version &&
        is_sealed_type(datagram[3]) && !is_known_control_type(datagram[3])) {
        // A type from a newer version (rolling upgrade): counted once it proves to be sealed
        // with our PSK (so outsiders cannot move this counter), never decoded or answered.
        if (!sealer_.open(datagram)) {
            ++counters_.auth_failed;
            return error(errc::protocol_error, "unknown control message type, not authentic");
        }
        ++counters_.unknown_type;
        return error(errc::unsupported, "control message type " + std::to_string(datagram[3]) +
                                            " unknown to this version (a newer peer's)");
    }
    if (datagram.size() > max_datagram_of_type(datagram.size() > 3 ? datagram[3] : 0) ||
        classify(datagram) != frame_kind::control) {
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
            if (sealer_.sealed_with_retired(datagram)) {
                ++counters_.retired_key;
                return error(errc::protocol_error,
                             "control datagram sealed with a retired cluster key (" +
                                 sealer_.retired_fingerprint() + "): refused");
            }
        }
        return std::move(opened).err();
    }
    const size_t slot = opened->slot;
    auto decoded = decode_plaintext(opened->type, opened->plaintext);
    if (!decoded) {
        ++counters_.malformed;
        return std::move(decoded).err();
    }
    control_message& m = *decoded;
    if (m.sender == self_) {
        return error(errc::state_mismatch, "our own control message, looped back");
    }
    const bool anonymous = m.recipient.is_zero();  // decode allows it for PING only
    if (!anonymous && m.recipient != self_) {
        ++counters_.wrong_recipient;
        return error(errc::parse_error, std::string(to_string(m.type())) + " from " +
                                            m.sender.short_hex() + " is for another node");
    }
    if (refused_ && refused_(m.sender)) {
        ++counters_.revoked;
        return error(errc::protocol_error, std::string(to_string(m.type())) +
                                               " from refused node " + m.sender.short_hex());
    }
    const symmetric_key* key = &sealer_.anon_key(slot);
    if (!anonymous) {
        auto k = keys_[slot]->key_for(m.sender_key);
        if (!k) {
            ++counters_.pair_auth_failed;
            return std::move(k).err();
        }
        key = *k;
    }
    if (!pair_tag_valid(*key, opened->type, opened->plaintext)) {
        ++counters_.pair_auth_failed;
        return error(errc::protocol_error, std::string(to_string(m.type())) +
                                               " claiming to be from " + m.sender.short_hex() +
                                               " failed the pair tag (forged sender?)");
    }
    if (!anonymous) {
        switch (replay_.check(m.sender, m.epoch, m.counter, !admitted_ || admitted_(m.sender))) {
            case replay_verdict::accept:
                break;
            case replay_verdict::stale_epoch:
                ++counters_.stale_epoch;
                return error(errc::protocol_error, "control message from " + m.sender.short_hex() +
                                                       " is from before its last restart");
            case replay_verdict::replay:
                ++counters_.replayed;
                return error(errc::protocol_error,
                             "replayed control message from " + m.sender.short_hex());
        }
    }
    if (auto* hello = std::get_if<hello_msg>(&m.body)) {
        auto v = hello->record.verify(m.sender);
        if (!v) {
            ++counters_.bad_record;
            return v.err().wrap("HELLO");
        }
    }
    ++counters_.accepted;
    ++(slot == 0 ? counters_.opened_seal : counters_.opened_accept);
    return decoded;
}

result<std::vector<uint8_t>> control_channel::send(message_body body, const node_id& to,
                                                   const aead_nonce& nonce) {
    control_message m;
    m.sender_key = self_key_;
    m.sender = self_;
    m.recipient = to;
    m.epoch = epoch_;
    m.counter = counter_;
    m.body = std::move(body);
    const symmetric_key* key = &sealer_.anon_key();
    if (!to.is_zero()) {
        auto pub = public_key_of(to);
        if (!pub && key_source_) pub = key_source_(to);
        if (!pub) {
            return error(errc::not_found,
                         std::string(to_string(m.type())) + ": no key known for " + to.short_hex());
        }
        key = MW_TRY(keys_[0]->key_for(*pub));
    }
    auto sealed = MW_TRY(seal_message(sealer_, *key, m, nonce));
    ++counter_;  // only what was sealed uses a counter value
    return sealed;
}

}  // namespace mw::meshd
