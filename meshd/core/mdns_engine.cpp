#include "meshd/core/mdns_engine.hpp"

#include <algorithm>

namespace mw::meshd {

namespace {

// FNV-1a 64 over the bytes and their length: only to recognise our own packets, never a key
// against an attacker (a packet with the same bytes as ours says what ours said).
uint64_t packet_hash(std::span<const uint8_t> b) {
    uint64_t h = 0xcbf29ce484222325ull ^ b.size();
    for (uint8_t c : b) h = (h ^ c) * 0x100000001b3ull;
    return h;
}

}  // namespace

mdns_engine::mdns_engine(mdns_engine_config cfg)
    : rng_(cfg.seed),
      responder_(std::move(cfg.service), cfg.families, rng_),
      querier_(cfg.self, cfg.families, rng_) {}

void mdns_engine::start(std::vector<ip_address> addrs, uint64_t now_ms) {
    size_t before = out_.size();
    responder_.set_addresses(std::move(addrs), now_ms, out_);
    querier_.start(now_ms);
    note_sent(now_ms, before);
}

void mdns_engine::set_addresses(std::vector<ip_address> addrs, uint64_t now_ms) {
    size_t before = out_.size();
    responder_.set_addresses(std::move(addrs), now_ms, out_);
    // A changed link may have new neighbours: browse from the fast start again.
    querier_.restart(now_ms);
    note_sent(now_ms, before);
}

bool mdns_engine::is_own(std::span<const uint8_t> bytes, uint64_t now_ms) {
    while (!sent_.empty() && sent_.front().at_ms + own_packet_memory_ms < now_ms) sent_.pop_front();
    return sent_recently(bytes, now_ms);
}

bool mdns_engine::sent_recently(std::span<const uint8_t> bytes, uint64_t now_ms) const {
    uint64_t h = packet_hash(bytes);
    return std::any_of(sent_.begin(), sent_.end(), [&](const sent_packet& s) {
        return s.hash == h && s.at_ms + own_packet_memory_ms >= now_ms;
    });
}

void mdns_engine::note_sent(uint64_t now_ms, size_t from) {
    for (size_t i = from; i < out_.size(); ++i) {
        ++stats_.sent;
        // Only multicast comes back to us through loopback.
        if (!is_mdns_group(out_[i].to.address)) continue;
        sent_.push_back({packet_hash(out_[i].bytes), now_ms});
    }
    // Bounded: a few packets a second at most; 256 covers far more than the memory window.
    while (sent_.size() > 256) sent_.pop_front();
}

void mdns_engine::on_datagram(std::span<const uint8_t> bytes, const wg_endpoint& from,
                              uint64_t now_ms) {
    ++stats_.received;
    if (from.port == mdns_port && is_own(bytes, now_ms)) {
        ++stats_.own_looped;
        return;
    }
    auto msg = mdns_message::parse(bytes);
    if (!msg) {
        ++stats_.malformed;
        last_malformed_ = msg.err().message;
        return;
    }
    // §18.3 / §18.11: opcode and rcode must be zero; anything else is silently ignored.
    if ((msg->flags & 0x780F) != 0) {
        ++stats_.ignored;
        return;
    }
    size_t before = out_.size();
    if (msg->is_response()) {
        // §6: a response not from port 5353 is not an mDNS response.
        if (from.port != mdns_port) {
            ++stats_.ignored;
            return;
        }
        responder_.on_response(*msg, now_ms);
        querier_.on_response(*msg, now_ms);
        auto found = querier_.take_found();
        stats_.peers_found += found.size();
        pending_found_.insert(pending_found_.end(), found.begin(), found.end());
    } else {
        responder_.on_query(*msg, from, now_ms, out_);
    }
    note_sent(now_ms, before);
}

void mdns_engine::on_timer(uint64_t now_ms) {
    size_t before = out_.size();
    responder_.on_timer(now_ms, out_);
    std::vector<mdns_record> own;
    auto st = responder_.current_state();
    if (st == mdns_responder::state::announcing || st == mdns_responder::state::announced)
        for (auto& r : responder_.records())
            if (r.type == mdns_type::ptr && r.name == mdns_service_type()) own.push_back(r);
    querier_.set_own_answers(std::move(own));
    querier_.on_timer(now_ms, out_);
    note_sent(now_ms, before);
}

void mdns_engine::stop(uint64_t now_ms) {
    size_t before = out_.size();
    responder_.stop(now_ms, out_);
    querier_.stop();
    note_sent(now_ms, before);
}

uint64_t mdns_engine::next_deadline() const noexcept {
    return std::min(responder_.next_deadline(), querier_.next_deadline());
}

std::vector<mdns_datagram> mdns_engine::take_output() {
    return std::exchange(out_, {});
}

std::vector<mdns_peer> mdns_engine::take_found() {
    return std::exchange(pending_found_, {});
}

}  // namespace mw::meshd
