// libFuzzer target: meshd control datagrams (protocol v2) and frames from arbitrary bytes.
// The input is tried three ways: as a whole datagram (classify, RELAY_DATA header, open with a
// fixed PSK + decode + pair tag check), and as "type byte || plaintext" straight into the
// envelope and body decoders, which random bytes could never reach through the AEAD. Whatever
// decodes must re-encode to the same bytes (the encoding is canonical, tag included), keep its
// tag through a seal/open round trip, and get a valid tag when sealed with the fixed pair key.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "meshd/core/wire_codec.hpp"

using namespace mw::meshd;

namespace {

const psk_sealer& fixed_sealer() {
    static const psk_sealer s = [] {
        std::string_view psk = "meshwire fuzz fixed psk 00000000";
        return psk_sealer::create(std::vector<uint8_t>(psk.begin(), psk.end())).value();
    }();
    return s;
}

// The key the seeds were tagged with (meshd_wire_codec_test writes them).
symmetric_key fixed_tag_key() {
    symmetric_key k{};
    k.fill(0x5a);
    return k;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const uint8_t> in(data, size);
    const psk_sealer& s = fixed_sealer();
    const symmetric_key key = fixed_tag_key();

    (void)classify(in);
    if (auto rd = decode_relay_data(in)) {
        if (rd->payload.data() != data + relay_data_header_size) __builtin_trap();
    }
    if (auto o = open_message(s, in)) {
        auto again = encode_plaintext(o->message);
        if (!again || *again != o->plaintext) __builtin_trap();
        (void)pair_tag_valid(key, in[3], o->plaintext);
    }

    if (size == 0) return 0;
    auto plain = in.subspan(1);
    (void)pair_tag_valid(key, data[0], plain);
    auto m = decode_plaintext(data[0], plain);
    if (!m) return 0;
    if (m->sender != node_id::of(m->sender_key)) __builtin_trap();
    if (m->recipient.is_zero() && m->type() != msg_type::ping) __builtin_trap();
    auto re = encode_plaintext(*m);
    if (!re || re->size() != plain.size() || !std::equal(re->begin(), re->end(), plain.begin())) {
        __builtin_trap();  // decode accepted something encode cannot reproduce
    }
    aead_nonce nonce{};
    auto sealed = seal_message(s, key, *m, nonce);
    if (!sealed) __builtin_trap();
    auto back = open_message(s, *sealed);
    if (!back || back->message.type() != m->type()) __builtin_trap();
    if (!pair_tag_valid(key, data[0], back->plaintext)) __builtin_trap();
    return 0;
}
