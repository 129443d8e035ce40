#include "meshd/core/core_context.hpp"

#include <algorithm>
#include <cstring>

namespace mw::meshd {

wg_endpoint normalize_endpoint(const wg_endpoint& e) {
    if (!e.address.is_v6()) return e;
    static constexpr uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(e.address.data(), mapped, 12) != 0) return e;
    auto a = ip_address::from_bytes(AF_INET, e.address.data() + 12, 4);
    return a ? wg_endpoint{*a, e.port} : e;
}

core_context::core_context(node_core_config c, const node_identity& identity, psk_sealer sealer,
                           rng_fn rng)
    : cfg(std::move(c)),
      identity_(identity),
      ch_(identity, std::move(sealer), cfg.boot_epoch),
      rng_(std::move(rng)),
      cookies_([this](std::span<uint8_t> out) { rng_(out); }) {
    name_of = [](const node_id& id) { return id.short_hex(); };
}

void core_context::send(message_body body, const node_id& recipient, const wg_endpoint& to,
                        uint64_t session_id, uint64_t) {
    aead_nonce nonce;
    rng_(nonce);
    auto d = ch_.send(std::move(body), recipient, nonce);
    if (!d) {
        log(3, "cannot encode a control message", {{"error", d.err().message}});
        return;
    }
    out_.push_back(outgoing_datagram{to, session_id, std::move(*d)});
}

void core_context::send_fresh(message_body body, const node_id& recipient, const wg_endpoint& to,
                              uint64_t) {
    aead_nonce nonce;
    rng_(nonce);
    auto d = ch_.send(std::move(body), recipient, nonce);
    if (!d) return;
    outgoing_datagram o{to, 0, std::move(*d)};
    o.fresh_socket = true;
    out_.push_back(std::move(o));
}

uint64_t core_context::send_ping(const wg_endpoint& to, uint64_t session_id, probe p,
                                 uint64_t now) {
    p.ep = normalize_endpoint(to);
    p.session_id = session_id;
    uint64_t id = 0;
    do {
        id = random_u64();  // never 0, never one in flight (a collision would cross two probes)
    } while (id == 0 || !probes_.add(id, p, now));
    send(ping_msg{id}, p.peer, to, session_id, now);
    return id;
}

void core_context::log(int level, std::string msg, log_fields f) {
    log_.push_back(core_log_event{level, std::move(msg), std::move(f)});
}

uint64_t core_context::random_u64() {
    uint64_t v;
    rng_(std::span(reinterpret_cast<uint8_t*>(&v), sizeof v));
    return v;
}

}  // namespace mw::meshd
