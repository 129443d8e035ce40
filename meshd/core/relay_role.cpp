#include "meshd/core/relay_role.hpp"

#include <algorithm>

namespace mw::meshd {

relay_role::relay_role(core_context& ctx, relay_binder* binder, std::function<void()> on_change)
    : ctx_(ctx), binder_(binder), on_change_(std::move(on_change)) {}

void relay_role::start(uint64_t now) {
    role_since_ms_ = now;  // the constructor has no clock
    next_dialback_ms_ = now;
    restore(now);
}

void relay_role::restore(uint64_t now) {
    const auto& saved = ctx_.cfg.saved_role;
    if (!saved || role_ != relay_role_state::verifying) return;
    std::string why;
    std::vector<bool> v(self_addrs_.size(), false);
    std::string list;
    for (size_t i = 0; i < self_addrs_.size(); ++i) {
        v[i] = std::find(saved->verified.begin(), saved->verified.end(), self_addrs_[i]) !=
               saved->verified.end();
        if (v[i]) list += (list.empty() ? "" : ", ") + self_addrs_[i].str();
    }
    if (saved->listed != ctx_.cfg.relay_role) {
        why = saved->listed ? "listed in relayNodes before, not now" : "listed now, not before";
    } else if (saved->advertised != self_addrs_) {
        why = "the advertised addresses changed";
    } else if (saved->age_ms > ctx_.cfg.role_saved_max_age_ms) {
        why = "last serving " + std::to_string(saved->age_ms / 1000) + " s ago (more than " +
              std::to_string(ctx_.cfg.role_saved_max_age_ms / 1000) + " s)";
    } else if (list.empty()) {
        why = "no advertised address was dialled back";
    }
    if (!why.empty()) {
        ctx_.log(1, "saved relay role not used; verifying first",
                 {{"relay", ctx_.cfg.node_name}, {"reason", why}});
        return;
    }
    self_verified_ = std::move(v);
    rechecking_ = true;
    rechecked_.assign(self_addrs_.size(), false);
    dialback_first_ms_ = 0;
    dialback_nonces_.clear();
    dialback_asked_.clear();
    set_role(relay_role_state::active, relay_role_cause::restarted,
             "serving as before the restart at " + list + " (last serving " +
                 std::to_string(saved->age_ms / 1000) + " s before); being dialled back again",
             now);
}

void relay_role::on_relay_config(bool listed, bool was_listed, std::vector<wg_endpoint> addrs,
                                 uint64_t now) {
    if (listed && (!was_listed || addrs != self_addrs_ || role_ == relay_role_state::none)) {
        // Newly listed (or at other addresses): prove the addresses reachable before serving,
        // unless we already serve at one of them (we offered ourselves with no relayNodes).
        role_retry_backoff_ms_ = ctx_.cfg.role_retry_ms;
        if (!keep_serving_at(addrs, "listed in relayNodes; already dialled back at ", now)) {
            self_addrs_ = std::move(addrs);
            start_verifying(relay_role_cause::listed,
                            "listed in relayNodes; waiting for another node to dial back", now);
        }
    } else if (!listed && ctx_.auto_relays()) {
        update_auto(now, was_listed);
    } else if (!listed && role_ != relay_role_state::none) {
        self_addrs_.clear();
        set_role(relay_role_state::none, relay_role_cause::not_listed,
                 was_listed ? "no longer listed in relayNodes"
                            : "relayNodes configured and this node is not listed",
                 now);
    }
}

bool relay_role::keep_serving_at(const std::vector<wg_endpoint>& addrs, const std::string& why,
                                 uint64_t now) {
    if (role_ != relay_role_state::active) return false;
    auto verified = verified_addresses();
    std::vector<bool> v(addrs.size(), false);
    std::string list;
    for (size_t i = 0; i < addrs.size(); ++i) {
        v[i] = std::find(verified.begin(), verified.end(), addrs[i]) != verified.end();
        if (v[i]) list += (list.empty() ? "" : ", ") + addrs[i].str();
    }
    if (list.empty()) return false;
    self_addrs_ = addrs;
    self_verified_ = std::move(v);
    dialback_nonces_.clear();
    rechecked_.assign(addrs.size(), false);
    set_role(relay_role_state::active, relay_role_cause::still_reachable, why + list, now);
    return true;
}

void relay_role::update_auto(uint64_t now, bool was_listed) {
    if (!ctx_.auto_relays()) return;  // the role follows relayNodes
    std::vector<wg_endpoint> pub;
    std::string list;
    bool v4 = false, pub_v4 = false;
    for (const auto& e : ctx_.cfg.endpoints) {
        wg_endpoint ep{e.address, ctx_.cfg.control_port};
        v4 |= e.address.is_v4();
        if (e.address.is_private() || std::find(pub.begin(), pub.end(), ep) != pub.end()) continue;
        pub_v4 |= e.address.is_v4();
        pub.push_back(ep);
        list += (list.empty() ? "" : ", ") + ep.str();
    }
    // A node that serves takes no relayed paths itself, so it must reach every node directly:
    // with a public IPv6 address but only a NATed IPv4 one (a common edge LAN) it could not
    // reach IPv4-only nodes behind other NATs. Such a node does not offer.
    if (pub.empty() || (v4 && !pub_v4)) {
        if (role_ != relay_role_state::none) {
            self_addrs_.clear();
            set_role(relay_role_state::none, relay_role_cause::no_public_address,
                     pub.empty() ? "no relayNodes configured and no public address to offer"
                                 : "no relayNodes configured and no public IPv4 address to offer",
                     now);
        }
        return;
    }
    if (!was_listed && pub == self_addrs_ && role_ != relay_role_state::none) return;
    role_retry_backoff_ms_ = ctx_.cfg.role_retry_ms;
    // A listed relay whose relayNodes were emptied goes on serving where it was dialled back.
    if (keep_serving_at(pub, "no relayNodes configured; already dialled back at ", now)) return;
    self_addrs_ = std::move(pub);
    start_verifying(relay_role_cause::offering,
                    "no relayNodes configured; offering to relay at " + list +
                        " once another node dials it back",
                    now);
}

void relay_role::set_role(relay_role_state st, relay_role_cause cause, std::string reason,
                          uint64_t now) {
    if (st == role_ && cause == role_cause_ && reason == role_reason_) return;
    if (st != relay_role_state::active && rechecking_) {
        // The restored role was not confirmed: only what was dialled back since counts.
        self_verified_ = rechecked_;
        rechecking_ = false;
    }
    role_ = st;
    role_cause_ = cause;
    role_reason_ = std::move(reason);
    role_since_ms_ = now;
    next_dialback_ms_ = now;
    on_change_();
    int lvl = st == relay_role_state::refused ? 2 : 1;
    ctx_.log(
        lvl, std::string("relay role ") + to_string(st),
        {{"node", ctx_.cfg.node_name}, {"reason", to_string(cause)}, {"detail", role_reason_}});
    ctx_.due(now);
}

std::vector<wg_endpoint> relay_role::verified_addresses() const {
    std::vector<wg_endpoint> v;
    for (size_t i = 0; i < self_addrs_.size(); ++i) {
        if (self_verified_[i]) v.push_back(self_addrs_[i]);
    }
    return v;
}

void relay_role::start_verifying(relay_role_cause cause, std::string why, uint64_t now) {
    self_verified_.assign(self_addrs_.size(), false);
    dialback_first_ms_ = 0;
    dialback_nonces_.clear();
    dialback_asked_.clear();
    set_role(relay_role_state::verifying, cause, std::move(why), now);
}

void relay_role::tick(const helper_source& helper_fn, uint64_t now) {
    const auto& cfg = ctx_.cfg;
    if (role_ == relay_role_state::refused) {
        // A refusal is not final: a port forward or firewall rule may be added later. Check
        // again after role_retry_ms, doubling up to role_retry_max_ms (each check costs the
        // helpers a few probes and logs a warning when it fails again).
        uint64_t at = role_since_ms_ + role_retry_backoff_ms_;
        if (now < at) return ctx_.due(at);
        role_retry_backoff_ms_ = std::min(role_retry_backoff_ms_ * 2, cfg.role_retry_max_ms);
        return start_verifying(relay_role_cause::rechecking,
                               "checking again whether advertiseAddress is reachable (refused " +
                                   std::to_string((now - role_since_ms_) / 1000) + " s ago)",
                               now);
    }
    if (role_ == relay_role_state::active && rechecking_) {
        // Serving on the restored role: the first dial-back confirms it.
        if (std::find(rechecked_.begin(), rechecked_.end(), true) == rechecked_.end()) {
            return dial_round(helper_fn, rechecked_, now);
        }
        rechecking_ = false;
        std::string list;
        for (size_t i = 0; i < self_addrs_.size(); ++i) {
            if (rechecked_[i]) list += (list.empty() ? "" : ", ") + self_addrs_[i].str();
        }
        return set_role(relay_role_state::active, relay_role_cause::reachable,
                        "advertiseAddress reachable: " + list +
                            " (dialled back again after the "
                            "restart)",
                        now);
    }
    if (role_ != relay_role_state::verifying) return;
    size_t verified = std::count(self_verified_.begin(), self_verified_.end(), true);
    auto list = [&](bool want_verified) {
        std::string s;
        for (size_t i = 0; i < self_addrs_.size(); ++i) {
            if (self_verified_[i] == want_verified)
                s += (s.empty() ? "" : ", ") + self_addrs_[i].str();
        }
        return s;
    };
    if (!self_addrs_.empty() && verified == self_addrs_.size()) {
        return set_role(relay_role_state::active, relay_role_cause::reachable,
                        "advertiseAddress reachable: " + list(true), now);
    }
    // One reachable address is enough to serve; a second family can take a while to find a
    // helper that speaks it (and may never be reachable), which must not keep the relay idle.
    if (verified > 0) {
        return set_role(relay_role_state::active, relay_role_cause::partly_reachable,
                        "advertiseAddress reachable: " + list(true) +
                            " (not dialled back yet: " + list(false) + ")",
                        now);
    }
    dial_round(helper_fn, self_verified_, now);
}

void relay_role::dial_round(const helper_source& helper_fn, const std::vector<bool>& done,
                            uint64_t now) {
    const auto& cfg = ctx_.cfg;
    auto pending = [&] {
        std::string s;
        for (size_t i = 0; i < self_addrs_.size(); ++i) {
            if (!done[i]) s += (s.empty() ? "" : ", ") + self_addrs_[i].str();
        }
        return s;
    };
    // Listed nodes get dialback_timeout_ms from being listed. A node that only offers itself
    // (no relayNodes) counts from its first request: the first node of a cluster has nobody to
    // ask until others arrive, and must not be refused for being early.
    const uint64_t verify_from = ctx_.offering() ? dialback_first_ms_ : role_since_ms_;
    const bool timing = !ctx_.offering() || dialback_first_ms_ != 0;
    if (timing && now >= verify_from + cfg.dialback_timeout_ms) {
        std::string secs = std::to_string(cfg.dialback_timeout_ms / 1000);
        std::string who;
        for (const auto& n : dialback_asked_) who += (who.empty() ? "" : ", ") + n;
        return set_role(
            relay_role_state::refused,
            dialback_asked_.empty() ? relay_role_cause::no_helper : relay_role_cause::unreachable,
            dialback_asked_.empty() ? "no other node could be asked to dial back " + pending() +
                                          " within " + secs + " s"
                                    : "advertiseAddress " + pending() +
                                          " not reachable from other nodes: no dial-back from " +
                                          who + " within " + secs + " s",
            now);
    }
    if (timing) ctx_.due(verify_from + cfg.dialback_timeout_ms);
    if (now < next_dialback_ms_) {
        ctx_.due(next_dialback_ms_);
        return;
    }
    next_dialback_ms_ = now + cfg.dialback_interval_ms;
    ctx_.due(next_dialback_ms_);
    // Offering ourselves (no relayNodes): only a helper reached at a public address proves
    // anything (a LAN neighbour reaches a firewalled global IPv6 address too).
    helper_list helpers = helper_fn(ctx_.offering(), cfg.dialback_helpers, now);
    if (helpers.empty()) {
        // Nobody to ask yet (everyone is starting): look again soon rather than in a second.
        next_dialback_ms_ = now + cfg.fast_ping_interval_ms;
        ctx_.due(next_dialback_ms_);
        return;
    }
    if (!dialback_first_ms_) dialback_first_ms_ = now;
    for (size_t i = 0; i < self_addrs_.size(); ++i) {
        if (done[i]) continue;
        for (const auto& [name, id, ep] : helpers) {
            // Any helper: it sends the probe from a fresh socket of the target's family,
            // whatever family we reach it on.
            uint64_t nonce = ctx_.random_u64();
            dialback_nonces_[nonce] = i;
            ctx_.send(dialback_request_msg{nonce, self_addrs_[i]}, id, ep, 0, now);
            if (std::find(dialback_asked_.begin(), dialback_asked_.end(), name) ==
                dialback_asked_.end()) {
                dialback_asked_.push_back(name);
            }
        }
    }
}

void relay_role::on_dialback_request(const control_message& m, const dialback_request_msg& b,
                                     uint64_t now) {
    // Probes go only to a unicast address at the cluster's control port (no reflection to
    // arbitrary services; endpoint_filter.hpp), at a bounded rate overall and per target address
    // (target_budget_, and send_fresh's send_budget): a requester cannot aim us at a victim.
    if (!ctx_.endpoint_allowed(b.target, "dialback_request")) return;
    if (now >= probe_window_ms_ + 1000) {
        probe_window_ms_ = now;
        probes_in_window_ = 0;
        probes_by_requester_.clear();
    }
    // Per requester first, so one requester (or one flooding PSK holder) cannot use up the budget
    // that other nodes' verification needs; the global budget still bounds what we send in all.
    // The map holds at most dialback_probes_per_s requesters: beyond that the global budget is
    // spent anyway.
    auto r = probes_by_requester_.find(m.sender);
    if (r != probes_by_requester_.end() && r->second >= ctx_.cfg.dialback_probes_per_requester_s) {
        ++ctx_.admission.dialback_requester_limited;
        return;
    }
    if (probes_in_window_ >= ctx_.cfg.dialback_probes_per_s) {
        ++ctx_.admission.dialback_limited;
        return;
    }
    if (!target_budget_.take(normalize_endpoint(b.target).address, now)) return;
    ++probes_in_window_;
    ++probes_by_requester_[m.sender];
    ctx_.send_fresh(dialback_probe_msg{b.nonce}, m.sender, normalize_endpoint(b.target), now);
    ctx_.log(0, "dial-back probe sent",
             {{"peer", ctx_.name_of(m.sender)}, {"endpoint", b.target.str()}});
}

void relay_role::on_dialback_probe(const control_message& m, const dialback_probe_msg& b,
                                   uint64_t now) {
    auto it = dialback_nonces_.find(b.nonce);
    if (it == dialback_nonces_.end() || it->second >= self_verified_.size()) return;
    if (rechecking_ && it->second < rechecked_.size() && !rechecked_[it->second]) {
        rechecked_[it->second] = true;
        ctx_.log(1, "advertiseAddress dialled back again",
                 {{"endpoint", self_addrs_[it->second].str()}, {"peer", ctx_.name_of(m.sender)}});
    }
    if (!self_verified_[it->second]) {
        self_verified_[it->second] = true;
        ctx_.log(1, "advertiseAddress dialled back",
                 {{"endpoint", self_addrs_[it->second].str()}, {"peer", ctx_.name_of(m.sender)}});
    }
    ctx_.due(now);
}

void relay_role::on_session_request(const control_message& m, const relay_session_request_msg& b,
                                    const wg_endpoint& from, uint16_t via, uint64_t now) {
    auto reject = [&](reject_reason why) {
        ctx_.send(relay_session_reject_msg{b.request_id, b.session_id, b.from, b.to, why}, m.sender,
                  from, 0, now);
    };
    // Only a verified relay forwards (a listed node whose address nobody can reach must not
    // attract sessions it cannot carry).
    if (role_ != relay_role_state::active || !binder_) return reject(reject_reason::not_a_relay);
    // A node asks only for its own side: the request's `from` must be the authenticated sender.
    if (b.from != m.sender || b.to == b.from) return reject(reject_reason::unspecified);
    auto st = binder_->bind(b.session_id, b.from, b.to, from, via);
    if (!st) {
        uint64_t suppressed = 0;
        if (ctx_.refusal_log.should_log(b.from, "session " + std::to_string(st.err().code.value()),
                                        now, &suppressed)) {
            core_context::log_fields f{{"peer", ctx_.name_of(b.from)},
                                       {"error", st.err().message},
                                       {"endpoint", from.str()}};
            if (suppressed) f.emplace_back("suppressed", std::to_string(suppressed));
            ctx_.log(2, "relay session refused", std::move(f));
        } else {
            ++ctx_.admission.log_lines_suppressed;
        }
        return reject(st.err().is(errc::exhausted) ? reject_reason::capacity
                                                   : reject_reason::unspecified);
    }
    // Announced first (the node reads the ACCEPT knowing it): this relay keeps the session while
    // it hears the node, so an idle pair need not refresh it (wire_codec.hpp).
    if (ctx_.cfg.relay_keep_ms) {
        ctx_.send(relay_session_kept_msg{b.request_id, b.session_id,
                                         uint32_t(std::min<uint64_t>(
                                             ctx_.cfg.relay_keep_ms,
                                             relay_session_kept_msg::max_keep_ms))},
                  m.sender, from, 0, now);
    }
    ctx_.send(relay_session_accept_msg{b.request_id, b.session_id, b.from, b.to}, m.sender, from, 0,
              now);
}

void relay_role::on_heard(const node_id& sender, const wg_endpoint& from) {
    if (role_ == relay_role_state::active && binder_ && ctx_.cfg.relay_keep_ms) {
        binder_->heard(sender, from);
    }
}

}  // namespace mw::meshd
