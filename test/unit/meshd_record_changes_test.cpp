// record_changes: what differs between two records of a node (the log line of a re-sign, issue
// 18) and the reason counted for it.
#include <doctest/doctest.h>

#include <string>

#include "meshd/core/record_changes.hpp"
#include "meshd_test_util.hpp"

using namespace mw::meshd;

namespace {

std::string field(const change_fields& f, const std::string& key) {
    for (const auto& [k, v] : f) {
        if (k == key) return v;
    }
    return "(none)";
}

std::string name_of(const node_id& id) {
    return id == meshd_test::identity(200).id() ? "relay1" : "relay2";
}

}  // namespace

TEST_CASE("record_changes: relays, RTTs, endpoints and the reason, in order") {
    const auto a = meshd_test::record(1, 1);
    auto b = meshd_test::record(1, 2);  // the same content at a newer seq
    CHECK(!compare_records(a, b).any());
    CHECK(resign_reason_of(compare_records(a, b), false, true) == resign_reason::refresh);
    CHECK(resign_reason_of(compare_records(a, b), false, false) == resign_reason::forced);
    CHECK(resign_reason_of(compare_records(a, b), true, false) == resign_reason::start);

    // Only an RTT moved (unknown -> 52 ms: the record lists no RTTs).
    b.relay_rtt_ms = {52};
    auto c = compare_records(a, b);
    CHECK(c.relay_rtt);
    CHECK(!c.relays);
    CHECK(!c.endpoints);
    CHECK(resign_reason_of(c, false, true) == resign_reason::relay_rtt);
    change_fields f;
    append_change_fields(f, a, b, name_of);
    CHECK(field(f, "relay_rtt_ms") == "relay1 ?->52");
    CHECK(field(f, "relays") == "(none)");

    // A relay joins: a relay change (the RTT of the one listed before moved too).
    auto d = b;
    d.relays.push_back(meshd_test::identity(201).id());
    d.relay_rtt_ms = {47, 3};
    c = compare_records(b, d);
    CHECK(c.relays);
    CHECK(resign_reason_of(c, false, false) == resign_reason::relays);
    f.clear();
    append_change_fields(f, b, d, name_of);
    CHECK(field(f, "relays") == "relay1 -> relay1,relay2");
    CHECK(field(f, "relay_rtt_ms") == "relay1 52->47");

    // An endpoint changed: content, before an RTT move.
    auto e = d;
    e.endpoints.pop_back();
    e.relay_rtt_ms = {48, 3};
    c = compare_records(d, e);
    CHECK(c.endpoints);
    CHECK(resign_reason_of(c, false, false) == resign_reason::content);
    f.clear();
    append_change_fields(f, d, e, name_of);
    CHECK(field(f, "endpoints") == "192.168.1.1:51821,[2001:db8::1]:51821 -> 192.168.1.1:51821");
    CHECK(field(f, "relay_rtt_ms") == "relay1 47->48");

    // The relay role (flags).
    auto g = e;
    g.flags = peer_record::flag_relay;
    CHECK(compare_records(e, g).other);
    f.clear();
    append_change_fields(f, e, g, name_of);
    CHECK(field(f, "relay_role") == "no -> serving");
    for (size_t i = 0; i < resign_reason_count; ++i) {
        CHECK(std::string(to_string(static_cast<resign_reason>(i))) != "unknown");
    }
}
