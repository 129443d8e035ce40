// libFuzzer target: mDNS packets as anyone on the LAN may send them, into mdns_message::parse
// (compression loops, forward pointers, truncated and oversized packets, long labels and names).
// What parses must encode, and the encoding is canonical: it parses back and encodes to the same
// bytes again. A packet that parses then goes to an announced mdns_engine (responder, querier,
// cache) as a packet from port 5353 and as a legacy query, and its timers run on: whatever it makes
// of them (answers, conflicts, peers), nothing it sends may fail to parse.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "meshd/core/mdns_engine.hpp"
#include "meshd/core/mdns_message.hpp"

using namespace mw;
using namespace mw::meshd;

namespace {

void check_output(mdns_engine& e) {
    for (const auto& d : e.take_output())
        if (!mdns_message::parse(d.bytes)) __builtin_trap();
}

void feed_engine(std::span<const uint8_t> in) {
    mdns_engine_config c;
    c.service = {"node-a", "meshwire-0a0a0a0a0a0a", 51821, {"id=0a", "v=1"}};
    c.families = {AF_INET, AF_INET6};
    c.seed = 1;
    mdns_engine e(c);
    const auto addr = wg_endpoint::parse("192.0.2.9:5353").value();
    e.start({addr.address, wg_endpoint::parse("[2001:db8::9]:1").value().address}, 0);
    uint64_t now = 0;
    while (e.responder().current_state() != mdns_responder::state::announced && now < 10000) {
        now = e.next_deadline();
        e.on_timer(now);
        check_output(e);
    }
    e.on_datagram(in, wg_endpoint::parse("192.0.2.50:5353").value(), now);
    check_output(e);
    e.on_datagram(in, wg_endpoint::parse("192.0.2.50:40000").value(), now + 1);
    check_output(e);
    for (int i = 0; i < 8 && e.next_deadline() < now + 200000; ++i) {
        now = e.next_deadline();
        e.on_timer(now);
        check_output(e);
    }
    (void)e.take_found();
    e.stop(now);
    check_output(e);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto m = mdns_message::parse(std::span<const uint8_t>(data, size));
    if (!m) return 0;
    // Only a packet that parses gets past the engine's first check: the (costlier) engine run
    // is kept for those.
    feed_engine(std::span<const uint8_t>(data, size));
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
