// A DNS message as mDNS (RFC 6762) and DNS-SD (RFC 6763) use it: header, questions and resource
// records of the types this node speaks (PTR, SRV, TXT, A, AAAA, NSEC; any other type is kept as
// opaque rdata), with name compression both ways.
//
// The parser is for bytes from anyone on the LAN: every read is bounds-checked, and it returns an
// error (never throws, never reads out of bounds) on a truncated or oversized packet, a label over
// 63 bytes, a name over 255, a compression pointer that does not point strictly backwards (which
// is also what rules out pointer loops), reserved label types, rdata whose length disagrees with
// its contents, and trailing bytes.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.hpp"

namespace mw::meshd {

// A domain name as its labels, in wire order ("node-1", "_meshwire", "_udp", "local"). Labels may
// hold any byte, dots included (an instance name is free text), so this is not a dotted string.
// Comparison is ASCII case-insensitive, as DNS names compare.
struct mdns_name {
    std::vector<std::string> labels;

    static constexpr size_t max_label = 63;
    static constexpr size_t max_wire = 255;  // length octets + labels + the root's zero

    // "a.b.local" split at dots (no escapes: for names we write ourselves, not instance names).
    static mdns_name from_dotted(std::string_view dotted);
    // Labels joined by dots, for logs.
    std::string str() const;
    // The encoded length without compression; valid() checks it against max_wire.
    size_t wire_size() const noexcept;
    bool valid() const noexcept;
    // This name with `label` in front.
    mdns_name prepend(std::string label) const;

    friend bool operator==(const mdns_name& a, const mdns_name& b) noexcept;
};

// ASCII case-insensitive equality of one label.
bool mdns_label_equal(std::string_view a, std::string_view b) noexcept;

namespace mdns_type {
inline constexpr uint16_t a = 1;
inline constexpr uint16_t ptr = 12;
inline constexpr uint16_t txt = 16;
inline constexpr uint16_t aaaa = 28;
inline constexpr uint16_t srv = 33;
inline constexpr uint16_t nsec = 47;
inline constexpr uint16_t any = 255;
}  // namespace mdns_type

inline constexpr uint16_t mdns_class_in = 1;
// The top bit of the class: in a question "unicast response wanted" (QU), in a record "cache
// flush" (this record replaces every other of its name and type, RFC 6762 §10.2).
inline constexpr uint16_t mdns_class_top_bit = 0x8000;

struct mdns_srv {
    uint16_t priority = 0, weight = 0, port = 0;
    mdns_name target;
    friend bool operator==(const mdns_srv&, const mdns_srv&) = default;
};

// NSEC as mDNS uses it (RFC 6762 §6.1): "these are all the types that exist for this name".
struct mdns_nsec {
    mdns_name next;
    std::vector<uint16_t> types;  // ascending, no duplicates
    friend bool operator==(const mdns_nsec&, const mdns_nsec&) = default;
};

struct mdns_txt {
    std::vector<std::string> strings;  // each at most 255 bytes
    friend bool operator==(const mdns_txt&, const mdns_txt&) = default;
};

// Rdata of a type this codec does not know, kept as bytes (never decompressed).
struct mdns_opaque {
    std::vector<uint8_t> bytes;
    friend bool operator==(const mdns_opaque&, const mdns_opaque&) = default;
};

using mdns_rdata = std::variant<mdns_opaque, std::array<uint8_t, 4>, std::array<uint8_t, 16>,
                                mdns_name, mdns_srv, mdns_txt, mdns_nsec>;

struct mdns_question {
    mdns_name name;
    uint16_t type = 0;
    uint16_t qclass = mdns_class_in;  // without the QU bit
    bool unicast_response = false;    // the QU bit
};

struct mdns_record {
    mdns_name name;
    uint16_t type = 0;
    uint16_t rclass = mdns_class_in;  // without the cache-flush bit
    bool cache_flush = false;
    uint32_t ttl = 0;
    // A: array<4>, AAAA: array<16>, PTR: mdns_name, SRV, TXT, NSEC; other types: mdns_opaque.
    mdns_rdata data;

    // Same name, type, class and rdata (TTL and cache-flush aside): "the same record".
    bool same_record(const mdns_record& o) const noexcept;
    // The rdata as canonical (uncompressed, names lower-cased) bytes: for comparing two records'
    // data "lexicographically" in a probe tie-break (RFC 6762 §8.2).
    std::vector<uint8_t> canonical_rdata() const;
};

struct mdns_message {
    uint16_t id = 0;
    uint16_t flags = 0;  // QR is 0x8000, AA 0x0400, TC 0x0200
    std::vector<mdns_question> questions;
    std::vector<mdns_record> answers;
    std::vector<mdns_record> authorities;
    std::vector<mdns_record> additionals;

    static constexpr uint16_t flag_response = 0x8000;
    static constexpr uint16_t flag_authoritative = 0x0400;
    static constexpr uint16_t flag_truncated = 0x0200;
    // RFC 6762 §17: an mDNS message (without IP/UDP headers) is at most 9000 bytes.
    static constexpr size_t max_size = 9000;

    bool is_response() const noexcept { return (flags & flag_response) != 0; }

    // Errors: errc::parse_error with what was wrong and where.
    static result<mdns_message> parse(std::span<const uint8_t> bytes);
    // Names compressed against every name written before them. Errors: errc::invalid_argument for
    // an invalid name, a TXT string over 255 bytes, an unsorted NSEC type list, rdata over 65535
    // bytes, or a message over max_size.
    result<std::vector<uint8_t>> encode() const;
};

}  // namespace mw::meshd
