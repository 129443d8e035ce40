// libFuzzer target: meshd control datagrams and frames from arbitrary bytes.
// The input is tried three ways: as a whole datagram (classify, RELAY_DATA header, open with a
// fixed PSK + decode), and as "type byte || plaintext" straight into the body decoders, which
// random bytes could never reach through the AEAD. Whatever decodes must re-encode to the same
// bytes (the encoding is canonical) and survive a seal/open round trip.
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const uint8_t> in(data, size);
    const psk_sealer& s = fixed_sealer();

    (void)classify(in);
    if (auto rd = decode_relay_data(in)) {
        if (rd->payload.data() != data + relay_data_header_size) __builtin_trap();
    }
    if (auto o = open_message(s, in)) {
        auto again = encode_plaintext(o->message);
        if (!again) __builtin_trap();
    }

    if (size == 0) return 0;
    auto plain = in.subspan(1);
    auto m = decode_plaintext(data[0], plain);
    if (!m) return 0;
    auto re = encode_plaintext(*m);
    if (!re || re->size() != plain.size() || !std::equal(re->begin(), re->end(), plain.begin())) {
        __builtin_trap();  // decode accepted something encode cannot reproduce
    }
    aead_nonce nonce{};
    auto sealed = seal_message(s, *m, nonce);
    if (!sealed) __builtin_trap();
    auto back = open_message(s, *sealed);
    if (!back || back->message.type() != m->type()) __builtin_trap();
    return 0;
}
