// libFuzzer target: mDNS packets as anyone on the LAN may send them, into mdns_message::parse
// (compression loops, forward pointers, truncated and oversized packets, long labels and names).
// What parses must encode, and the encoding is canonical: it parses back and encodes to the same
// bytes again.
#include <cstddef>
#include <cstdint>
#include <span>

#include "meshd/core/mdns_message.hpp"

using namespace mw::meshd;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto m = mdns_message::parse(std::span<const uint8_t>(data, size));
    if (!m) return 0;
    auto enc = m->encode();
    // Our encoder may compress less than the input did (e.g. against names inside opaque rdata),
    // so a message near the 9000-byte limit may not fit again; anything else must encode.
    if (!enc) {
        if (!enc.err().message.starts_with("mdns: message of")) __builtin_trap();
        return 0;
    }
    auto back = mdns_message::parse(*enc);
    if (!back) __builtin_trap();
    if (back->questions.size() != m->questions.size() || back->answers.size() != m->answers.size())
        __builtin_trap();
    for (size_t i = 0; i < m->answers.size(); ++i)
        if (back->answers[i].ttl != m->answers[i].ttl) __builtin_trap();
    auto again = back->encode();
    if (!again || *again != *enc) __builtin_trap();
    for (const auto& r : back->answers) (void)r.canonical_rdata();
    return 0;
}
