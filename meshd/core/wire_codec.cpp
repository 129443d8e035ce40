#include "meshd/core/wire_codec.hpp"

#include <netinet/in.h>
#include <sodium.h>

#include <cstring>
#include <exception>
#include <utility>

#include "meshd/core/byte_io.hpp"

namespace mw::meshd {

namespace {

error bad(msg_type t, const std::string& why) {
    return error(errc::parse_error, std::string(to_string(t)) + ": " + why);
}

void write_id(byte_writer& w, const node_id& id) {
    w.bytes(id.data(), node_id::size);
}

node_id read_id(byte_reader& r) {
    auto v = r.view(node_id::size);
    return r.ok() ? node_id::from_bytes(v.data()) : node_id{};
}

status write_record(byte_writer& w, const peer_record& rec) {
    auto bytes = rec.encode();
    if (!bytes) return bytes.err();
    w.u16(static_cast<uint16_t>(bytes->size()));
    w.bytes(*bytes);
    return {};
}

result<peer_record> read_record(byte_reader& r, msg_type t) {
    size_t len = r.u16();
    auto bytes = r.view(len);
    if (!r.ok()) return bad(t, "truncated record");
    auto rec = peer_record::decode(bytes);
    if (!rec) return bad(t, rec.err().message);
    return rec;
}

void write_endpoint(byte_writer& w, const wg_endpoint& e) {
    w.u8(e.address.is_v4() ? 4 : 6);
    w.bytes(e.address.data(), e.address.byte_len());
    w.u16(e.port);
}

wg_endpoint read_endpoint(byte_reader& r) {
    uint8_t fam = r.u8();
    size_t len = fam == 4 ? 4 : fam == 6 ? 16 : 0;
    if (len == 0) {
        r.fail();
        return {};
    }
    auto bytes = r.view(len);
    uint16_t port = r.u16();
    if (!r.ok()) return {};
    auto a = ip_address::from_bytes(fam == 4 ? AF_INET : AF_INET6, bytes.data(), len);
    if (!a || port == 0) {
        r.fail();
        return {};
    }
    return wg_endpoint{*a, port};
}

void write_cookie(byte_writer& w, const cookie_bytes& c) {
    w.bytes(c.data(), c.size());
}

cookie_bytes read_cookie(byte_reader& r) {
    cookie_bytes c{};
    r.copy(c.data(), c.size());
    return c;
}

template <class M>
void write_session(byte_writer& w, const M& m) {
    w.u64(m.request_id);
    if constexpr (std::is_same_v<M, relay_session_request_msg>) write_cookie(w, m.cookie);
    w.u64(m.session_id);
    write_id(w, m.from);
    write_id(w, m.to);
}

template <class M>
void read_session(byte_reader& r, M& m) {
    m.request_id = r.u64();
    if constexpr (std::is_same_v<M, relay_session_request_msg>) m.cookie = read_cookie(r);
    m.session_id = r.u64();
    m.from = read_id(r);
    m.to = read_id(r);
}

struct body_encoder {
    byte_writer& w;

    status operator()(const hello_msg& m) {
        if (m.flags & ~hello_msg::known_flags) {
            return error(errc::invalid_argument, "HELLO: unknown flags");
        }
        w.u64(m.request_id);
        write_cookie(w, m.cookie);
        w.u8(m.flags);
        MW_TRY_STATUS(write_record(w, m.record));
        if (m.flags & hello_msg::flag_digest) {
            w.u32(m.count);
            w.bytes(m.digest.data(), m.digest.size());
        }
        return {};
    }
    status operator()(const records_msg& m) {
        if (m.records.empty() || m.records.size() > 255) {
            return error(errc::invalid_argument, "RECORDS: needs 1-255 records");
        }
        w.u64(m.request_id);
        w.u8(static_cast<uint8_t>(m.records.size()));
        for (const auto& rec : m.records) MW_TRY_STATUS(write_record(w, rec));
        return {};
    }
    status operator()(const ping_msg& m) {
        w.u64(m.request_id);
        static constexpr uint8_t zeros[ping_padding] = {};
        w.bytes(zeros, sizeof zeros);
        for (size_t left = m.pad; left > 0;) {
            const size_t n = std::min(left, sizeof zeros);
            w.bytes(zeros, n);
            left -= n;
        }
        return {};
    }
    status operator()(const pong_msg& m) {
        if (!m.observed.address.valid() || m.observed.port == 0) {
            return error(errc::invalid_argument, "PONG: observed address needs an IP and port");
        }
        w.u64(m.request_id);
        write_cookie(w, m.cookie);
        write_endpoint(w, m.observed);
        return {};
    }
    status operator()(const relay_session_request_msg& m) {
        write_session(w, m);
        return {};
    }
    status operator()(const relay_session_accept_msg& m) {
        write_session(w, m);
        return {};
    }
    status operator()(const relay_session_reject_msg& m) {
        write_session(w, m);
        w.u8(static_cast<uint8_t>(m.reason));
        return {};
    }
    status operator()(const dialback_request_msg& m) {
        if (!m.target.address.valid() || m.target.port == 0) {
            return error(errc::invalid_argument, "DIALBACK_REQUEST: target needs an IP and port");
        }
        w.u64(m.nonce);
        write_endpoint(w, m.target);
        return {};
    }
    status operator()(const dialback_probe_msg& m) {
        w.u64(m.nonce);
        return {};
    }
    status operator()(const cookie_reply_msg& m) {
        w.u64(m.request_id);
        write_cookie(w, m.cookie);
        return {};
    }
    status operator()(const hello_wanted_msg&) { return {}; }
    status operator()(const relay_session_kept_msg& m) {
        if (m.keep_ms == 0 || m.keep_ms > relay_session_kept_msg::max_keep_ms) {
            return error(errc::invalid_argument, "RELAY_SESSION_KEPT: keep window out of range");
        }
        w.u64(m.request_id);
        w.u64(m.session_id);
        w.u32(m.keep_ms);
        return {};
    }
    status operator()(const ae_digest_msg& m) {
        const uint8_t known = ae_digest_msg::flag_reply | ae_digest_msg::flag_buckets;
        if (m.flags & ~known) return error(errc::invalid_argument, "AE_DIGEST: unknown flags");
        const bool with = m.flags & ae_digest_msg::flag_buckets;
        if (with != (m.buckets.size() == ae_buckets) || (!with && !m.buckets.empty())) {
            return error(errc::invalid_argument, "AE_DIGEST: buckets do not match the flag");
        }
        w.u64(m.request_id);
        write_cookie(w, m.cookie);
        w.u8(m.flags);
        w.u32(m.count);
        w.bytes(m.digest.data(), m.digest.size());
        for (uint64_t b : m.buckets) w.u64(b);
        return {};
    }
    status operator()(const ae_summary_msg& m) {
        if (m.entries.size() > ae_max_summary_entries || m.last < m.first) {
            return error(errc::invalid_argument, "AE_SUMMARY: too many entries or empty range");
        }
        for (size_t i = 0; i < m.entries.size(); ++i) {
            const auto& e = m.entries[i];
            if (e.id < m.first || m.last < e.id || (i && !(m.entries[i - 1].id < e.id))) {
                return error(errc::invalid_argument, "AE_SUMMARY: entries not ascending in range");
            }
        }
        w.u64(m.request_id);
        write_id(w, m.first);
        write_id(w, m.last);
        w.u8(static_cast<uint8_t>(m.entries.size()));
        for (const auto& e : m.entries) {
            write_id(w, e.id);
            w.u64(e.seq);
        }
        return {};
    }
    status operator()(const ae_want_msg& m) {
        if (m.ids.empty() || m.ids.size() > ae_max_want_ids) {
            return error(errc::invalid_argument,
                         "AE_WANT: needs 1-" + std::to_string(ae_max_want_ids) + " IDs");
        }
        for (size_t i = 1; i < m.ids.size(); ++i) {
            if (!(m.ids[i - 1] < m.ids[i])) {
                return error(errc::invalid_argument, "AE_WANT: IDs not ascending");
            }
        }
        w.u64(m.request_id);
        w.u8(static_cast<uint8_t>(m.ids.size()));
        for (const auto& id : m.ids) write_id(w, id);
        return {};
    }
};

result<message_body> decode_body(msg_type t, byte_reader& r) {
    switch (t) {
        case msg_type::hello: {
            hello_msg m;
            m.request_id = r.u64();
            m.cookie = read_cookie(r);
            m.flags = r.u8();
            if (m.flags & ~hello_msg::known_flags) {
                return bad(t, "unknown flags");
            }
            m.record = MW_TRY(read_record(r, t));
            if (m.flags & hello_msg::flag_digest) {
                m.count = r.u32();
                r.copy(m.digest.data(), m.digest.size());
            }
            return message_body(std::move(m));
        }
        case msg_type::records: {
            records_msg m;
            m.request_id = r.u64();
            size_t n = r.u8();
            if (r.ok() && n == 0) return bad(t, "no records");
            for (size_t i = 0; i < n; ++i) m.records.push_back(MW_TRY(read_record(r, t)));
            return message_body(std::move(m));
        }
        case msg_type::ping: {
            ping_msg m;
            m.request_id = r.u64();
            auto pad = r.view(ping_padding);
            if (!r.ok()) return bad(t, "truncated padding");
            // A path MTU probe's extra padding: the rest, zero too.
            const size_t extra = r.remaining();
            auto more = r.view(extra);
            if (extra > UINT16_MAX) return bad(t, "padding too long");
            m.pad = static_cast<uint16_t>(extra);
            for (uint8_t b : more) {
                if (b != 0) return bad(t, "padding not zero");
            }
            for (uint8_t b : pad) {
                if (b != 0) return bad(t, "padding not zero");
            }
            return message_body(m);
        }
        case msg_type::pong: {
            pong_msg m;
            m.request_id = r.u64();
            m.cookie = read_cookie(r);
            m.observed = read_endpoint(r);
            return message_body(m);
        }
        case msg_type::relay_session_request: {
            relay_session_request_msg m;
            read_session(r, m);
            return message_body(m);
        }
        case msg_type::relay_session_accept: {
            relay_session_accept_msg m;
            read_session(r, m);
            return message_body(m);
        }
        case msg_type::relay_session_reject: {
            relay_session_reject_msg m;
            read_session(r, m);
            uint8_t reason = r.u8();
            if (reason > static_cast<uint8_t>(reject_reason::capacity)) {
                return bad(t, "unknown reject reason " + std::to_string(reason));
            }
            m.reason = static_cast<reject_reason>(reason);
            return message_body(m);
        }
        case msg_type::dialback_request: {
            dialback_request_msg m;
            m.nonce = r.u64();
            m.target = read_endpoint(r);
            return message_body(m);
        }
        case msg_type::dialback_probe: {
            dialback_probe_msg m;
            m.nonce = r.u64();
            return message_body(m);
        }
        case msg_type::cookie_reply: {
            cookie_reply_msg m;
            m.request_id = r.u64();
            m.cookie = read_cookie(r);
            return message_body(m);
        }
        case msg_type::hello_wanted:
            return message_body(hello_wanted_msg{});
        case msg_type::relay_session_kept: {
            relay_session_kept_msg m;
            m.request_id = r.u64();
            m.session_id = r.u64();
            m.keep_ms = r.u32();
            if (m.keep_ms == 0 || m.keep_ms > relay_session_kept_msg::max_keep_ms) {
                return bad(t, "keep window out of range");
            }
            return message_body(m);
        }
        case msg_type::ae_digest: {
            ae_digest_msg m;
            m.request_id = r.u64();
            m.cookie = read_cookie(r);
            m.flags = r.u8();
            if (m.flags & ~(ae_digest_msg::flag_reply | ae_digest_msg::flag_buckets)) {
                return bad(t, "unknown flags");
            }
            m.count = r.u32();
            r.copy(m.digest.data(), m.digest.size());
            if (m.flags & ae_digest_msg::flag_buckets) {
                m.buckets.resize(ae_buckets);
                for (auto& b : m.buckets) b = r.u64();
            }
            return message_body(std::move(m));
        }
        case msg_type::ae_summary: {
            ae_summary_msg m;
            m.request_id = r.u64();
            m.first = read_id(r);
            m.last = read_id(r);
            size_t n = r.u8();
            if (!r.ok()) return bad(t, "truncated");
            if (m.last < m.first) return bad(t, "empty range");
            if (n > ae_max_summary_entries) return bad(t, "too many entries");
            m.entries.reserve(n);
            for (size_t i = 0; i < n; ++i) {
                ae_summary_entry e;
                e.id = read_id(r);
                e.seq = r.u64();
                if (!r.ok()) return bad(t, "truncated entry");
                if (e.id < m.first || m.last < e.id) return bad(t, "entry outside its range");
                if (!m.entries.empty() && !(m.entries.back().id < e.id)) {
                    return bad(t, "entries not strictly ascending");
                }
                m.entries.push_back(e);
            }
            return message_body(std::move(m));
        }
        case msg_type::ae_want: {
            ae_want_msg m;
            m.request_id = r.u64();
            size_t n = r.u8();
            if (!r.ok()) return bad(t, "truncated");
            if (n == 0 || n > ae_max_want_ids) return bad(t, "needs 1-39 IDs");
            m.ids.reserve(n);
            for (size_t i = 0; i < n; ++i) {
                node_id id = read_id(r);
                if (!r.ok()) return bad(t, "truncated ID");
                if (!m.ids.empty() && !(m.ids.back() < id)) return bad(t, "IDs not ascending");
                m.ids.push_back(id);
            }
            return message_body(std::move(m));
        }
        case msg_type::relay_data:     // not control messages: classify() routes them
        case msg_type::nat_keepalive:  // before any decode
            break;
    }
    return error(errc::parse_error,
                 "unknown control message type " + std::to_string(static_cast<unsigned>(t)));
}

bool is_control_type(uint8_t t) {
    return t >= static_cast<uint8_t>(msg_type::hello) &&
           t <= static_cast<uint8_t>(msg_type::hello_wanted);
}

}  // namespace

bool is_known_control_type(uint8_t t) noexcept {
    return is_control_type(t);
}

const char* to_string(msg_type t) noexcept {
    switch (t) {
        case msg_type::hello:
            return "HELLO";
        case msg_type::records:
            return "RECORDS";
        case msg_type::ping:
            return "PING";
        case msg_type::pong:
            return "PONG";
        case msg_type::relay_session_request:
            return "RELAY_SESSION_REQUEST";
        case msg_type::relay_session_accept:
            return "RELAY_SESSION_ACCEPT";
        case msg_type::relay_session_reject:
            return "RELAY_SESSION_REJECT";
        case msg_type::dialback_request:
            return "DIALBACK_REQUEST";
        case msg_type::dialback_probe:
            return "DIALBACK_PROBE";
        case msg_type::cookie_reply:
            return "COOKIE_REPLY";
        case msg_type::ae_digest:
            return "AE_DIGEST";
        case msg_type::ae_summary:
            return "AE_SUMMARY";
        case msg_type::ae_want:
            return "AE_WANT";
        case msg_type::relay_session_kept:
            return "RELAY_SESSION_KEPT";
        case msg_type::hello_wanted:
            return "HELLO_WANTED";
        case msg_type::relay_data:
            return "RELAY_DATA";
        case msg_type::nat_keepalive:
            return "NAT_KEEPALIVE";
    }
    return "UNKNOWN";
}

namespace {
// Each body alternative's msg_type, by its index in message_body.
template <size_t... i>
constexpr std::array<msg_type, sizeof...(i)> body_types(std::index_sequence<i...>) {
    return {std::variant_alternative_t<i, message_body>::type...};
}
constexpr auto body_type_of_index =
    body_types(std::make_index_sequence<std::variant_size_v<message_body>>{});
}  // namespace

msg_type control_message::type() const noexcept {
    // By index, not std::visit: type() is noexcept and visit throws bad_variant_access for a
    // body left valueless by a throwing assignment. That case still ends the process, as the
    // exception escaping noexcept did.
    const size_t i = body.index();
    if (i >= body_type_of_index.size()) std::terminate();
    return body_type_of_index[i];
}

result<std::vector<uint8_t>> encode_plaintext(const control_message& m) {
    if (m.recipient.is_zero() && m.type() != msg_type::ping) {
        return error(errc::invalid_argument,
                     std::string(to_string(m.type())) + ": only a PING may name no recipient");
    }
    std::vector<uint8_t> out;
    out.reserve(256);
    byte_writer w(out);
    w.bytes(m.sender_key.data(), wg_key::size);
    write_id(w, m.recipient);
    w.u64(m.epoch);
    w.u64(m.counter);
    MW_TRY_STATUS(std::visit(body_encoder{w}, m.body));
    w.bytes(m.tag.data(), m.tag.size());
    if (out.size() > max_datagram_of_type(static_cast<uint8_t>(m.type())) - psk_sealer::overhead) {
        return error(errc::invalid_argument, std::string(to_string(m.type())) + ": " +
                                                 std::to_string(out.size()) +
                                                 " bytes does not fit one datagram");
    }
    return out;
}

result<control_message> decode_plaintext(uint8_t type, std::span<const uint8_t> plaintext) {
    if (!is_control_type(type)) {
        return error(errc::parse_error,
                     "unknown control message type " + std::to_string(static_cast<unsigned>(type)));
    }
    auto t = static_cast<msg_type>(type);
    if (plaintext.size() > max_datagram_of_type(type) - psk_sealer::overhead) {
        return bad(t, "oversized");
    }
    if (plaintext.size() < envelope_size + pair_tag_size) return bad(t, "truncated envelope");
    byte_reader r(plaintext.first(plaintext.size() - pair_tag_size));
    control_message m;
    m.sender_key = wg_key::from_bytes(r.view(wg_key::size).data());
    m.sender = node_id::of(m.sender_key);
    m.recipient = read_id(r);
    m.epoch = r.u64();
    m.counter = r.u64();
    if (m.recipient.is_zero() && t != msg_type::ping) return bad(t, "no recipient");
    m.body = MW_TRY(decode_body(t, r));
    if (!r.ok()) return bad(t, "truncated");
    if (!r.at_end()) return bad(t, "trailing bytes");
    std::memcpy(m.tag.data(), plaintext.data() + plaintext.size() - pair_tag_size, pair_tag_size);
    return m;
}

pair_tag compute_pair_tag(const symmetric_key& key, uint8_t type,
                          std::span<const uint8_t> plaintext) {
    pair_tag tag{};
    if (plaintext.size() < pair_tag_size) return tag;
    const uint8_t header[psk_sealer::header_size] = {psk_sealer::magic0, psk_sealer::magic1,
                                                     psk_sealer::version, type};
    crypto_generichash_state st;
    crypto_generichash_init(&st, key.data(), key.size(), tag.size());
    crypto_generichash_update(&st, header, sizeof header);
    crypto_generichash_update(&st, plaintext.data(), plaintext.size() - pair_tag_size);
    crypto_generichash_final(&st, tag.data(), tag.size());
    return tag;
}

bool pair_tag_valid(const symmetric_key& key, uint8_t type, std::span<const uint8_t> plaintext) {
    if (plaintext.size() < pair_tag_size) return false;
    auto want = compute_pair_tag(key, type, plaintext);
    return sodium_memcmp(want.data(), plaintext.data() + plaintext.size() - pair_tag_size,
                         pair_tag_size) == 0;
}

result<std::vector<uint8_t>> seal_message(const psk_sealer& sealer, const symmetric_key& tag_key,
                                          const control_message& m, const aead_nonce& nonce) {
    auto plain = MW_TRY(encode_plaintext(m));
    const auto type = static_cast<uint8_t>(m.type());
    auto tag = compute_pair_tag(tag_key, type, plain);
    std::memcpy(plain.data() + plain.size() - pair_tag_size, tag.data(), pair_tag_size);
    return sealer.seal(type, plain, nonce);
}

result<opened_message> open_message(const psk_sealer& sealer, std::span<const uint8_t> datagram) {
    if (datagram.size() > max_datagram_of_type(datagram.size() > 3 ? datagram[3] : 0)) {
        return error(errc::parse_error,
                     "control datagram oversized (" + std::to_string(datagram.size()) + " bytes)");
    }
    // Cheap header checks before spending an AEAD open on it.
    if (classify(datagram) != frame_kind::control) {
        return error(errc::parse_error, "not a control datagram");
    }
    auto o = MW_TRY(sealer.open(datagram));
    opened_message out;
    out.message = MW_TRY(decode_plaintext(o.type, o.plaintext));
    out.plaintext = std::move(o.plaintext);
    return out;
}

frame_kind classify(std::span<const uint8_t> d) noexcept {
    if (d.size() < psk_sealer::header_size || d[0] != psk_sealer::magic0 ||
        d[1] != psk_sealer::magic1) {
        return frame_kind::invalid;
    }
    if (d[2] == psk_sealer::previous_version) {
        // A version-1 control datagram (a node not upgraded yet) still goes to the control
        // channel, which counts it as old_version: during a rolling upgrade that counter is how
        // an operator sees the mixed cluster. Version-1 RELAY_DATA is not forwarded.
        return is_control_type(d[3]) ? frame_kind::control : frame_kind::invalid;
    }
    if (d[2] != psk_sealer::version) return frame_kind::invalid;
    if (d[3] == static_cast<uint8_t>(msg_type::relay_data)) return frame_kind::relay_data;
    if (d[3] == static_cast<uint8_t>(msg_type::nat_keepalive)) {
        // Exactly the header: anything longer is not ours to guess at.
        return d.size() == nat_keepalive_size ? frame_kind::nat_keepalive : frame_kind::invalid;
    }
    if (is_control_type(d[3])) return frame_kind::control;
    return frame_kind::invalid;
}

std::array<uint8_t, nat_keepalive_size> nat_keepalive_datagram() noexcept {
    return {psk_sealer::magic0, psk_sealer::magic1, psk_sealer::version,
            static_cast<uint8_t>(msg_type::nat_keepalive)};
}

void write_relay_data_header(uint64_t session_id, uint8_t* out) noexcept {
    out[0] = psk_sealer::magic0;
    out[1] = psk_sealer::magic1;
    out[2] = psk_sealer::version;
    out[3] = static_cast<uint8_t>(msg_type::relay_data);
    for (int i = 0; i < 8; ++i) out[4 + i] = static_cast<uint8_t>(session_id >> (56 - 8 * i));
}

std::optional<uint64_t> peek_relay_data_session(std::span<const uint8_t> frame) noexcept {
    if (classify(frame) != frame_kind::relay_data || frame.size() <= relay_data_header_size ||
        frame.size() - relay_data_header_size > max_relay_payload) {
        return std::nullopt;
    }
    uint64_t id = 0;
    for (int i = 0; i < 8; ++i) id = id << 8 | frame[4 + i];
    return id;
}

result<relay_data_view> decode_relay_data(std::span<const uint8_t> frame) {
    if (classify(frame) != frame_kind::relay_data) {
        return error(errc::parse_error, "RELAY_DATA: bad header");
    }
    if (frame.size() <= relay_data_header_size) {
        return error(errc::parse_error, "RELAY_DATA: no payload");
    }
    if (frame.size() - relay_data_header_size > max_relay_payload) {
        return error(errc::parse_error, "RELAY_DATA: oversized");
    }
    relay_data_view v;
    for (int i = 0; i < 8; ++i) v.session_id = v.session_id << 8 | frame[4 + i];
    v.payload = frame.subspan(relay_data_header_size);
    return v;
}

}  // namespace mw::meshd
