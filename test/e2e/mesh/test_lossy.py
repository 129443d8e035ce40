#!/usr/bin/env python3
"""Issue 14 §5 on the testbed: lossy, slow links (root; Python 3 stdlib; meshd + wireguard-go + the
real CNI plugin). CTest `e2e_lossy`, label e2e.

Topology: mesh.py's default (relay1, relay2; LAN1 cone: lan1a, lan1b; LAN2 symmetric: lan2a,
lan2b) with a delay bridge (test/e2e/topology/delayer.py) on relay1's, relay2's, nat1's and nat2's
uplinks: 100 ms one-way (relay2 103 ms, so the relays rank apart) and 5 % frame loss in each
direction on each, as the simulator's sim_lossy (std_links{100, 103, 100, 100, 0.05}). A LAN node
to a relay is 400 ms of RTT and loses ~19 % of round trips; a relayed pair end to end is ~800 ms
and ~34 %. Traffic inside a LAN crosses no bridge. Checks, on one mesh:

  converges   every node ready; every pair on its path (same-LAN pairs and pairs with a relay
              direct, cross-LAN pairs relayed) within bounds scaled for the delay and loss
  traffic     a 100/s UDP stream pod -> pod on two cross-LAN relayed pairs (lan1a -> lan2a,
              lan1b -> lan2b) and a ping every 0.2 s on a LAN-direct pair (lan1a -> lan1b),
              flowing within a bound
  steady      after SETTLE_S (20 s), for --window s (60 in the suite) no pair changes relay or
              path: the "relay switched" and "path selected" lines of every meshd over the window
              are counted and `meshctl peers` of every node compared before/after; false
              failovers per hour (count * 3600 / window) printed, with the failover verdicts
              (relay stopped answering, relayed path silent end to end, WireGuard not through,
              session rejected); the LAN-direct ping lost nothing
  failover    --trials times (2): the meshd of the relay lan1a uses for lan2a is SIGKILLed under
              the streams; the outage (largest gap in the arrivals, minus the 10 ms period) of
              each stream is printed against the 1 s target of issue 14; the check fails only
              beyond checks.FAILOVER_BOUND (a deadline, not the target), and then prints what
              both ends of each stream logged from the kill on; the killed relay is restarted,
              up in every LAN node and holding an accepted session for both ends of each stream
              (their warm standby, `meshctl peers` relaySessions) before the next trial

Prints figures (with the load average) and `N passed, N failed`; exit 1 on a failure, 77 when it
cannot run here. About 2 min with --window 60.

Usage: test_lossy.py [--build-dir DIR] [--window S] [--trials N]
  --window 3600 measures false failovers over an hour of steady traffic (about 62 min in all)
"""

import argparse
import ast
import os
import re
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import (ALL, FAILOVER_BOUND, LAN_NODES, PATHS_BOUND, READY_BOUND,  # noqa: E402
                    RELAYS, REKEY_TIMEOUT, check, expect, figure, lan_of, log_time,
                    peers_by_name, preflight, print_logs, report, run_and_clean)
from mesh import Mesh  # noqa: E402
from test_failover import UdpStream, largest_gap, relay_state  # noqa: E402

DELAY_MS = {"relay1": 100, "relay2": 103, "nat1": 100, "nat2": 100}
LOSS_PCT = 5
STREAMS = [("lan1a", "lan2a"), ("lan1b", "lan2b")]  # relayed pairs carrying 100/s
LAN_PAIR = ("lan1a", "lan1b")  # direct, pinged
PERIOD = 0.01  # the streams' 100 packets/s
TARGET_S = 1.0  # issue 14 §5: relay failover under 1 s

# -- bounds scaled for 100 ms uplinks with 5 % loss ----------------------------------------------
# Every pair on its path: PATHS_BOUND (the 10 s HELLO retry + direct grace + session REQUEST
# retry, checks.py) assumes a HELLO exchange that succeeds at the second try at worst. Here each
# control round trip to a relay fails ~19 % of the time, so allow two more HELLO retries (10 s
# each) and the 400-800 ms RTTs of every step.
LOSSY_PATHS_BOUND = PATHS_BOUND + 2 * 10.0 + 5.0
# Pod traffic flowing on a relayed pair: the WireGuard handshake crosses four lossy bridges each
# way (~34 % of round trips lost), so its initiation is resent after REKEY_TIMEOUT (+1/3 s) until
# one round trip passes: eight tries (all lost with 0.34^8 = 2e-4 a stream) and slack for the
# loaded host. Three (4 % a stream) failed a suite run: lan1a -> lan2a not flowing in 20 s.
FLOW_BOUND = 8 * (REKEY_TIMEOUT + 0.34) + 4.0
# A restarted relay up in every LAN node's `meshctl relays` and serving the streams' pairs again
# (their warm standby for the next trial): its dial-back (1-2 s), a probe answered through two
# lossy bridges (400 ms round trips, ~19 % lost), the pairs' session requests (at the latest with
# the 15 s refresh); 20 s (test_failover's RESTART_BOUND) + 10 s for the retries loss costs.
RESTART_BOUND = 30.0
# After a kill, how long the streams are watched for the outage: FAILOVER_BOUND + slack, so an
# outage beyond the bound is seen as one (and fails) rather than cut off.
WATCH_S = FAILOVER_BOUND + 2.0

# Before the steady window: a relayed path taken at the start is verified end to end (an in-band
# PONG) while its sessions are still being bound on both ends; under ~34 % end-to-end loss that
# can take longer than the verdict's 3 path timeouts (a silent-end-to-end switch 10.5 s after the
# path was taken was seen at this point). The simulator's sim_lossy settles 30 s before its hour.
SETTLE_S = 20.0
CHANGE_MSGS = ('msg="relay switched"', 'msg="path selected"')
VERDICT_MSGS = ('msg="relay stopped answering; its pairs fail over"',
                'msg="relayed path silent end to end; trying another relay"',
                'msg="relay carries probes but not WireGuard; trying another relay"',
                'msg="relay session rejected; trying another relay"')


def load():
    return "load %.1f/%.1f/%.1f" % os.getloadavg()


def want_path(a, b):
    if a in RELAYS or b in RELAYS or lan_of(a) == lan_of(b):
        return "direct"
    return "relay"


def path_table(m):
    """{(a, b): "direct" | "relay:<relay>" | ...} for every ordered pair, from meshctl peers."""
    out = {}
    for a in ALL:
        for b, p in peers_by_name(m, a).items():
            out[(a, b)] = p.get("path") + (":%s" % p.get("relay") if p.get("path") == "relay"
                                           else "")
    return out


def log_lines(m):
    return {n: m.log(m[n]).splitlines() for n in ALL}


def bridge_stats(m):
    """{bridge node: the delayer's counters} (SIGUSR1 makes it log them): late_max_ms is the
    worst lateness of a frame so far, the bridge's own starvation on this host."""
    out = {}
    for name in DELAY_MS:
        d = m[name].delayer
        n = d.proc.log().count("delayer: stats ")
        d.proc.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while d.proc.log().count("delayer: stats ") <= n and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [ln for ln in d.proc.log().splitlines() if ln.startswith("delayer: stats ")]
        out[name] = ast.literal_eval(lines[-1][len("delayer: stats "):]) if lines else {}
    return out


def stalls(lines):
    """late_ms of meshd's "woken late" lines (its own process starved) among `lines`."""
    return [int(mo.group(1)) for ln in lines for mo in [re.search(r" late_ms=(\d+)", ln)]
            if mo and 'msg="woken late' in ln]


def ping_seqs(proc):
    """icmp_seq of every reply in a ping's log."""
    return [int(x) for x in re.findall(r" bytes from .*icmp_seq=(\d+)", proc.log())]


def peer_of(ln):
    mo = re.search(r" peer=(\S+)", ln)
    return mo.group(1) if mo else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="--window 3600 gives false failovers over an hour of "
                                        "steady traffic (about 62 min in all).")
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "..", "..", "build"))
    ap.add_argument("--window", type=float, default=60.0,
                    help="seconds of steady traffic in which no pair may change relay or path "
                         "(default 60; 3600 for the hour)")
    ap.add_argument("--trials", type=int, default=2, help="relay kills (default 2)")
    a = ap.parse_args()
    build = os.path.abspath(a.build_dir)
    rc = preflight(build)
    if rc is not None:
        return rc
    t_start = time.monotonic()
    targs = {"delay_ms": dict(DELAY_MS), "loss_pct": {k: LOSS_PCT for k in DELAY_MS},
             "keep_tmp": bool(os.environ.get("MESH_KEEP"))}
    m = Mesh(build_dir=build, topology_args=targs)
    run_and_clean(m, lambda m: run(m, a.window, a.trials))
    return report(t_start, 60)


def run(m, window, trials):
    pods, state = {}, {}
    print("uplinks: %s ms one-way, %d %% loss each; %s" % (DELAY_MS, LOSS_PCT, load()), flush=True)

    @check("converges: ready, every pair on its path (bound %.0f s)" % LOSSY_PATHS_BOUND)
    def _():
        t0 = time.monotonic()
        m.start()
        m.wait_ready(timeout=READY_BOUND)
        figure("ready (from start)", "%.2fs" % (time.monotonic() - t0))
        m.wait_paths({(x, y): want_path(x, y) for x in ALL for y in ALL if x != y},
                     timeout=LOSSY_PATHS_BOUND)
        figure("every pair on its path (from start)", "%.2fs, %s" % (time.monotonic() - t0,
                                                                      load()))
        state["up"] = True

    if not state.get("up"):
        return

    @check("traffic: 2 relayed UDP streams (100/s) and a LAN-direct ping flowing (bound %.0f s)"
           % FLOW_BOUND)
    def _():
        for n in LAN_NODES:
            pods[n] = m.add_pod(m[n], "p")
        t0 = time.monotonic()
        state["streams"] = [UdpStream(pods[x], pods[y], pps=100, port=5555) for x, y in STREAMS]
        x, y = LAN_PAIR
        state["ping"] = pods[x].netns.popen(["stdbuf", "-oL", "ping", "-4", "-n", "-i", "0.2",
                                             pods[y].addr4], name="ping-lan")
        for (x, y), s in zip(STREAMS, state["streams"]):
            left = max(0.5, FLOW_BOUND - (time.monotonic() - t0))
            expect(s.wait_flowing(timeout=left), "stream %s -> %s not flowing within %.0f s" % (
                x, y, FLOW_BOUND))
        figure("both streams flowing (from the pods)", "%.2fs" % (time.monotonic() - t0))
        state["flowing"] = True

    if not state.get("flowing"):
        return

    @check("steady: no relay or path change in %.0f s of traffic (after %.0f s to settle)" % (
        window, SETTLE_S))
    def _():
        settle_l = {n: len(v) for n, v in log_lines(m).items()}
        time.sleep(SETTLE_S)
        before_t = path_table(m)
        before_l = {n: len(v) for n, v in log_lines(m).items()}
        early = [(n, ln) for n, v in log_lines(m).items() for ln in v[settle_l[n]:before_l[n]]
                 if any(c in ln for c in CHANGE_MSGS + VERDICT_MSGS)]
        # Not counted, but said: what changed while the streams' pairs settled.
        figure("while settling (not counted): changes / verdicts", "%d / %d %s" % (
            sum(any(c in ln for c in CHANGE_MSGS) for _, ln in early),
            sum(any(c in ln for c in VERDICT_MSGS) for _, ln in early),
            " ".join("%s>%s:%s" % (n, peer_of(ln), ln[ln.find('msg="') + 5:].split('"')[0][:40])
                     for n, ln in early if any(c in ln for c in VERDICT_MSGS))))
        seq0 = max(ping_seqs(state["ping"]) or [0])
        t0 = time.time()
        time.sleep(window)
        t1 = time.time()
        after_t = path_table(m)
        lines = {n: v[before_l[n]:] for n, v in log_lines(m).items()}
        changes = [(n, ln) for n, v in lines.items() for ln in v if any(c in ln for c in
                                                                        CHANGE_MSGS)]
        verdicts = [(n, ln) for n, v in lines.items() for ln in v if any(c in ln for c in
                                                                         VERDICT_MSGS)]
        moved = {k: (v, after_t.get(k)) for k, v in before_t.items() if after_t.get(k) != v}
        per_h = len(changes) * 3600.0 / window
        figure("steady window", "%.0f s, %s" % (window, load()))
        figure("relay/path changes in the window (all meshd)", "%d -> false failovers per hour "
               "%.1f" % (len(changes), per_h))
        figure("failover verdicts in the window (relay dead / relayed path silent / WireGuard "
               "not through / session rejected)", " / ".join(
                   str(sum(v in ln for _, ln in verdicts)) for v in VERDICT_MSGS))
        for s, (x, y) in zip(state["streams"], STREAMS):
            arr = [t for t in s.arrivals() if t0 <= t <= t1]
            gap, _ = largest_gap(arr, t0, t1)
            figure("stream %s -> %s in the window" % (x, y),
                   "%d of %d arrived (%.1f %% lost), largest gap %.0f ms" % (
                       len(arr), int(window * 100), 100.0 - len(arr) / window,
                       gap * 1000))
        seqs = [q for q in ping_seqs(state["ping"]) if q > seq0]
        sent = max(seqs or [seq0]) - seq0  # up to the last answered one (later ones in flight)
        lost = sent - len(set(seqs))
        figure("LAN-direct ping %s -> %s in the window" % LAN_PAIR, "%d of %d lost" % (
            lost, sent))
        # Starvation on this host, the testbed's own noise: meshd woken late (its core called
        # > 150 ms after its deadline) and the bridges' worst lateness (since they started).
        late = {n: stalls(v) for n, v in lines.items()}
        figure("meshd woken late in the window (count, worst ms)", " ".join(
            "%s:%d/%d" % (n, len(v), max(v or [0])) for n, v in late.items()))
        figure("bridges' worst frame lateness (ms, since start)", " ".join(
            "%s:%s" % (n, st.get("late_max_ms")) for n, st in bridge_stats(m).items()))
        detail = "\n".join("%s: %s" % (n, ln[:240]) for n, ln in changes + verdicts)
        expect(not changes and not moved, "changes: %s\nmoved: %s\n%s" % (
            ["%s>%s" % (n, peer_of(ln)) for n, ln in changes], moved, detail))
        # The LAN pair crosses no bridge: none lost.
        expect(sent > 0 and lost == 0, "LAN-direct ping: %d of %d lost" % (lost, sent))
        return "%d pairs unchanged" % len(before_t)

    for i in range(1, trials + 1):
        trial(m, state, i, i < trials)

    @check("every meshd still runs (but the killed relay, restarted between trials)")
    def _():
        dead = [n for n in ALL if not m.procs[n].alive() and n != state.get("last_killed")]
        expect(not dead, "exited: %s" % dead)

    for s in state["streams"]:
        s.stop()
    state["ping"].stop()


def trial(m, state, i, restart):
    streams = state["streams"]

    @check("failover %d: the relay in use killed, outage within %.0f s (target %.0f s)" % (
        i, FAILOVER_BOUND, TARGET_S))
    def _():
        used = {xy: peers_by_name(m, xy[0])[xy[1]] for xy in STREAMS}
        relay = used[STREAMS[0]].get("relay")
        expect(relay in RELAYS, "%s>%s not relayed: %s" % (STREAMS[0] + (used[STREAMS[0]],)))
        print("trial %d: killing %s (%s) at %s" % (i, relay, ", ".join(
            "%s>%s on %s" % (x, y, p.get("relay")) for (x, y), p in used.items()),
                                               time.strftime("%H:%M:%S")), flush=True)
        t_kill = time.time()
        m.kill(m[relay])
        state["last_killed"] = relay
        time.sleep(WATCH_S)
        t_end = time.time()
        out, worst, first = [], 0.0, None
        for (x, y), s in zip(STREAMS, streams):
            gap, at = largest_gap(s.arrivals(), t_kill - 0.2, t_end)
            outage = max(0.0, gap - PERIOD)
            on_killed = used[(x, y)].get("relay") == relay
            if on_killed:
                worst = max(worst, outage)
            if (x, y) == STREAMS[0] and at is not None:
                first = (at - t_kill, at + gap - t_kill)
            out.append("%s>%s %.0f ms%s" % (x, y, outage * 1000,
                                            "" if on_killed else " (was on the other relay)"))
        # What lan1a's meshd decided, and when (its timeout and the loss it had measured): the
        # outage is the last datagram through the dead relay, lan1a's verdict (its last PONG +
        # the timeout), then the new relayed path's one-way delay.
        said = [ln for ln in m.log(m["lan1a"]).splitlines()
                if "relay=%s " % relay in ln + " " and VERDICT_MSGS[0] in ln]
        t_said = log_time(said[-1]) if said else None
        figure("failover %d (%s killed): outage per stream, target < %.0f s" % (
            i, relay, TARGET_S), "%s (%s); %s" % (
                ", ".join(out), "met" if worst < TARGET_S else "MISSED", load()))
        figure("failover %d: %s>%s timeline after the kill" % ((i,) + STREAMS[0]),
               "last arrival via %s %s, lan1a's verdict %s (%s), first arrival via the other "
               "%s" % (relay, "%+.0f ms" % (first[0] * 1000) if first else "?",
                       "%+.0f ms" % ((t_said - t_kill) * 1000) if t_said else "none",
                       said[-1][said[-1].find("timeout_ms"):][:40] if said else "-",
                       "%+.0f ms" % (first[1] * 1000) if first else "?"))
        now = {xy: peers_by_name(m, xy[0]).get(xy[1], {}).get("relay") for xy in STREAMS}
        if worst >= TARGET_S or any(r == relay for r in now.values()):
            # What both ends of each stream on the killed relay said from the kill on: why the
            # outage was long (or the failover never came).
            for x, y in STREAMS:
                if used[(x, y)].get("relay") == relay:
                    print_logs(m, [x], t_kill - 0.5, t_end, about=(y, relay))
                    print_logs(m, [y], t_kill - 0.5, t_end, about=(x, relay))
        expect(all(r != relay for r in now.values()), "still on %s: %s" % (relay, now))
        expect(worst <= FAILOVER_BOUND, "outage %.2f s > FAILOVER_BOUND %.1f s" % (
            worst, FAILOVER_BOUND))
        state.setdefault("outages", []).append(worst)
        return ", ".join(out)

    if not restart:
        return

    @check("failover %d: the killed relay restarted, up in every LAN node and both ends' standby "
           "within %.0f s" % (i, RESTART_BOUND))
    def _():
        relay = state["last_killed"]
        t0 = time.monotonic()
        m.start(m[relay])
        m.wait_ready(timeout=READY_BOUND, nodes=[m[relay]])
        # Up in every LAN node's relays, and the warm standby of both ends of each stream: a
        # session there that the relay accepted (relaySessions), so that the next kill's
        # failover needs no session request (one lost request and its retry cost seconds).
        pending = set(LAN_NODES)
        cold = set((x, y) for x, y in STREAMS) | set((y, x) for x, y in STREAMS)
        while (pending or cold) and time.monotonic() - t0 < RESTART_BOUND:
            pending = {n for n in pending if relay_state(m, n, relay) != "up"}
            cold = {(a, b) for a, b in cold
                    if not any(r.get("relay") == relay and r.get("accepted") for r in
                               peers_by_name(m, a).get(b, {}).get("relaySessions", []))}
            time.sleep(0.2)
        expect(not pending, "%s not up in %s's relays" % (relay, sorted(pending)))
        expect(not cold, "no accepted session at %s for %s" % (
            relay, ", ".join("%s>%s" % ab for ab in sorted(cold))))
        figure("failover %d: %s restarted, up everywhere after" % (i, relay),
               "%.2fs" % (time.monotonic() - t0))
        state["last_killed"] = None


if __name__ == "__main__":
    sys.exit(main())
