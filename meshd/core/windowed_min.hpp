// The minimum of a series of samples over a sliding time window, in constant space.
//
// Why a minimum and not a moving average: the RTTs that choose a pair's relay (and a peer's direct
// address) are measured by meshd's own probes, and on a busy machine a probe's RTT is mostly the
// time its PING and PONG waited for a CPU, not the path: samples jump from 1 ms to 10-100 ms for a
// few seconds. An average follows those jumps, and every jump on one relay but not the other
// re-ran the election (flaps every few seconds under load, each a WireGuard endpoint change). The
// path's real delay is the floor the samples return to, so the election ranks by the window's
// minimum: a slower path still shows after one window. Liveness does not depend on it (a silent
// relay fails over by its own timeout).
//
// The estimator keeps the best, second-best and third-best sample of successive sub-windows (as
// Kathleen Nichols' min filter does, used for BBR's min RTT): when the best ages out of the
// window, the next one takes its place.
#pragma once

#include <array>
#include <cstdint>

namespace mw::meshd {

class windowed_min {
public:
    // Adds a sample taken at `now` (monotonic ms, non-decreasing); returns the minimum of the
    // samples of the last `window_ms` (the window may differ between calls: a config reload).
    double update(double v, uint64_t now, uint64_t window_ms) {
        window_ms_ = window_ms;
        const sample s{now, v};
        if (!has_ || v <= best_[0].v || now - best_[2].t > window_ms_) {
            best_.fill(s);  // a new minimum, or nothing in the window is left
            has_ = true;
            return best_[0].v;
        }
        if (v <= best_[1].v) {
            best_[1] = best_[2] = s;
        } else if (v <= best_[2].v) {
            best_[2] = s;
        }
        return age(s);
    }

    bool empty() const { return !has_; }
    double get() const { return has_ ? best_[0].v : 0; }
    void reset() { has_ = false; }

private:
    struct sample {
        uint64_t t = 0;
        double v = 0;
    };

    // Moves the estimates along when the best is older than the window, and keeps the second and
    // third from different quarters/halves of it, so that one is there to take over.
    double age(const sample& s) {
        const uint64_t dt = s.t - best_[0].t;
        if (dt > window_ms_) {
            best_[0] = best_[1];
            best_[1] = best_[2];
            best_[2] = s;
            if (s.t - best_[0].t > window_ms_) {
                best_[0] = best_[1];
                best_[1] = best_[2];
                best_[2] = s;
            }
        } else if (best_[1].t == best_[0].t && dt > window_ms_ / 4) {
            best_[1] = best_[2] = s;
        } else if (best_[2].t == best_[1].t && dt > window_ms_ / 2) {
            best_[2] = s;
        }
        return best_[0].v;
    }

    uint64_t window_ms_ = 0;
    bool has_ = false;
    std::array<sample, 3> best_{};
};

}  // namespace mw::meshd
