// libFuzzer target: peer records from arbitrary bytes. A record that decodes must re-encode to
// the identical bytes (canonical form), and verify()/record_store::put() must return an error
// value, never crash, for whatever decoded (random bytes never carry a valid signature).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "meshd/core/peer_record.hpp"
#include "meshd/core/record_store.hpp"

using namespace mw::meshd;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const uint8_t> in(data, size);
    auto rec = peer_record::decode(in);
    if (!rec) return 0;
    auto re = rec->encode();
    if (!re || re->size() != size || !std::equal(re->begin(), re->end(), in.begin())) {
        __builtin_trap();
    }
    const uint64_t now = 1'764'000'000'000ull;
    (void)rec->verify();
    (void)rec->verify(node_id{});
    record_store store(record_store_config{.max_records = 2});
    (void)store.put(*rec, now);
    (void)store.find_by_name(rec->name);
    (void)store.expires_at(rec->id());
    store.expire(now + rec->lifetime_ms);
    (void)store.put(*rec, now + rec->lifetime_ms);  // refused by the tombstone, if it was held
    (void)store.tombstone(rec->id());
    (void)rec->same_content(*rec);
    return 0;
}
