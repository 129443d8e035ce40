// Control messages of the meshd protocol (version 2) and their binary encoding.
//
// A control datagram is psk_sealer's envelope around a plaintext laid out as
//   32   sender's static X25519 public key (its WireGuard key; node ID = BLAKE2b-256 of it)
//   32   recipient node ID (all zero only in a PING to an address whose node we do not know)
//   u64  sender's boot epoch   } replay protection without clocks (replay_window): epochs grow
//   u64  sender's counter      } across restarts, the counter per message within one
//   ...  the type-specific body
//   16   pair tag = BLAKE2b-128(key = pair_key(sender, recipient), the 4-byte datagram header |
//        everything above); for a PING with no recipient the key is psk_sealer::anon_key()
// The PSK seal keeps non-members out; the pair tag proves which node sent it and for whom: a
// PSK holder can compute neither for a pair it is not part of.
//
// Bodies (big-endian, fixed widths, no trailing bytes). Request IDs are random (the caller's
// RNG): an answer counts only for an outstanding request, so they cannot be guessed ahead.
// Cookies (16 bytes) prove the sender's return address to a responder (see control_channel):
// zero when the sender has none yet.
//
//   type  name                   body
//   0x01  HELLO                  u64 request id, cookie, u8 flags (bit 0: send me RECORDS;
//                                bit 1: a digest follows; other bits must be 0), u16 length,
//                                the sender's signed peer_record (the record's node ID must be
//                                the sender's), [u32 records held, 16 digest: the sender's
//                                store as AE_DIGEST's, its own record included]
//   0x02  RECORDS                u64 request id (the HELLO's; 0 for a pushed change),
//                                u8 count (1..), each: u16 length, signed peer_record
//   0x03  PING                   u64 request id, ping_padding zero bytes (a PING is never
//                                smaller than its PONG: answering an unproven address is 1:1)
//   0x04  PONG                   u64 the PING's request id, cookie for the PING's source,
//                                observed source of the PING: u8 family (4|6), address, u16 port
//   0x05  RELAY_SESSION_REQUEST  u64 request id, cookie, u64 session id, 32 from node, 32 to node
//   0x06  RELAY_SESSION_ACCEPT   u64 the request's id, u64 session id, 32 from node, 32 to node
//   0x07  RELAY_SESSION_REJECT   u64 the request's id, u64 session id, 32 from, 32 to, u8 reason
//   0x08  DIALBACK_REQUEST       u64 nonce, target: u8 family (4|6), address, u16 port
//                                (a node about to serve as relay asks another node to send a
//                                DIALBACK_PROBE to its advertised address, from a fresh port)
//   0x09  DIALBACK_PROBE         u64 nonce (the answer, arriving at the target if reachable)
//   0x0a  COOKIE_REPLY           u64 the request's id, cookie (instead of a larger answer to an
//                                address not proven yet: resend the request with this cookie)
//   0x0b  AE_DIGEST              anti-entropy (anti_entropy.hpp): u64 request id, cookie, u8 flags
//                                (bit 0: a reply, bit 1: bucket digests follow; other bits 0),
//                                u32 records held, 16 digest, [32 x u64 bucket digests]
//   0x0c  AE_SUMMARY             u64 the DIGEST's request id, 32 range start, 32 range end
//                                (node IDs, inclusive), u8 count (0..ae_max_summary_entries),
//                                each: 32 node ID, u64 seq; strictly ascending, inside the range
//   0x0d  AE_WANT                u64 the DIGEST's request id, u8 count (1..ae_max_want_ids),
//                                each: 32 node ID; strictly ascending
//   0x0e  RELAY_SESSION_KEPT     u64 the request's id, u64 session id, u32 keep window ms
//                                (1..86,400,000): the relay keeps the session while it hears the
//                                requester (issue 18; see "Announcing kept sessions" below)
//   0x0f  HELLO_WANTED           (no body) a relay lacks the recipient's record although it
//                                hears it: it dropped it when the node was revoked or not
//                                listed, and the node is admitted again. The node HELLOs that
//                                relay now instead of at its regular HELLO (every 5 minutes),
//                                which it would otherwise wait for: it never learns that its
//                                datagrams were dropped. An older node drops the type unopened.
//
// Announcing kept sessions (issue 18). Every decoder of this version and the ones before rejects
// trailing bytes and unknown flag bits (HELLO, peer_record), so nothing can be appended to an
// existing message without an older node dropping it. A relay that keeps idle sessions
// (relay_session_table::heard) says so in a message of its own, RELAY_SESSION_KEPT, sent just
// before each RELAY_SESSION_ACCEPT: an older node drops the unknown type unopened (counted as
// control_counters::unknown_type) and keeps refreshing every idle_session_refresh_ms, which the
// relay still honours; a relay older than this never sends it, so a node refreshes its sessions
// there as before. A lost or reordered RELAY_SESSION_KEPT costs only the next refresh.
//
// Types 0x01-0x7f are sealed control messages; 0x80-0xff are unsealed frames, of which 0x80
// RELAY_DATA and 0x81 NAT_KEEPALIVE exist:
//   "MW" 0x02 0x80 | u64 session id | WireGuard ciphertext (1..max_relay_payload bytes)
//   "MW" 0x02 0x81                   (exactly these 4 bytes, nothing else)
// RELAY_DATA is not sealed because WireGuard already authenticates and encrypts end to end; a
// relay forwards it only for a session it set up and only from the address that set it up.
// NAT_KEEPALIVE (issue 18) is the smallest datagram that keeps the NAT mapping of our control
// socket to a relay open between full probes (32 bytes on the wire over IPv4 against ~245 for a
// sealed PING). Unauthenticated on purpose: it asks for nothing and is never answered (no
// amplification, nothing to forge); receivers drop it before the control core and only count it
// (meshwire_nat_keepalives_received_total). A meshd older than this classifies 0x81 as invalid
// and counts it as malformed/junk: harmless during a rolling upgrade. Unsealed, so 0x81 cannot
// collide with a sealed type (0x01-0x7f), and it is not 0x80, so no relay forwards it.
//
// New messages get a new type number and a body decoder; an unknown type is an error value, so a
// node never guesses at a newer peer's message. Decoders never throw and never read outside the
// buffer (byte_reader); anything malformed is errc::parse_error. Decoding does not check the pair
// tag (it needs keys): control_channel does, before anything else looks at the message.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <variant>
#include <vector>

#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "common/wireguard/wg_key.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/pair_key.hpp"
#include "meshd/core/peer_record.hpp"
#include "meshd/core/psk_sealer.hpp"

namespace mw::meshd {

enum class msg_type : uint8_t {
    hello = 0x01,
    records = 0x02,
    ping = 0x03,
    pong = 0x04,
    relay_session_request = 0x05,
    relay_session_accept = 0x06,
    relay_session_reject = 0x07,
    dialback_request = 0x08,
    dialback_probe = 0x09,
    cookie_reply = 0x0a,
    ae_digest = 0x0b,
    ae_summary = 0x0c,
    ae_want = 0x0d,
    relay_session_kept = 0x0e,
    hello_wanted = 0x0f,
    relay_data = 0x80,
    nat_keepalive = 0x81,
};

const char* to_string(msg_type t) noexcept;

using cookie_bytes = std::array<uint8_t, 16>;
using pair_tag = std::array<uint8_t, 16>;

using ae_digest_bytes = std::array<uint8_t, 16>;

struct hello_msg {
    static constexpr msg_type type = msg_type::hello;
    static constexpr uint8_t flag_want_records = 0x01;
    // The sender's store digest follows the record (anti-entropy's record_digest): the relay
    // answers with what the sender lacks, not with every record (issue 18).
    static constexpr uint8_t flag_digest = 0x02;
    // The sender does not know itself registered (no answer yet): the relay answers even when in
    // sync (its own record), so that the sender can slow down to hello_interval.
    static constexpr uint8_t flag_ack = 0x04;
    static constexpr uint8_t known_flags = flag_want_records | flag_digest | flag_ack;
    uint64_t request_id = 0;
    cookie_bytes cookie{};
    uint8_t flags = 0;
    peer_record record;
    uint32_t count = 0;  // with flag_digest: records held, our own included
    ae_digest_bytes digest{};
};

struct records_msg {
    static constexpr msg_type type = msg_type::records;
    uint64_t request_id = 0;  // the HELLO's; 0: pushed
    std::vector<peer_record> records;
};

struct ping_msg {
    static constexpr msg_type type = msg_type::ping;
    uint64_t request_id = 0;
    // Zero bytes after the fixed padding: a path MTU probe of a direct path (issue 15), padded so
    // that the datagram is as large as WireGuard's data frame for the inner size tried. A node
    // from before padded PINGs refuses the trailing bytes (no PONG): see path_mtu.hpp's users.
    uint16_t pad = 0;
};

struct pong_msg {
    static constexpr msg_type type = msg_type::pong;
    uint64_t request_id = 0;
    cookie_bytes cookie{};  // for the PING's source address, from the replier
    wg_endpoint observed;   // reflexive address: where the PING came from, as the replier saw it
};

struct relay_session_request_msg {
    static constexpr msg_type type = msg_type::relay_session_request;
    uint64_t request_id = 0;
    cookie_bytes cookie{};
    uint64_t session_id = 0;
    node_id from;
    node_id to;
};

struct relay_session_accept_msg {
    static constexpr msg_type type = msg_type::relay_session_accept;
    uint64_t request_id = 0;
    uint64_t session_id = 0;
    node_id from;
    node_id to;
};

enum class reject_reason : uint8_t {
    unspecified = 0,
    unknown_peer = 1,  // the relay has no session with / record of the target node
    rate_limited = 2,
    not_a_relay = 3,
    capacity = 4,
};

struct relay_session_reject_msg {
    static constexpr msg_type type = msg_type::relay_session_reject;
    uint64_t request_id = 0;
    uint64_t session_id = 0;
    node_id from;
    node_id to;
    reject_reason reason = reject_reason::unspecified;
};

struct hello_wanted_msg {
    static constexpr msg_type type = msg_type::hello_wanted;
};

struct relay_session_kept_msg {
    static constexpr msg_type type = msg_type::relay_session_kept;
    static constexpr uint32_t max_keep_ms = 24u * 3600 * 1000;
    uint64_t request_id = 0;  // the RELAY_SESSION_REQUEST's
    uint64_t session_id = 0;
    uint32_t keep_ms = 0;  // kept while the relay heard the requester within this
};

struct dialback_request_msg {
    static constexpr msg_type type = msg_type::dialback_request;
    uint64_t nonce = 0;
    wg_endpoint target;
};

struct dialback_probe_msg {
    static constexpr msg_type type = msg_type::dialback_probe;
    uint64_t nonce = 0;
};

struct cookie_reply_msg {
    static constexpr msg_type type = msg_type::cookie_reply;
    uint64_t request_id = 0;
    cookie_bytes cookie{};
};

// Anti-entropy between direct neighbours (anti_entropy.hpp). The digest is record_digest's: over
// the (node ID, seq) set the sender holds, its own record included, split in ae_buckets buckets
// by the node ID's top bits.
constexpr size_t ae_buckets = 32;
struct ae_digest_msg {
    static constexpr msg_type type = msg_type::ae_digest;
    static constexpr uint8_t flag_reply = 0x01;
    static constexpr uint8_t flag_buckets = 0x02;
    uint64_t request_id = 0;
    cookie_bytes cookie{};  // a request's, for the answerer (zero in a reply)
    uint8_t flags = 0;      // flag_buckets is set exactly when buckets holds ae_buckets values
    uint32_t count = 0;
    ae_digest_bytes digest{};
    std::vector<uint64_t> buckets;
};

struct ae_summary_entry {
    node_id id;
    uint64_t seq = 0;
    friend bool operator==(const ae_summary_entry&, const ae_summary_entry&) = default;
};

struct ae_summary_msg {
    static constexpr msg_type type = msg_type::ae_summary;
    uint64_t request_id = 0;
    node_id first;  // the range this page covers (inclusive): the sender holds nothing else in it
    node_id last;
    std::vector<ae_summary_entry> entries;
};

struct ae_want_msg {
    static constexpr msg_type type = msg_type::ae_want;
    uint64_t request_id = 0;
    std::vector<node_id> ids;
};

using message_body =
    std::variant<hello_msg, records_msg, ping_msg, pong_msg, relay_session_request_msg,
                 relay_session_accept_msg, relay_session_reject_msg, dialback_request_msg,
                 dialback_probe_msg, cookie_reply_msg, ae_digest_msg, ae_summary_msg, ae_want_msg,
                 relay_session_kept_msg, hello_wanted_msg>;

struct control_message {
    wg_key sender_key;  // the sender's static X25519 public key
    node_id sender;     // node_id::of(sender_key): filled in by decode_plaintext
    node_id recipient;  // zero: a first-contact PING (the only message allowed to name no one)
    uint64_t epoch = 0;
    uint64_t counter = 0;
    message_body body;
    pair_tag tag{};  // as received (decode) or as computed (seal_message)

    msg_type type() const noexcept;
};

// Size limits. Control datagrams stay below a typical path MTU (no IP fragmentation through NATs).
constexpr size_t max_control_datagram = 1400;
constexpr size_t envelope_size = wg_key::size + node_id::size + 8 + 8;  // before the body
constexpr size_t pair_tag_size = 16;
constexpr size_t max_control_plaintext = max_control_datagram - psk_sealer::overhead;
constexpr size_t relay_data_header_size = 12;
constexpr size_t max_relay_payload = 65535 - relay_data_header_size;
// The largest PONG body (IPv6 observed address) is 8 + 16 + 1 + 16 + 2 = 43 bytes; a PING's body
// is 8 + ping_padding = 43, so a PONG never outgrows the PING it answers.
constexpr size_t ping_padding = 35;
// A PING and nothing else may be larger than a control datagram: padded (ping_msg::pad) up to what
// an in-band probe may be (probe_frame.hpp: 32 + 1500), to measure a direct path's MTU.
constexpr size_t max_padded_ping_datagram = 32 + 1500;
// A sealed PING without `pad`; with it, this + pad bytes.
constexpr size_t ping_datagram_size =
    psk_sealer::overhead + envelope_size + 8 + ping_padding + pair_tag_size;
// The largest datagram of `type` (the first bytes of a control datagram carry it in the clear).
constexpr size_t max_datagram_of_type(uint8_t type) noexcept {
    return type == static_cast<uint8_t>(msg_type::ping) ? max_padded_ping_datagram
                                                        : max_control_datagram;
}
static_assert(envelope_size + 8 + 16 + 1 + 2 + peer_record::max_encoded_size + pair_tag_size <=
                  max_control_plaintext,
              "a HELLO with the largest record must fit one datagram");
// Anti-entropy pages, as many entries as fit one datagram.
constexpr size_t ae_max_summary_entries = 29;
constexpr size_t ae_max_want_ids = 39;
static_assert(envelope_size + 8 + 2 * node_id::size + 1 +
                      ae_max_summary_entries * (node_id::size + 8) + pair_tag_size <=
                  max_control_plaintext,
              "a full AE_SUMMARY page must fit one datagram");
static_assert(envelope_size + 8 + 1 + ae_max_want_ids * node_id::size + pair_tag_size <=
                  max_control_plaintext,
              "a full AE_WANT must fit one datagram");

// A sealed control type (0x01-0x7f), known to this version or not: a newer peer's message of a
// type this version does not know is counted (control_counters::unknown_type) and dropped.
constexpr bool is_sealed_type(uint8_t t) noexcept {
    return t >= 0x01 && t <= 0x7f;
}
// A sealed control type this version decodes.
bool is_known_control_type(uint8_t t) noexcept;

// Plaintext (envelope, body, m.tag as it is) for psk_sealer; fails if a field is invalid or it is
// too large.
result<std::vector<uint8_t>> encode_plaintext(const control_message& m);
// Inverse of encode_plaintext for the type byte from the sealed header (sender = ID of the key).
// Does not check the tag.
result<control_message> decode_plaintext(uint8_t type, std::span<const uint8_t> plaintext);

// The pair tag of a plaintext whose last pair_tag_size bytes are the tag (not covered).
pair_tag compute_pair_tag(const symmetric_key& key, uint8_t type,
                          std::span<const uint8_t> plaintext);
// Constant time: does the plaintext end in the right tag for `key`?
bool pair_tag_valid(const symmetric_key& key, uint8_t type, std::span<const uint8_t> plaintext);

// Whole-datagram helpers: encode, tag with `tag_key` (the pair key, or the anon key for a PING
// without recipient) and seal; open and decode (tag not checked).
result<std::vector<uint8_t>> seal_message(const psk_sealer& sealer, const symmetric_key& tag_key,
                                          const control_message& m, const aead_nonce& nonce);
struct opened_message {
    control_message message;
    std::vector<uint8_t> plaintext;  // for the pair tag check
};
result<opened_message> open_message(const psk_sealer& sealer, std::span<const uint8_t> datagram);

// What kind of frame a received datagram is, from its first 4 bytes (cheap; for the relay's
// receive path to route RELAY_DATA away from the control core).
enum class frame_kind { control, relay_data, nat_keepalive, invalid };
frame_kind classify(std::span<const uint8_t> datagram) noexcept;

// NAT_KEEPALIVE: the whole datagram.
constexpr size_t nat_keepalive_size = psk_sealer::header_size;
std::array<uint8_t, nat_keepalive_size> nat_keepalive_datagram() noexcept;

// RELAY_DATA: the header is written in place in front of the payload so the forwarder allocates
// nothing per packet. `out` must have relay_data_header_size bytes.
void write_relay_data_header(uint64_t session_id, uint8_t* out) noexcept;
struct relay_data_view {
    uint64_t session_id = 0;
    std::span<const uint8_t> payload;  // points into the input
};
result<relay_data_view> decode_relay_data(std::span<const uint8_t> frame);
// The same checks as decode_relay_data without building an error value (no allocation), for the
// forwarder's per-packet path: the session id of a well-formed RELAY_DATA frame, else nullopt.
std::optional<uint64_t> peek_relay_data_session(std::span<const uint8_t> frame) noexcept;

}  // namespace mw::meshd
