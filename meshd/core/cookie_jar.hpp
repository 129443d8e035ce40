// Cookies: proof that a sender receives at the address it sends from, before a node answers it
// with more bytes than it sent or keeps state for it (issue 17 "no amplification"; WireGuard's
// cookie under load, QUIC's Retry).
//
// Responder side: a random secret, replaced every rotate_ms (the previous one still accepted, so
// a cookie lives 2-4 minutes); cookie(sender node ID, source) = BLAKE2b-128(key = secret,
// ID | family | address | port). Every PONG carries a fresh cookie for the PING's source. A
// HELLO or RELAY_SESSION_REQUEST whose cookie is not valid for its source gets only a
// COOKIE_REPLY (smaller than either) and allocates nothing; a PSK holder spoofing a victim's
// address never sees the cookie, so the victim receives at most one small reply per request.
//
// Requester side: the latest cookie from each responder address (from its PONGs and
// COOKIE_REPLYs), sent with every request to that address; and the requests in flight, so that
// a COOKIE_REPLY counts only for a request we sent to that node at that address.
//
// Pure: the secret comes from the caller's RNG, `now` from the caller.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <utility>

#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/node_id.hpp"
#include "meshd/core/wire_codec.hpp"

namespace mw::meshd {

class cookie_jar {
public:
    using rng_fn = std::function<void(std::span<uint8_t>)>;
    enum class request_kind : uint8_t { hello, session, anti_entropy };
    struct request {
        request_kind kind = request_kind::hello;
        node_id to;
        wg_endpoint ep;
        uint64_t sent_ms = 0;
        cookie_bytes cookie{};  // the cookie it carried (note_request: what for_responder gave)
    };

    static constexpr uint64_t rotate_ms = 120'000;
    static constexpr uint64_t request_ttl_ms = 10'000;
    static constexpr size_t max_stored = 4096;
    static constexpr size_t max_requests = 4096;

    explicit cookie_jar(rng_fn rng);
    ~cookie_jar();
    cookie_jar(const cookie_jar&) = delete;
    cookie_jar& operator=(const cookie_jar&) = delete;

    // Responder. Rotates the secret when due (call from the tick); returns when next due.
    uint64_t tick(uint64_t now);
    cookie_bytes make(const node_id& sender, const wg_endpoint& source) const;
    bool valid(const cookie_bytes& c, const node_id& sender, const wg_endpoint& source) const;

    // Requester: the cookie to send to `responder` at `ep` (zero if none yet).
    cookie_bytes for_responder(const node_id& responder, const wg_endpoint& ep) const;
    // A cookie from `responder`'s answer at `ep`; true if it differs from the one kept.
    bool store(const node_id& responder, const wg_endpoint& ep, const cookie_bytes& c);
    // A request just sent with for_responder(r.to, r.ep) as its cookie.
    void note_request(uint64_t request_id, request r);
    // A COOKIE_REPLY from `sender` at `from`: nothing (nullopt) unless it answers a request of
    // ours, fresh, sent to that node at that address. Then its cookie is kept, and the request
    // is to be sent again at once (`retry`) if it carried another cookie (a responder that refuses
    // the cookie it just gave gets no second try: no ping-pong). Judged per request, not by whether
    // the cookie was new here: a HELLO and a session request sent together with a stale cookie (the
    // relay restarted) both need the retry, though the first reply already stored the new cookie
    // (CI: a relayed pair back 1.07 s after its relay's restart, its session request asked again
    // only at session_retry_ms).
    struct reply {
        request answered;
        bool retry = false;
    };
    std::optional<reply> on_reply(uint64_t request_id, const node_id& sender,
                                  const wg_endpoint& from, const cookie_bytes& c, uint64_t now);

private:
    cookie_bytes mac(const std::array<uint8_t, 32>& secret, const node_id& sender,
                     const wg_endpoint& source) const;

    struct by_node_and_ep {
        bool operator()(const std::pair<node_id, wg_endpoint>& a,
                        const std::pair<node_id, wg_endpoint>& b) const noexcept {
            if (a.first != b.first) return a.first < b.first;
            if (!(a.second.address == b.second.address)) return a.second.address < b.second.address;
            return a.second.port < b.second.port;
        }
    };

    rng_fn rng_;
    std::array<uint8_t, 32> secret_{};
    std::array<uint8_t, 32> previous_{};
    bool have_previous_ = false;
    uint64_t rotate_at_ = 0;
    std::map<std::pair<node_id, wg_endpoint>, cookie_bytes, by_node_and_ep> stored_;
    std::map<uint64_t, request> requests_;  // by request id
    uint64_t next_sweep_ms_ = 0;            // tick: the next sweep of expired requests_
};

}  // namespace mw::meshd
