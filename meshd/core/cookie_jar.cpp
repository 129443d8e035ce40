#include "meshd/core/cookie_jar.hpp"

#include <sodium.h>

#include <cstring>
#include <iterator>

#include "meshd/core/sodium_init.hpp"

namespace mw::meshd {

cookie_jar::cookie_jar(rng_fn rng) : rng_(std::move(rng)) {
    ensure_sodium();
    rng_(secret_);
}

cookie_jar::~cookie_jar() {
    sodium_memzero(secret_.data(), secret_.size());
    sodium_memzero(previous_.data(), previous_.size());
}

uint64_t cookie_jar::tick(uint64_t now) {
    if (rotate_at_ == 0) rotate_at_ = now + rotate_ms;
    if (now >= rotate_at_) {
        previous_ = secret_;
        have_previous_ = true;
        rng_(secret_);
        rotate_at_ = now + rotate_ms;
    }
    // Requests in flight are kept only as long as a reply could matter (on_reply checks the
    // age itself): swept once a second, not on every tick (a walk of every request in flight,
    // hundreds with many relayed pairs, was a tenth of an idle cluster's CPU in the simulator).
    if (now >= next_sweep_ms_) {
        for (auto it = requests_.begin(); it != requests_.end();) {
            it = now > it->second.sent_ms + request_ttl_ms ? requests_.erase(it) : std::next(it);
        }
        next_sweep_ms_ = now + 1000;
    }
    return rotate_at_;
}

cookie_bytes cookie_jar::mac(const std::array<uint8_t, 32>& secret, const node_id& sender,
                             const wg_endpoint& source) const {
    uint8_t buf[node_id::size + 1 + 16 + 2];
    size_t n = 0;
    std::memcpy(buf, sender.data(), node_id::size);
    n += node_id::size;
    buf[n++] = source.address.is_v4() ? 4 : 6;
    std::memcpy(buf + n, source.address.data(), source.address.byte_len());
    n += source.address.byte_len();
    buf[n++] = static_cast<uint8_t>(source.port >> 8);
    buf[n++] = static_cast<uint8_t>(source.port);
    cookie_bytes c{};
    crypto_generichash(c.data(), c.size(), buf, n, secret.data(), secret.size());
    return c;
}

cookie_bytes cookie_jar::make(const node_id& sender, const wg_endpoint& source) const {
    return mac(secret_, sender, source);
}

bool cookie_jar::valid(const cookie_bytes& c, const node_id& sender,
                       const wg_endpoint& source) const {
    auto cur = mac(secret_, sender, source);
    if (sodium_memcmp(cur.data(), c.data(), c.size()) == 0) return true;
    if (!have_previous_) return false;
    auto prev = mac(previous_, sender, source);
    return sodium_memcmp(prev.data(), c.data(), c.size()) == 0;
}

cookie_bytes cookie_jar::for_responder(const node_id& responder, const wg_endpoint& ep) const {
    auto it = stored_.find({responder, ep});
    return it == stored_.end() ? cookie_bytes{} : it->second;
}

bool cookie_jar::store(const node_id& responder, const wg_endpoint& ep, const cookie_bytes& c) {
    auto key = std::make_pair(responder, ep);
    auto it = stored_.find(key);
    if (it != stored_.end()) {
        if (it->second == c) return false;
        it->second = c;
        return true;
    }
    // Bounded: a full table forgets an arbitrary responder, which then answers our next request
    // with a COOKIE_REPLY (one round trip more), nothing worse.
    if (stored_.size() >= max_stored) stored_.erase(stored_.begin());
    stored_.emplace(key, c);
    return true;
}

void cookie_jar::note_request(uint64_t request_id, request r) {
    if (requests_.size() >= max_requests) requests_.erase(requests_.begin());
    r.cookie = for_responder(r.to, r.ep);
    requests_[request_id] = r;
}

std::optional<cookie_jar::reply> cookie_jar::on_reply(uint64_t request_id, const node_id& sender,
                                                      const wg_endpoint& from,
                                                      const cookie_bytes& c, uint64_t now) {
    auto it = requests_.find(request_id);
    if (it == requests_.end()) return std::nullopt;
    const request r = it->second;
    if (r.to != sender || !(r.ep == from) || now > r.sent_ms + request_ttl_ms) return std::nullopt;
    requests_.erase(it);  // one reply per request: a replayed COOKIE_REPLY retries nothing
    store(sender, from, c);
    return reply{r, !(r.cookie == c)};
}

}  // namespace mw::meshd
