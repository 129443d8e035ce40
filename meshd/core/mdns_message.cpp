#include "meshd/core/mdns_message.hpp"

#include <algorithm>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "meshd/core/byte_io.hpp"

namespace mw::meshd {

namespace {

char ascii_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out) c = ascii_lower(c);
    return out;
}

error bad(const std::string& what, size_t at) {
    return {errc::parse_error, "mdns: " + what + " at byte " + std::to_string(at)};
}

// Reads the name that starts at `pos`. Bytes read in place must lie below `limit` (the end of the
// rdata or of the message); `pos` ends past the name as it appears in place. A compression pointer
// must point below every byte of this name read so far: pointers only ever go backwards, so a
// chain of them ends and no loop is possible, whatever the input.
result<mdns_name> read_name(std::span<const uint8_t> msg, size_t& pos, size_t limit) {
    mdns_name name;
    size_t p = pos, floor = pos, wire = 1, end = limit;
    bool jumped = false;
    for (;;) {
        if (p >= end) return bad("name runs past its end", p);
        uint8_t len = msg[p];
        if (len == 0) {
            if (!jumped) pos = p + 1;
            return name;
        }
        if ((len & 0xC0) == 0xC0) {
            if (p + 1 >= end) return bad("truncated compression pointer", p);
            size_t off = static_cast<size_t>(len & 0x3F) << 8 | msg[p + 1];
            if (off >= floor) return bad("compression pointer not pointing backwards", p);
            if (!jumped) pos = p + 2;
            jumped = true;
            floor = off;
            p = off;
            end = msg.size();
            continue;
        }
        if ((len & 0xC0) != 0) return bad("reserved label type", p);
        // len <= 63 here: the two top bits are clear.
        if (p + 1 + len > end) return bad("label runs past its end", p);
        wire += 1 + len;
        if (wire > mdns_name::max_wire) return bad("name longer than 255 bytes", p);
        name.labels.emplace_back(reinterpret_cast<const char*>(msg.data() + p + 1), len);
        p += 1 + len;
    }
}

uint16_t read_u16(std::span<const uint8_t> m, size_t at) {
    return static_cast<uint16_t>(m[at] << 8 | m[at + 1]);
}

// The class field without and with its top bit (QU in a question, cache-flush in a record).
std::pair<uint16_t, bool> split_class(uint16_t cls) {
    return {static_cast<uint16_t>(cls & ~mdns_class_top_bit), (cls & mdns_class_top_bit) != 0};
}

result<mdns_rdata> read_rdata(std::span<const uint8_t> msg, uint16_t type, size_t start,
                              size_t end) {
    size_t len = end - start;
    switch (type) {
        case mdns_type::a: {
            if (len != 4) return bad("A rdata not 4 bytes", start);
            std::array<uint8_t, 4> a{};
            std::copy_n(msg.data() + start, 4, a.begin());
            return mdns_rdata{a};
        }
        case mdns_type::aaaa: {
            if (len != 16) return bad("AAAA rdata not 16 bytes", start);
            std::array<uint8_t, 16> a{};
            std::copy_n(msg.data() + start, 16, a.begin());
            return mdns_rdata{a};
        }
        case mdns_type::ptr: {
            size_t p = start;
            auto n = MW_TRY(read_name(msg, p, end));
            if (p != end) return bad("PTR rdata longer than its name", p);
            return mdns_rdata{std::move(n)};
        }
        case mdns_type::srv: {
            if (len < 7) return bad("SRV rdata too short", start);
            mdns_srv s;
            s.priority = read_u16(msg, start);
            s.weight = read_u16(msg, start + 2);
            s.port = read_u16(msg, start + 4);
            size_t p = start + 6;
            s.target = MW_TRY(read_name(msg, p, end));
            if (p != end) return bad("SRV rdata longer than its target", p);
            return mdns_rdata{std::move(s)};
        }
        case mdns_type::txt: {
            mdns_txt t;
            size_t p = start;
            while (p < end) {
                size_t n = msg[p];
                if (p + 1 + n > end) return bad("TXT string runs past its rdata", p);
                t.strings.emplace_back(reinterpret_cast<const char*>(msg.data() + p + 1), n);
                p += 1 + n;
            }
            return mdns_rdata{std::move(t)};
        }
        case mdns_type::nsec: {
            mdns_nsec n;
            size_t p = start;
            n.next = MW_TRY(read_name(msg, p, end));
            while (p < end) {
                if (p + 2 > end) return bad("truncated NSEC window", p);
                int window = msg[p];
                size_t blen = msg[p + 1];
                // RFC 4034 wants windows ascending, each 1..32 bytes. python-zeroconf writes one
                // window per type (the same window repeated) and empty ones, so windows are
                // merged in any order rather than the whole packet dropped; only a bitmap that
                // cannot be read is an error.
                if (blen > 32) return bad("NSEC bitmap longer than 32 bytes", p);
                if (p + 2 + blen > end) return bad("NSEC bitmap runs past its rdata", p);
                for (size_t i = 0; i < blen; ++i)
                    for (int bit = 0; bit < 8; ++bit)
                        if (msg[p + 2 + i] & (0x80 >> bit))
                            n.types.push_back(static_cast<uint16_t>(window << 8 | (i * 8 + bit)));
                p += 2 + blen;
            }
            std::sort(n.types.begin(), n.types.end());
            n.types.erase(std::unique(n.types.begin(), n.types.end()), n.types.end());
            return mdns_rdata{std::move(n)};
        }
        default:
            return mdns_rdata{mdns_opaque{{msg.begin() + static_cast<ptrdiff_t>(start),
                                           msg.begin() + static_cast<ptrdiff_t>(end)}}};
    }
}

result<mdns_record> read_record(std::span<const uint8_t> msg, size_t& pos) {
    mdns_record r;
    r.name = MW_TRY(read_name(msg, pos, msg.size()));
    if (msg.size() - pos < 10) return bad("truncated record header", pos);
    r.type = read_u16(msg, pos);
    std::tie(r.rclass, r.cache_flush) = split_class(read_u16(msg, pos + 2));
    r.ttl = static_cast<uint32_t>(read_u16(msg, pos + 4)) << 16 | read_u16(msg, pos + 6);
    size_t rdlen = read_u16(msg, pos + 8);
    pos += 10;
    if (rdlen > msg.size() - pos) return bad("rdata runs past the packet", pos);
    r.data = MW_TRY(read_rdata(msg, r.type, pos, pos + rdlen));
    pos += rdlen;
    return r;
}

// Name compression for the encoder: each suffix written so far (as lower-cased length-prefixed
// labels) -> its offset, for offsets a pointer can reach (below 0x4000).
class name_writer {
public:
    explicit name_writer(std::vector<uint8_t>& out) : out_(out) {}

    void write(const mdns_name& n, bool compress) {
        for (size_t i = 0; i < n.labels.size(); ++i) {
            std::string key = suffix_key(n, i);
            if (compress) {
                if (auto it = seen_.find(key); it != seen_.end()) {
                    out_.push_back(static_cast<uint8_t>(0xC0 | it->second >> 8));
                    out_.push_back(static_cast<uint8_t>(it->second));
                    return;
                }
                if (out_.size() < 0x4000) seen_.emplace(std::move(key), out_.size());
            }
            out_.push_back(static_cast<uint8_t>(n.labels[i].size()));
            out_.insert(out_.end(), n.labels[i].begin(), n.labels[i].end());
        }
        out_.push_back(0);
    }

private:
    static std::string suffix_key(const mdns_name& n, size_t from) {
        std::string k;
        for (size_t i = from; i < n.labels.size(); ++i) {
            k.push_back(static_cast<char>(n.labels[i].size()));
            k += lower(n.labels[i]);
        }
        return k;
    }

    std::vector<uint8_t>& out_;
    std::unordered_map<std::string, size_t> seen_;
};

std::optional<error> check_name(const mdns_name& n) {
    if (!n.valid()) return error{errc::invalid_argument, "mdns: invalid name '" + n.str() + "'"};
    return std::nullopt;
}

// Writes the rdata of r (names through `names`, compressed when `compress`).
std::optional<error> write_rdata(const mdns_record& r, std::vector<uint8_t>& out,
                                 name_writer& names, bool compress) {
    byte_writer w(out);
    return std::visit(
        [&](const auto& d) -> std::optional<error> {
            using T = std::decay_t<decltype(d)>;
            if constexpr (std::is_same_v<T, mdns_opaque>) {
                w.bytes(d.bytes);
            } else if constexpr (std::is_same_v<T, std::array<uint8_t, 4>> ||
                                 std::is_same_v<T, std::array<uint8_t, 16>>) {
                w.bytes(d.data(), d.size());
            } else if constexpr (std::is_same_v<T, mdns_name>) {
                if (auto e = check_name(d)) return e;
                names.write(d, compress);
            } else if constexpr (std::is_same_v<T, mdns_srv>) {
                if (auto e = check_name(d.target)) return e;
                w.u16(d.priority);
                w.u16(d.weight);
                w.u16(d.port);
                names.write(d.target, compress);
            } else if constexpr (std::is_same_v<T, mdns_txt>) {
                for (const auto& s : d.strings) {
                    if (s.size() > 255)
                        return error{errc::invalid_argument, "mdns: TXT string over 255 bytes"};
                    w.u8(static_cast<uint8_t>(s.size()));
                    w.text(s);
                }
                // RFC 6763 §6.1: a TXT record holds at least one (possibly empty) string.
                if (d.strings.empty()) w.u8(0);
            } else if constexpr (std::is_same_v<T, mdns_nsec>) {
                if (auto e = check_name(d.next)) return e;
                if (!std::is_sorted(d.types.begin(), d.types.end()) ||
                    std::adjacent_find(d.types.begin(), d.types.end()) != d.types.end())
                    return error{errc::invalid_argument, "mdns: NSEC types not ascending"};
                // RFC 6762 §18.14: the next domain name in NSEC is never compressed.
                names.write(d.next, false);
                size_t i = 0;
                while (i < d.types.size()) {
                    uint8_t window = static_cast<uint8_t>(d.types[i] >> 8);
                    std::array<uint8_t, 32> bitmap{};
                    size_t used = 0;
                    for (; i < d.types.size() && (d.types[i] >> 8) == window; ++i) {
                        uint8_t low = static_cast<uint8_t>(d.types[i]);
                        bitmap[low / 8] |= static_cast<uint8_t>(0x80 >> (low % 8));
                        used = std::max<size_t>(used, low / 8 + 1);
                    }
                    w.u8(window);
                    w.u8(static_cast<uint8_t>(used));
                    w.bytes(bitmap.data(), used);
                }
            }
            return std::nullopt;
        },
        r.data);
}

std::optional<error> write_record(const mdns_record& r, std::vector<uint8_t>& out,
                                  name_writer& names) {
    if (auto e = check_name(r.name)) return e;
    names.write(r.name, true);
    byte_writer w(out);
    w.u16(r.type);
    w.u16(static_cast<uint16_t>(r.rclass | (r.cache_flush ? mdns_class_top_bit : 0)));
    w.u16(static_cast<uint16_t>(r.ttl >> 16));
    w.u16(static_cast<uint16_t>(r.ttl));
    size_t len_at = out.size();
    w.u16(0);
    if (auto e = write_rdata(r, out, names, true)) return e;
    size_t rdlen = out.size() - len_at - 2;
    if (rdlen > 0xFFFF) return error{errc::invalid_argument, "mdns: rdata over 65535 bytes"};
    out[len_at] = static_cast<uint8_t>(rdlen >> 8);
    out[len_at + 1] = static_cast<uint8_t>(rdlen);
    return std::nullopt;
}

}  // namespace

mdns_name mdns_name::from_dotted(std::string_view dotted) {
    mdns_name n;
    while (!dotted.empty()) {
        size_t dot = dotted.find('.');
        n.labels.emplace_back(dotted.substr(0, dot));
        if (dot == std::string_view::npos) break;
        dotted.remove_prefix(dot + 1);
    }
    return n;
}

std::string mdns_name::str() const {
    std::string s;
    for (const auto& l : labels) {
        if (!s.empty()) s += '.';
        s += l;
    }
    return s;
}

size_t mdns_name::wire_size() const noexcept {
    size_t n = 1;
    for (const auto& l : labels) n += 1 + l.size();
    return n;
}

bool mdns_name::valid() const noexcept {
    for (const auto& l : labels)
        if (l.empty() || l.size() > max_label) return false;
    return wire_size() <= max_wire;
}

mdns_name mdns_name::prepend(std::string label) const {
    mdns_name n;
    n.labels.reserve(labels.size() + 1);
    n.labels.push_back(std::move(label));
    n.labels.insert(n.labels.end(), labels.begin(), labels.end());
    return n;
}

bool mdns_label_equal(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
}

bool operator==(const mdns_name& a, const mdns_name& b) noexcept {
    if (a.labels.size() != b.labels.size()) return false;
    for (size_t i = 0; i < a.labels.size(); ++i)
        if (!mdns_label_equal(a.labels[i], b.labels[i])) return false;
    return true;
}

namespace {
// Rdata equality as std::variant's == defines it, without it: that one reaches the alternative
// through std::get, which may throw bad_variant_access (not for the index it has just compared,
// but bugprone-exception-escape cannot see that), and same_record is noexcept. get_if never
// throws, and every alternative's == is noexcept.
template <size_t... i>
bool rdata_equal(const mdns_rdata& a, const mdns_rdata& b, std::index_sequence<i...>) noexcept {
    if (a.index() != b.index()) return false;
    return a.valueless_by_exception() ||
           ((a.index() == i && *std::get_if<i>(&a) == *std::get_if<i>(&b)) || ...);
}
}  // namespace

bool mdns_record::same_record(const mdns_record& o) const noexcept {
    return type == o.type && rclass == o.rclass && name == o.name &&
           rdata_equal(data, o.data, std::make_index_sequence<std::variant_size_v<mdns_rdata>>{});
}

std::vector<uint8_t> mdns_record::canonical_rdata() const {
    mdns_record copy = *this;
    auto lower_name = [](mdns_name& n) {
        for (auto& l : n.labels) l = lower(l);
    };
    if (auto* n = std::get_if<mdns_name>(&copy.data)) lower_name(*n);
    if (auto* s = std::get_if<mdns_srv>(&copy.data)) lower_name(s->target);
    if (auto* s = std::get_if<mdns_nsec>(&copy.data)) lower_name(s->next);
    std::vector<uint8_t> out;
    name_writer names(out);
    if (write_rdata(copy, out, names, false)) out.clear();
    return out;
}

result<mdns_message> mdns_message::parse(std::span<const uint8_t> bytes) {
    if (bytes.size() > max_size)
        return error{errc::parse_error,
                     "mdns: packet of " + std::to_string(bytes.size()) + " bytes (max 9000)"};
    if (bytes.size() < 12) return bad("truncated header", bytes.size());
    mdns_message m;
    m.id = read_u16(bytes, 0);
    m.flags = read_u16(bytes, 2);
    size_t counts[4];
    for (int i = 0; i < 4; ++i) counts[i] = read_u16(bytes, 4 + 2 * i);
    size_t pos = 12;
    for (size_t i = 0; i < counts[0]; ++i) {
        mdns_question q;
        q.name = MW_TRY(read_name(bytes, pos, bytes.size()));
        if (bytes.size() - pos < 4) return bad("truncated question", pos);
        q.type = read_u16(bytes, pos);
        std::tie(q.qclass, q.unicast_response) = split_class(read_u16(bytes, pos + 2));
        pos += 4;
        m.questions.push_back(std::move(q));
    }
    std::vector<mdns_record>* sections[3] = {&m.answers, &m.authorities, &m.additionals};
    for (int s = 0; s < 3; ++s)
        for (size_t i = 0; i < counts[s + 1]; ++i)
            sections[s]->push_back(MW_TRY(read_record(bytes, pos)));
    if (pos != bytes.size()) return bad("trailing bytes after the last record", pos);
    return m;
}

result<std::vector<uint8_t>> mdns_message::encode() const {
    if (questions.size() > 0xFFFF || answers.size() > 0xFFFF || authorities.size() > 0xFFFF ||
        additionals.size() > 0xFFFF)
        return error{errc::invalid_argument, "mdns: too many entries in a section"};
    std::vector<uint8_t> out;
    out.reserve(512);
    byte_writer w(out);
    w.u16(id);
    w.u16(flags);
    w.u16(static_cast<uint16_t>(questions.size()));
    w.u16(static_cast<uint16_t>(answers.size()));
    w.u16(static_cast<uint16_t>(authorities.size()));
    w.u16(static_cast<uint16_t>(additionals.size()));
    name_writer names(out);
    for (const auto& q : questions) {
        if (auto e = check_name(q.name)) return *e;
        names.write(q.name, true);
        w.u16(q.type);
        w.u16(static_cast<uint16_t>(q.qclass | (q.unicast_response ? mdns_class_top_bit : 0)));
    }
    for (const auto* section : {&answers, &authorities, &additionals})
        for (const auto& r : *section)
            if (auto e = write_record(r, out, names)) return *e;
    if (out.size() > max_size)
        return error{errc::invalid_argument,
                     "mdns: message of " + std::to_string(out.size()) + " bytes (max 9000)"};
    return out;
}

}  // namespace mw::meshd
