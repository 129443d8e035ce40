// libFuzzer target: sealed in-band probe frames (probe_frame.hpp) from arbitrary bytes, as a
// relay may send them. peek_probe_index must accept exactly the WireGuard-data shape of a probe's
// size (96 bytes up to the largest padded probe); open_probe must fail (random bytes never
// authenticate) without crashing. The bytes are also used as a plaintext body: what seals must open
// to the same body.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "meshd/core/probe_frame.hpp"

using namespace mw::meshd;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const uint8_t> in(data, size);
    static const probe_keys keys = [] {
        symmetric_key pair{};
        pair.fill(0x5a);
        node_id a{}, b{};
        return probe_keys::derive(pair, a, b);
    }();
    auto idx = peek_probe_index(in);
    if (idx && (size < probe_frame_size || size > probe_overhead + probe_max_plaintext_size ||
                data[0] != 4))
        __builtin_trap();
    if (auto b = open_probe(keys, in)) {
        // Only a frame sealed with the key opens; the fuzzer cannot produce one by chance.
        (void)b;
    }
    // As a body: kind, id, rx, age from the first bytes; sealed, it opens to the same body.
    if (size >= 21) {
        probe_frame_body body;
        body.kind = (data[0] & 1) ? probe_frame_kind::ping : probe_frame_kind::pong;
        std::memcpy(&body.request_id, data + 1, 8);
        std::memcpy(&body.wg_rx_bytes, data + 9, 8);
        std::memcpy(&body.wg_reading_age_ms, data + 17, 4);
        // Padded to a size from the input (a path MTU probe), or not.
        body.size = probe_plaintext_size;
        if (size >= 23 && (data[21] & 1)) {
            // Within what seal_probe pads to (it clamps anything else).
            body.size = static_cast<uint32_t>(
                probe_plaintext_size + (data[22] | (data[21] << 8)) %
                                           (probe_max_plaintext_size - probe_plaintext_size + 1));
        }
        probe_keys rev = keys;
        std::swap(rev.send, rev.recv);
        std::swap(rev.send_index, rev.recv_index);
        auto f = seal_probe(rev, body.request_id ^ body.wg_rx_bytes, body);
        auto o = open_probe(keys, f);
        if (!o || !(*o == body)) __builtin_trap();
    }
    return 0;
}
