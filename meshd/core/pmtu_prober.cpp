#include "meshd/core/pmtu_prober.hpp"

#include <algorithm>
#include <cmath>

#include "meshd/core/core_context.hpp"

namespace mw::meshd {

unsigned pmtu_prober::tries_for_loss(double loss) {
    const unsigned min_tries = path_mtu_config{}.max_probes;
    if (loss <= 0) return min_tries;
    if (loss >= 0.5) return max_tries;  // a broken path: what the bound needs at 50 %
    const double n = std::ceil(std::log(false_loss_probability) / std::log(loss));
    return std::clamp(static_cast<unsigned>(n), min_tries, max_tries);
}

void pmtu_prober::track(const wg_endpoint& ep, uint64_t session_id, uint64_t now) {
    if (ep == ep_ && session_id == session_id_) return;
    ep_ = ep;
    session_id_ = session_id;
    // answered_ stays: it says the peer speaks padded probes, whatever the path. An applied MTU
    // stays, and is confirmed on the new path first (a smaller new path is then a black hole:
    // 1280 at once), before the search looks upward.
    if (search_) {
        if (applied_) {
            search_->reset_confirming(now, applied_);
        } else {
            search_->reset(now);
        }
        search_->set_probe_timeout(path_mtu_config{}.probe_timeout_ms);
    }
    gave_up_ms_ = 0;
}

pmtu_prober::poll_result pmtu_prober::poll(core_context& ctx, const pmtu_path_signal& path,
                                           uint64_t now) {
    poll_result out;
    const auto& cfg = ctx.cfg;
    if (cfg.pmtu_max < path_mtu_config{}.base || !path.ready) return out;
    if (!search_) {
        path_mtu_config c;
        c.max = cfg.pmtu_max;
        c.confirm_interval_ms = cfg.pmtu_confirm_interval_ms;
        search_ = std::make_unique<path_mtu>(c);
        if (applied_) {
            search_->reset_confirming(now, applied_);  // seed(): confirmed first
        } else {
            search_->reset(now);
        }
    }
    if (path.rtt_ms > 0) {
        search_->set_probe_timeout(std::max<uint64_t>(250, static_cast<uint64_t>(3 * path.rtt_ms)));
    }
    search_->set_max_probes(tries_for_loss(path.loss));
    if (gave_up()) {
        if (!gave_up_ms_) gave_up_ms_ = now;
        const uint64_t again = gave_up_ms_ + search_->config().raise_interval_ms;
        if (now < again) {
            ctx.due(again);
            return out;
        }
        search_->reset(now);  // the peer may answer them by now
        gave_up_ms_ = 0;
    }
    // An overdue probe counts only once a small probe sent after it was answered: until then
    // its loss may be the path's, not the size's.
    const auto overdue = search_->overdue(now);
    if (overdue && path.alive_sent_ms < *overdue) {
        ctx.due(now + search_->config().probe_timeout_ms);
    } else {
        const uint64_t holes = search_->counters().black_holes;
        if (auto size = search_->next_probe(now)) {
            out.send = probe_size{*size, std::min((*size + 15) / 16 * 16, cfg.pmtu_max)};
            ++ctx.pmtu_totals_mut().probes_sent;
        }
        if (search_->counters().black_holes > holes && answered_) {
            ++ctx.pmtu_totals_mut().black_holes;
            out.black_hole = true;
        }
        if (!gave_up()) ctx.due(search_->next_deadline());
    }
    out.applied_changed = update_applied(cfg.pmtu_max, out.black_hole);
    if (out.applied_changed) ++ctx.pmtu_totals_mut().changes;
    return out;
}

void pmtu_prober::log(core_context& ctx, const poll_result& r,
                      std::vector<std::pair<std::string, std::string>> fields) const {
    if (!search_) return;
    if (r.black_hole) {
        auto f = fields;
        f.emplace_back("path_mtu", std::to_string(search_->mtu()));
        f.emplace_back("reason", "confirmation_lost");
        ctx.log(2, "path MTU stopped working; searching again from the minimum", std::move(f));
    }
    if (r.applied_changed) {
        fields.emplace_back("path_mtu", std::to_string(applied_ ? applied_ : ctx.cfg.pmtu_max));
        fields.emplace_back("reason", complete() ? "search_complete" : "search_running");
        ctx.log(1, "path MTU applied to the peer's routes", std::move(fields));
    }
}

void pmtu_prober::ack(core_context& ctx, unsigned size, uint64_t now) {
    if (!search_) return;
    ++ctx.pmtu_totals_mut().probes_acked;
    answered_ = true;
    search_->on_ack(size, now);
    ctx.due(now);  // the next size at once, and the applied MTU with the next decision
}

void pmtu_prober::seed(unsigned mtu, unsigned max) {
    if (search_ || applied_ || mtu < path_mtu_config{}.base || mtu >= max) return;
    applied_ = mtu;
    // The previous meshd applied it only after the peer answered a padded probe.
    answered_ = true;
}

void pmtu_prober::clear() {
    search_.reset();
    ep_ = wg_endpoint{};
    session_id_ = 0;
    answered_ = false;
    gave_up_ms_ = 0;
    applied_ = 0;
}

std::optional<unsigned> pmtu_prober::measured() const {
    if (!search_ && applied_) return applied_;  // seed(): applied, confirmed at the first poll
    if (!search_ || !answered_) return std::nullopt;
    // While a search runs the applied value is in effect (it changes when the search ends).
    if (!complete() && applied_) return applied_;
    return search_->mtu();
}

bool pmtu_prober::complete() const {
    return search_ && search_->state() == path_mtu::phase::complete;
}

bool pmtu_prober::gave_up() const {
    return search_ && !answered_ && search_->state() == path_mtu::phase::complete;
}

bool pmtu_prober::update_applied(unsigned max, bool black_hole) {
    if (!search_ || !answered_) return false;
    const unsigned m = search_->mtu() < max ? search_->mtu() : 0;  // 0: the interface MTU
    // A running search changes nothing (a pod keeps a "too big" it got for 10 minutes: a value
    // from halfway through a search would outlive it), but for a black hole: the path in use
    // stopped carrying the MTU applied, and 1280 at once is what lets TCP recover.
    const unsigned want = complete() || black_hole ? m : applied_;
    if (want == applied_) return false;
    applied_ = want;
    return true;
}

}  // namespace mw::meshd
