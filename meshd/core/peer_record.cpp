#include "meshd/core/peer_record.hpp"

#include <algorithm>

#include <netinet/in.h>

#include <cstring>
#include <string_view>

#include "meshd/core/byte_io.hpp"

namespace mw::meshd {

namespace {

bool valid_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

uint8_t family_byte(int family) {
    return family == AF_INET ? 4 : 6;
}

// Reads "u8 family, address bytes"; fails the reader on an unknown family.
ip_address read_address(byte_reader& r) {
    uint8_t fam = r.u8();
    size_t len = fam == 4 ? 4 : fam == 6 ? 16 : 0;
    if (len == 0) {
        r.fail();
        return {};
    }
    auto bytes = r.view(len);
    if (!r.ok()) return {};
    auto a = ip_address::from_bytes(fam == 4 ? AF_INET : AF_INET6, bytes.data(), len);
    if (!a) {
        r.fail();
        return {};
    }
    return *a;
}

void write_address(byte_writer& w, const ip_address& a) {
    w.u8(family_byte(a.family()));
    w.bytes(a.data(), a.byte_len());
}

error bad(const std::string& why) {
    return error(errc::parse_error, "peer record: " + why);
}

}  // namespace

status peer_record::validate() const {
    if (name.empty() || name.size() > max_name) {
        return error(errc::invalid_argument, "peer record: name must be 1-253 characters");
    }
    for (char c : name) {
        if (!valid_name_char(c)) {
            return error(errc::invalid_argument,
                         "peer record: name may contain only letters, digits, '.', '-', '_'");
        }
    }
    if (pod_cidrs.size() > max_cidrs || endpoints.size() > max_endpoints ||
        relays.size() > max_relays ||
        (!relay_rtt_ms.empty() && relay_rtt_ms.size() != relays.size())) {
        return error(errc::invalid_argument,
                     "peer record: at most 8 pod CIDRs, 8 endpoints and 8 relays (one RTT each)");
    }
    if (version < oldest_format || version > format) {
        return error(errc::invalid_argument, "peer record: unknown format");
    }
    if (flags & ~known_flags) {
        return error(errc::invalid_argument, "peer record: unknown flag bits");
    }
    if (lifetime_ms == 0 || lifetime_ms > max_lifetime_ms) {
        return error(errc::invalid_argument, "peer record: lifetime must be 1 ms to 24 h, not " +
                                                 std::to_string(lifetime_ms) + " ms");
    }
    for (const auto& p : pod_cidrs) {
        if (!p.address().valid() || p.length() < 0 || p.length() > p.address().bits() ||
            !(p.network() == p)) {
            return error(errc::invalid_argument,
                         "peer record: pod CIDR " + p.str() + " is not a network prefix");
        }
    }
    for (const auto& e : endpoints) {
        if (!e.address.valid() || e.port == 0) {
            return error(errc::invalid_argument, "peer record: endpoint needs an address and port");
        }
    }
    return {};
}

result<std::vector<uint8_t>> peer_record::encode_body() const {
    MW_TRY_STATUS(validate());
    std::vector<uint8_t> out;
    out.reserve(max_encoded_size);
    byte_writer w(out);
    w.u8(version);
    w.bytes(wg_public_key.data(), wg_key::size);
    w.bytes(signing_key.data(), signing_key.size());
    w.u64(seq);
    w.u32(lifetime_ms);
    w.u8(static_cast<uint8_t>(name.size()));
    w.text(name);
    w.u8(static_cast<uint8_t>(pod_cidrs.size()));
    for (const auto& p : pod_cidrs) {
        write_address(w, p.address());
        w.u8(static_cast<uint8_t>(p.length()));
    }
    w.u8(static_cast<uint8_t>(endpoints.size()));
    for (const auto& e : endpoints) {
        write_address(w, e.address);
        w.u16(e.port);
    }
    w.u16(wg_port);
    w.u8(flags);
    w.u8(static_cast<uint8_t>(relays.size()));
    for (size_t i = 0; i < relays.size(); ++i) {
        w.bytes(relays[i].data(), node_id::size);
        w.u16(relay_rtt(i));
    }
    return out;
}

result<std::vector<uint8_t>> peer_record::encode() const {
    auto out = MW_TRY(encode_body());
    out.insert(out.end(), sig.begin(), sig.end());
    return out;
}

result<peer_record> peer_record::decode(std::span<const uint8_t> bytes) {
    if (bytes.size() > max_encoded_size) return bad("too large");
    byte_reader r(bytes);
    peer_record rec;
    rec.version = r.u8();
    if (rec.version < oldest_format || rec.version > format) return bad("unknown format");
    std::array<uint8_t, 32> k{};
    r.copy(k.data(), k.size());
    rec.wg_public_key = wg_key(k);
    r.copy(rec.signing_key.data(), rec.signing_key.size());
    rec.seq = r.u64();
    rec.lifetime_ms = r.u32();
    size_t name_len = r.u8();
    auto name = r.view(name_len);
    rec.name.assign(reinterpret_cast<const char*>(name.data()), name.size());
    size_t n = r.u8();
    if (n > max_cidrs) return bad("too many pod CIDRs");
    for (size_t i = 0; i < n && r.ok(); ++i) {
        ip_address a = read_address(r);
        int len = r.u8();
        if (r.ok()) rec.pod_cidrs.emplace_back(a, len);
    }
    n = r.u8();
    if (n > max_endpoints) return bad("too many endpoints");
    for (size_t i = 0; i < n && r.ok(); ++i) {
        ip_address a = read_address(r);
        uint16_t port = r.u16();
        if (r.ok()) rec.endpoints.push_back(wg_endpoint{a, port});
    }
    rec.wg_port = r.u16();
    rec.flags = r.u8();
    n = r.u8();
    if (n > max_relays) return bad("too many relays");
    for (size_t i = 0; i < n && r.ok(); ++i) {
        auto id = r.view(node_id::size);
        uint16_t rtt = r.u16();
        if (r.ok()) {
            rec.relays.push_back(node_id::from_bytes(id.data()));
            rec.relay_rtt_ms.push_back(rtt);
        }
    }
    // One form for "no RTTs": an empty list (what a node that measured nothing writes).
    if (std::all_of(rec.relay_rtt_ms.begin(), rec.relay_rtt_ms.end(),
                    [](uint16_t v) { return v == unknown_rtt; })) {
        rec.relay_rtt_ms.clear();
    }
    r.copy(rec.sig.data(), rec.sig.size());
    if (!r.ok()) return bad("truncated");
    if (!r.at_end()) return bad("trailing bytes");
    auto v = rec.validate();
    if (!v) return error(errc::parse_error, v.err().message);
    return rec;
}

namespace {

std::vector<uint8_t> signed_message(const std::vector<uint8_t>& body) {
    std::string_view label = peer_record::signing_label;
    std::vector<uint8_t> msg(label.size() + body.size());
    std::memcpy(msg.data(), label.data(), label.size());
    std::memcpy(msg.data() + label.size(), body.data(), body.size());
    return msg;
}

}  // namespace

status peer_record::sign(const node_identity& identity) {
    wg_public_key = identity.wg_public_key();
    signing_key = identity.signing_key();
    auto body = MW_TRY(encode_body());
    sig = identity.sign(signed_message(body));
    return {};
}

status peer_record::verify(const std::optional<node_id>& expected_id, bool keys_known_bound) const {
    auto body = encode_body();
    if (!body) return body.err();
    node_id id = this->id();
    if (expected_id && !(*expected_id == id)) {
        return error(errc::protocol_error, "peer record of node " + id.short_hex() +
                                               " presented as node " + expected_id->short_hex());
    }
    if (!keys_known_bound && !node_identity::keys_bound(wg_public_key, signing_key)) {
        return error(errc::protocol_error, "peer record " + name + " (" + id.short_hex() +
                                               "): signing key does not belong to its WG key");
    }
    if (!node_identity::verify(signing_key, signed_message(*body), sig)) {
        return error(errc::protocol_error,
                     "peer record " + name + " (" + id.short_hex() + "): bad signature");
    }
    return {};
}

bool peer_record::same_content(const peer_record& other) const {
    auto a = encode_body();
    auto b = other.encode_body();
    return a && b && *a == *b;
}

}  // namespace mw::meshd
