// mdns_message: the DNS codec under meshd's mDNS. Round trips of every record type with name
// compression, the bytes of a known packet, and each malformed shape the parser must refuse with
// an error value (compression loops, forward pointers, truncation, oversize, long labels/names).
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "meshd/core/mdns_message.hpp"

using namespace mw::meshd;

namespace {

mdns_record rec(const char* name, uint16_t type, mdns_rdata data, uint32_t ttl = 120,
                bool flush = false) {
    mdns_record r;
    r.name = mdns_name::from_dotted(name);
    r.type = type;
    r.ttl = ttl;
    r.cache_flush = flush;
    r.data = std::move(data);
    return r;
}

std::vector<uint8_t> header(uint16_t qd, uint16_t an, uint16_t flags = 0x8400) {
    return {0, 0, uint8_t(flags >> 8), uint8_t(flags), 0, uint8_t(qd), 0, uint8_t(an), 0, 0, 0, 0};
}

void append(std::vector<uint8_t>& v, std::initializer_list<uint8_t> b) {
    v.insert(v.end(), b);
}

// A label of n bytes `c` (the length byte as given: 64 and 0x80 make invalid ones).
void label(std::vector<uint8_t>& v, size_t n, char c) {
    v.push_back(static_cast<uint8_t>(n));
    v.insert(v.end(), n, static_cast<uint8_t>(c));
}

}  // namespace

TEST_CASE("mdns message: every record type round-trips, names compressed") {
    mdns_message m;
    m.id = 0x1234;
    m.flags = mdns_message::flag_response | mdns_message::flag_authoritative;
    mdns_question q;
    q.name = mdns_name::from_dotted("_meshwire._udp.local");
    q.type = mdns_type::ptr;
    q.unicast_response = true;
    m.questions.push_back(q);
    auto svc = mdns_name::from_dotted("_meshwire._udp.local");
    auto inst = svc.prepend("node.one with dots");
    m.answers.push_back(rec("_meshwire._udp.local", mdns_type::ptr, inst, 4500));
    mdns_record srv = rec("x", mdns_type::srv,
                          mdns_srv{0, 0, 51820, mdns_name::from_dotted("n1.local")}, 120, true);
    srv.name = inst;
    m.answers.push_back(srv);
    mdns_record txt = rec("x", mdns_type::txt, mdns_txt{{"id=abcd", "v=1", ""}}, 4500, true);
    txt.name = inst;
    m.answers.push_back(txt);
    m.additionals.push_back(
        rec("n1.local", mdns_type::a, std::array<uint8_t, 4>{192, 168, 1, 7}, 120, true));
    std::array<uint8_t, 16> v6{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    m.additionals.push_back(rec("n1.local", mdns_type::aaaa, v6, 120, true));
    m.additionals.push_back(
        rec("n1.local", mdns_type::nsec,
            mdns_nsec{mdns_name::from_dotted("n1.local"), {mdns_type::a, mdns_type::aaaa, 300}},
            120, true));
    m.additionals.push_back(rec("n1.local", 99, mdns_opaque{{1, 2, 3}}));

    auto bytes = m.encode();
    REQUIRE(bytes);
    auto back = mdns_message::parse(*bytes);
    REQUIRE(back);
    CHECK(back->id == 0x1234);
    CHECK(back->is_response());
    REQUIRE(back->questions.size() == 1);
    CHECK(back->questions[0].name == q.name);
    CHECK(back->questions[0].unicast_response);
    REQUIRE(back->answers.size() == 3);
    REQUIRE(back->additionals.size() == 4);
    for (size_t i = 0; i < 3; ++i) {
        CHECK(back->answers[i].same_record(m.answers[i]));
        CHECK(back->answers[i].ttl == m.answers[i].ttl);
        CHECK(back->answers[i].cache_flush == m.answers[i].cache_flush);
    }
    for (size_t i = 0; i < 4; ++i) CHECK(back->additionals[i].same_record(m.additionals[i]));
    CHECK(std::get<mdns_name>(back->answers[0].data).labels[0] == "node.one with dots");
    // Compression: "_meshwire" is written once (owner and rdata names point at it), "local" twice
    // (once more in the NSEC's next name, which is never compressed).
    auto count = [&](std::string_view needle) {
        std::string hay(bytes->begin(), bytes->end());
        size_t n = 0;
        for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1))
            ++n;
        return n;
    };
    CHECK(count("\x09_meshwire") == 1);
    CHECK(count("\x05local") == 2);
    // Encoding the parsed message gives the same bytes (canonical encoder).
    auto again = back->encode();
    REQUIRE(again);
    CHECK(*again == *bytes);
}

TEST_CASE("mdns message: names compare case-insensitively, compression too") {
    CHECK(mdns_name::from_dotted("Node.LOCAL") == mdns_name::from_dotted("node.local"));
    CHECK_FALSE(mdns_name::from_dotted("node.local") == mdns_name::from_dotted("node2.local"));
    mdns_message m;
    m.answers.push_back(rec("A.LOCAL", mdns_type::a, std::array<uint8_t, 4>{1, 2, 3, 4}));
    m.answers.push_back(rec("a.local", mdns_type::a, std::array<uint8_t, 4>{1, 2, 3, 5}));
    auto b = m.encode();
    REQUIRE(b);
    // 12 header + (9 name + 10 + 4) + (2 pointer + 10 + 4).
    CHECK(b->size() == 12 + 23 + 16);
}

TEST_CASE("mdns message: a hand-written query with a compressed name parses") {
    auto p = header(2, 0, 0);
    // Q1: _meshwire._udp.local PTR IN (QU bit set).
    append(p, {9,   '_', 'm', 'e', 's', 'h', 'w', 'i', 'r', 'e', 4,  '_',  'u',
               'd', 'p', 5,   'l', 'o', 'c', 'a', 'l', 0,   0,   12, 0x80, 1});
    // Q2: _services._dns-sd + pointer to "_udp.local" (offset 22) ANY.
    append(p, {9,   '_', 's', 'e', 'r', 'v', 'i',  'c', 'e', 's', 7, '_',
               'd', 'n', 's', '-', 's', 'd', 0xC0, 22,  0,   255, 0, 1});
    auto m = mdns_message::parse(p);
    REQUIRE(m);
    REQUIRE(m->questions.size() == 2);
    CHECK(m->questions[0].unicast_response);
    CHECK(m->questions[0].type == mdns_type::ptr);
    CHECK(m->questions[1].name.str() == "_services._dns-sd._udp.local");
    CHECK_FALSE(m->questions[1].unicast_response);
}

TEST_CASE("mdns message: malformed packets are errors, never reads out of bounds") {
    SUBCASE("short header") {
        std::vector<uint8_t> p{0, 0, 0};
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("a pointer to itself (loop)") {
        auto p = header(1, 0, 0);
        append(p, {0xC0, 12, 0, 1, 0, 1});
        auto r = mdns_message::parse(p);
        REQUIRE_FALSE(r);
        CHECK(r.err().message.find("backwards") != std::string::npos);
    }
    SUBCASE("two pointers at each other (loop)") {
        // Q1 name at 12: label "a" then pointer to 18; Q2 name at 18: pointer to 12.
        auto p = header(2, 0, 0);
        append(p, {1, 'a', 0xC0, 18, 0, 1, 0xC0, 12, 0, 1, 0, 1});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("a label followed by a pointer back to the label (loop through labels)") {
        auto p = header(1, 0, 0);
        append(p, {1, 'a', 0xC0, 12, 0, 1, 0, 1});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("a pointer forward") {
        auto p = header(1, 0, 0);
        append(p, {0xC0, 20, 0, 1, 0, 1, 0, 0, 1, 'a', 0});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("a pointer past the end") {
        auto p = header(1, 0, 0);
        append(p, {0xFF, 0xFF, 0, 1, 0, 1});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("truncated pointer") {
        auto p = header(1, 0, 0);
        append(p, {0xC0});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("label over 63 (reserved 0x40/0x80 types)") {
        auto p = header(1, 0, 0);
        label(p, 64, 'a');
        append(p, {0, 0, 1, 0, 1});
        CHECK_FALSE(mdns_message::parse(p));
        auto q = header(1, 0, 0);
        label(q, 0x80, 'a');
        append(q, {0, 0, 1, 0, 1});
        CHECK_FALSE(mdns_message::parse(q));
    }
    SUBCASE("name over 255 bytes") {
        auto p = header(1, 0, 0);
        for (int i = 0; i < 5; ++i) label(p, 63, 'x');
        append(p, {0, 0, 1, 0, 1});
        auto r = mdns_message::parse(p);
        REQUIRE_FALSE(r);
        CHECK(r.err().message.find("255") != std::string::npos);
        // Exactly 255 is fine: 3 x 64 + 62 + root = 255.
        auto q = header(1, 0, 0);
        for (int i = 0; i < 3; ++i) label(q, 63, 'x');
        label(q, 61, 'y');
        append(q, {0, 0, 1, 0, 1});
        CHECK(mdns_message::parse(q));
    }
    SUBCASE("a name over 255 bytes only through pointers") {
        auto p = header(3, 0, 0);
        // Q1 at 12: 63 x 'a' label + root (66 bytes incl. type/class).
        label(p, 63, 'a');
        append(p, {0, 0, 1, 0, 1});
        size_t q2 = p.size();
        label(p, 63, 'b');
        append(p, {0xC0, 12, 0, 1, 0, 1});
        label(p, 63, 'c');
        label(p, 63, 'd');
        append(p, {0xC0, uint8_t(q2), 0, 1, 0, 1});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("counts promise more than the packet holds") {
        auto p = header(0, 3);
        append(p, {0, 0, 1, 0, 1, 0, 0, 0, 120, 0, 4, 1, 2, 3, 4});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("rdata length past the packet") {
        auto p = header(0, 1);
        append(p, {0, 0, 1, 0, 1, 0, 0, 0, 120, 0, 9, 1, 2, 3, 4});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("A rdata of the wrong size") {
        auto p = header(0, 1);
        append(p, {0, 0, 1, 0, 1, 0, 0, 0, 120, 0, 3, 1, 2, 3});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("PTR whose name runs past its rdata") {
        auto p = header(0, 1);
        append(p, {0, 0, 12, 0, 1, 0, 0, 0, 120, 0, 2, 3, 'a', 'b', 'c', 0});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("TXT string past its rdata") {
        auto p = header(0, 1);
        append(p, {0, 0, 16, 0, 1, 0, 0, 0, 120, 0, 2, 5, 'a'});
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("NSEC: an empty window (python-zeroconf writes them) is no type, not an error") {
        auto p = header(0, 1);
        append(p, {0, 0, 47, 0, 1, 0, 0, 0, 120, 0, 3, 0, 0, 0});
        auto m = mdns_message::parse(p);
        REQUIRE(m);
        CHECK(std::get<mdns_nsec>(m->answers[0].data).types.empty());
    }
    SUBCASE("NSEC bitmap too long or past its rdata") {
        auto p = header(0, 1);
        append(p, {0, 0, 47, 0, 1, 0, 0, 0, 120, 0, 4, 0, 0, 33, 0});
        CHECK_FALSE(mdns_message::parse(p));
        auto q = header(0, 1);
        append(q, {0, 0, 47, 0, 1, 0, 0, 0, 120, 0, 4, 0, 0, 2, 0x40});
        CHECK_FALSE(mdns_message::parse(q));
    }
    SUBCASE("NSEC: one window per type, repeated (python-zeroconf's form), merged") {
        auto p = header(0, 1);
        // Window 0 with AAAA (28: byte 3, bit 4), then window 0 with A (1: byte 0, bit 1).
        append(p, {0, 0, 47, 0, 1, 0, 0, 0, 120, 0, 10, 0, 0, 4, 0, 0, 0, 0x08, 0, 1, 0x40});
        auto m = mdns_message::parse(p);
        REQUIRE(m);
        CHECK(std::get<mdns_nsec>(m->answers[0].data).types ==
              std::vector<uint16_t>{mdns_type::a, mdns_type::aaaa});
    }
    SUBCASE("trailing bytes") {
        auto p = header(0, 0);
        p.push_back(0);
        CHECK_FALSE(mdns_message::parse(p));
    }
    SUBCASE("oversized packet") {
        std::vector<uint8_t> p(9001, 0);
        CHECK_FALSE(mdns_message::parse(p));
    }
}

TEST_CASE("mdns message: the encoder refuses what it cannot write") {
    mdns_message m;
    m.answers.push_back(rec("ok.local", mdns_type::a, std::array<uint8_t, 4>{}));
    m.answers[0].name.labels[0] = std::string(64, 'x');
    CHECK_FALSE(m.encode());
    m.answers[0].name = mdns_name::from_dotted("a..local");
    CHECK_FALSE(m.encode());
    m.answers[0] = rec("ok.local", mdns_type::txt, mdns_txt{{std::string(256, 'x')}});
    CHECK_FALSE(m.encode());
    m.answers[0] =
        rec("ok.local", mdns_type::nsec, mdns_nsec{mdns_name::from_dotted("ok.local"), {28, 1}});
    CHECK_FALSE(m.encode());
    m.answers[0] = rec("ok.local", 99, mdns_opaque{std::vector<uint8_t>(9000, 0)});
    CHECK_FALSE(m.encode());
    // An empty TXT is written as one empty string (RFC 6763 §6.1).
    m.answers[0] = rec("ok.local", mdns_type::txt, mdns_txt{});
    auto b = m.encode();
    REQUIRE(b);
    auto back = mdns_message::parse(*b);
    REQUIRE(back);
    CHECK(std::get<mdns_txt>(back->answers[0].data).strings == std::vector<std::string>{""});
}
