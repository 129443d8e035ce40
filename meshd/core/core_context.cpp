#include "meshd/core/core_context.hpp"

#include <sodium.h>
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
      pair_cluster_key_(sealer.pair_cluster_key()),
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

size_t core_context::send_records(const node_id& to, const wg_endpoint& to_ep, uint64_t request_id,
                                  std::span<const peer_record* const> records, uint64_t now) {
    const size_t empty_size = envelope_size + 8 + 1 + pair_tag_size;
    records_msg batch{request_id, {}};
    size_t size = empty_size, sent = 0;
    for (const auto* r : records) {
        auto enc = r->encode();
        if (!enc) continue;
        const size_t n = 2 + enc->size();
        if (!batch.records.empty() &&
            (size + n > max_control_plaintext || batch.records.size() == 255)) {
            send(std::move(batch), to, to_ep, 0, now);
            batch = records_msg{request_id, {}};
            size = empty_size;
        }
        batch.records.push_back(*r);
        size += n;
        ++sent;
    }
    if (!batch.records.empty()) send(std::move(batch), to, to_ep, 0, now);
    return sent;
}

void core_context::send_fresh(message_body body, const node_id& recipient, const wg_endpoint& to,
                              uint64_t now) {
    if (!budget_allows(to, now)) return;
    aead_nonce nonce;
    rng_(nonce);
    auto d = ch_.send(std::move(body), recipient, nonce);
    if (!d) return;
    outgoing_datagram o{to, 0, std::move(*d)};
    o.fresh_socket = true;
    out_.push_back(std::move(o));
}

void core_context::send_nat_keepalive(const wg_endpoint& to) {
    const auto d = nat_keepalive_datagram();
    out_.push_back(outgoing_datagram{to, 0, std::vector<uint8_t>(d.begin(), d.end())});
}

uint64_t core_context::send_ping(const wg_endpoint& to, uint64_t session_id, probe p, uint64_t now,
                                 bool budgeted) {
    if (session_id == 0 && budgeted && !budget_allows(to, now)) return 0;
    p.ep = normalize_endpoint(to);
    p.session_id = session_id;
    const uint64_t id = add_probe(p, now);
    if (id != 0) send(ping_msg{id}, p.peer, to, session_id, now);
    return id;
}

uint64_t core_context::send_padded_ping(const wg_endpoint& to, probe p, size_t size, uint64_t now) {
    size = std::clamp(size, ping_datagram_size, max_padded_ping_datagram);
    p.ep = normalize_endpoint(to);
    p.session_id = 0;
    const uint64_t id = add_probe(p, now);
    if (id != 0) {
        send(ping_msg{id, static_cast<uint16_t>(size - ping_datagram_size)}, p.peer, to, 0, now);
    }
    return id;
}

bool core_context::endpoint_allowed(const wg_endpoint& ep, const char* what) {
    auto why = endpoint_filter::check(normalize_endpoint(ep), cfg.control_port);
    if (why == endpoint_refusal::none) return true;
    refuse(why, ep, what);
    return false;
}

bool core_context::budget_allows(const wg_endpoint& to, uint64_t now) {
    if (budget_.take(normalize_endpoint(to).address, now)) return true;
    refuse(endpoint_refusal::budget, to, "send budget");
    return false;
}

void core_context::refuse(endpoint_refusal why, const wg_endpoint& ep, const char* what) {
    // Logged once per reason: a PSK holder can make these as often as it likes.
    if (refusals_[static_cast<size_t>(why)]++ == 0) {
        log(2,
            why == endpoint_refusal::budget
                ? "datagrams to an address over its send budget dropped (logged once; see "
                  "meshwire_endpoints_refused_total)"
                : "endpoint refused: not a unicast address at the cluster's port (logged once "
                  "per reason; see meshwire_endpoints_refused_total)",
            {{"reason", to_string(why)}, {"endpoint", ep.str()}, {"source", what}});
    }
}

void core_context::note_unauthenticated(const wg_endpoint& from, bool retired, uint64_t now) {
    uint64_t suppressed = 0;
    if (!key_refusal_log.should_log(node_id{}, from.str(), now, &suppressed)) return;
    log_fields f{{"endpoint", from.str()}, {"suppressed", std::to_string(suppressed)}};
    if (retired) {
        f.emplace_back("fingerprint", ch_.sealer().retired_fingerprint());
        log(2,
            "datagram sealed with a retired cluster key refused: the sender (or this node, if it "
            "dropped the key everyone seals with) was left out of the key roll",
            std::move(f));
    } else {
        log(2, "datagram authenticated under no current cluster key refused", std::move(f));
    }
}

result<probe_keys> core_context::probe_keys_for(const node_id& peer,
                                                const wg_key& peer_public) const {
    wg_key priv = identity_.wg_private_key();
    auto k = pair_key(pair_cluster_key_, priv, identity_.wg_public_key(), peer_public);
    priv.wipe();
    if (!k) return k.err();
    auto keys = probe_keys::derive(*k, id(), peer);
    sodium_memzero(k->data(), k->size());
    return keys;
}

void core_context::send_probe_ping(const wg_endpoint& to, uint64_t session_id,
                                   const probe_keys& keys, probe p, probe_frame_body body,
                                   uint64_t now) {
    p.ep = normalize_endpoint(to);
    p.session_id = session_id;
    const uint64_t id = add_probe(p, now);
    if (id == 0) return;
    body.kind = probe_frame_kind::ping;
    body.request_id = id;
    send_probe_frame(to, session_id, keys, body);
}

void core_context::send_probe_frame(const wg_endpoint& to, uint64_t session_id,
                                    const probe_keys& keys, const probe_frame_body& body) {
    out_.push_back(outgoing_datagram{to, session_id, seal_probe(keys, random_u64(), body)});
}

void core_context::log(int level, std::string msg, log_fields f) {
    log_.push_back(core_log_event{level, std::move(msg), std::move(f)});
}

uint64_t core_context::add_probe(const probe& p, uint64_t now) {
    // Never 0, never one in flight (a collision would cross two probes). With a real RNG the
    // first draw is it; the bound only keeps a broken RNG from hanging the core.
    for (int attempt = 0; attempt < 8; ++attempt) {
        const uint64_t id = random_u64();
        if (id != 0 && probes_.add(id, p, now)) return id;
    }
    log(3, "no fresh probe request id from the RNG; probe not sent");
    return 0;
}

uint64_t core_context::random_u64() {
    uint64_t v;
    rng_(std::span(reinterpret_cast<uint8_t*>(&v), sizeof v));
    return v;
}

}  // namespace mw::meshd
