#!/usr/bin/env python3
"""bench_failover: how long a relayed pair's traffic stops when its relay's meshd dies, and whether
the relay coming back costs anything. One mesh (mesh.py's default: relay1, relay2, LAN1 cone,
LAN2 symmetric, 2 nodes each); a steady UDP stream of 100 packets/s from a pod on lan1a to a pod on
lan2a (the receiver logs the arrival time of each datagram). Each trial:

  1. kill (SIGKILL) the meshd of the relay lan1a uses for lan2a (so the relays alternate);
  2. failover outage = the largest inter-arrival gap around the kill minus the 10 ms period;
  3. start that meshd again, wait until lan1a's `meshctl relays` shows it up and the pair's warm
     standby session is bound on it again (probed as in test_mesh.py), then 2 s more;
  4. recovery outage = the largest gap from the restart to then, minus 10 ms (ideally 0: the pair
     only moves back to a clearly better relay), and whether the pair moved back.

Prints per-trial figures and the summary (median, p90, max). Never fails on timing, only when the
mesh breaks (exit 1, `FAIL:`): the killed meshd did not die; lan1a still on the dead relay after
5 s, or lan2a (the other end) still on it after 5 s; the stream stopped (no datagram in the last
second, checked after the failover and again after the recovery); another meshd died; the
restarted relay not ready, not up in lan1a's relays or without the standby session within 30 s;
a trial that breaks in any other way (meshctl failing, ...); no trial completed. Skips (77)
without root.

Usage: bench_failover.py --build-dir DIR [--trials N]
"""

import argparse
import os
import sys
import time
import traceback

from meshbench import REPO, Mesh, meshd_exits, need_root, peer, ping_until_ok, start_mesh

sys.path.insert(0, os.path.join(REPO, "test", "e2e", "mesh"))
from test_failover import UdpStream, largest_gap, relay_state  # noqa: E402
from test_mesh import probe_sessions, session_id_for  # noqa: E402

PERIOD = 0.01  # 100 packets/s


def pct(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def lost_between(arr, start, end):
    """Datagrams missing (by sequence number) among those received in [start, end]."""
    seqs = [s for t, s in arr if start <= t <= end]
    if not seqs:
        return None
    return (max(seqs) - min(seqs) + 1) - len(set(seqs))


def arrivals_seq(stream):
    out = []
    for line in stream.recv.log().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            try:
                out.append((float(parts[0]), int(parts[1])))
            except ValueError:
                pass
    return out


class Broken(Exception):
    pass


def stream_alive(stream, i, when):
    """Raises Broken when the receiver logged no datagram in the last second."""
    arr = arrivals_seq(stream)
    now = time.time()
    if not arr or now - arr[-1][0] > 1.0:
        raise Broken("trial %d: the stream stopped %s (last datagram %s)" % (
            i, when, "%.1f s ago" % (now - arr[-1][0]) if arr else "never"))
    return arr


def others_alive(m, i, when, but=None):
    """Raises Broken when a meshd other than `but` is not running."""
    dead = {k: v for k, v in meshd_exits(m).items() if k != but}
    if dead:
        raise Broken("trial %d: meshd not running %s: %s" % (i, when, ", ".join(
            "%s (exit %s)" % kv for kv in sorted(dead.items()))))


def trial(m, stream, ids, i, hold):
    relay = peer(m, "lan1a", "lan2a")["relay"]
    if relay not in ("relay1", "relay2"):
        raise Broken("lan1a>lan2a not relayed: %s" % peer(m, "lan1a", "lan2a"))
    back_before = peer(m, "lan2a", "lan1a")["relay"]
    t_kill = time.time()
    rc = m.kill(m[relay])
    t0 = time.monotonic()
    if rc is None or m.procs[relay].alive():
        raise Broken("trial %d: the meshd of %s did not die on SIGKILL" % (i, relay))
    new = relay
    while time.monotonic() - t0 < 5:
        new = peer(m, "lan1a", "lan2a")["relay"]
        if new != relay:
            break
        time.sleep(0.05)
    t_seen = time.monotonic() - t0
    if new == relay:
        raise Broken("trial %d: lan1a>lan2a still on the dead %s after 5 s" % (i, relay))
    time.sleep(max(0.0, 1.5 - (time.monotonic() - t0)))
    back_after_kill = peer(m, "lan2a", "lan1a")["relay"]
    while back_after_kill == relay and time.monotonic() - t0 < 5:
        time.sleep(0.05)
        back_after_kill = peer(m, "lan2a", "lan1a")["relay"]
    if back_after_kill == relay:
        raise Broken("trial %d: lan2a>lan1a still on the dead %s after 5 s" % (i, relay))
    t_end1 = time.time()
    arr = stream_alive(stream, i, "after the failover")
    others_alive(m, i, "after the failover", but=relay)
    gap1, at1 = largest_gap([t for t, _ in arr], t_kill - 0.2, t_end1)
    lost1 = lost_between(arr, t_kill - 0.2, t_end1)

    # restart and recovery
    t_start = time.time()
    t0 = time.monotonic()
    m.start(m[relay])
    m.wait_ready(timeout=10, nodes=[m[relay]])
    t_ready = time.monotonic() - t0
    t_up = t_sb = None
    sid = session_id_for(ids["lan1a"], ids["lan2a"], ids[relay])
    while time.monotonic() - t0 < 30 and (t_up is None or t_sb is None):
        if t_up is None and relay_state(m, "lan1a", relay) == "up":
            t_up = time.monotonic() - t0
        # The restarted relay verifies its address again (a second or two) before it serves:
        # until then it has no relay service to probe.
        if t_sb is None and m.meshctl(m[relay], "status")["relayService"] is not None:
            got = probe_sessions(m, relay, [sid], m["lan1b"], n=3)
            if got.get(sid):
                t_sb = time.monotonic() - t0
        if t_up is None or t_sb is None:
            time.sleep(0.1)
    if t_up is None or t_sb is None:
        raise Broken("trial %d: restarted %s: up in lan1a's relays %s, standby session %s "
                     "within 30 s" % (i, relay, t_up, t_sb))
    time.sleep(hold)
    t_end2 = time.time()
    arr = stream_alive(stream, i, "after the recovery")
    others_alive(m, i, "after the recovery")
    gap2, at2 = largest_gap([t for t, _ in arr], t_start, t_end2)
    lost2 = lost_between(arr, t_start, t_end2)
    now = peer(m, "lan1a", "lan2a")["relay"]
    back_now = peer(m, "lan2a", "lan1a")["relay"]
    r = {"i": i, "killed": relay, "new": new, "seen": t_seen,
         "fail_ms": max(0.0, gap1 - PERIOD) * 1000, "fail_at": (at1 or t_kill) - t_kill,
         "lost1": lost1, "ready": t_ready, "up": t_up, "standby": t_sb,
         "rec_ms": max(0.0, gap2 - PERIOD) * 1000, "lost2": lost2, "after": now,
         "moved_back": now == relay, "back": (back_before, back_after_kill, back_now)}
    print("trial %2d: kill %s -> %s (meshctl %.2fs) failover outage %6.1f ms (from %+.2fs, lost "
          "%s) | restart: ready %.2fs up %.2fs standby %.2fs, recovery outage %5.1f ms (lost %s), "
          "pair on %s%s | lan2a>lan1a %s->%s->%s" % (
              i, relay, new, t_seen, r["fail_ms"], r["fail_at"], lost1, t_ready, t_up, t_sb,
              r["rec_ms"], lost2, now, " (moved back)" if r["moved_back"] else "",
              back_before, back_after_kill, back_now), flush=True)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--hold", type=float, default=2.0,
                    help="seconds to keep measuring after the standby is back")
    a = ap.parse_args()
    need_root("bench_failover")
    t_begin = time.monotonic()
    runs = []
    broken = None
    quiet = PERIOD
    with Mesh(build_dir=a.build_dir) as m:
        settle = start_mesh(m, {("lan1a", "lan2a"): "relay", ("lan2a", "lan1a"): "relay"})
        print("mesh up, lan1a <-> lan2a relayed with a WireGuard session after %.1f s" % settle)
        src = m.add_pod(m["lan1a"], "src")
        dst = m.add_pod(m["lan2a"], "dst")
        ping_until_ok(src, dst.addr4)
        ids = {n.name: m.meshctl(n, "status")["node"]["id"] for n in m.nodes}
        stream = UdpStream(src, dst, pps=100)
        if not stream.wait_flowing():
            print("FAIL: the UDP stream %s -> %s does not flow" % (src.addr4, dst.addr4))
            return 1
        print("stream: pod %s@lan1a -> pod %s@lan2a, 100 datagrams/s; %d trials" % (
            src.addr4, dst.addr4, a.trials), flush=True)
        t_q = time.time()
        time.sleep(3)
        quiet, _ = largest_gap(stream.arrivals(), t_q, time.time())
        print("baseline (no kill, 3 s): largest gap - 10 ms = %.1f ms (sender/receiver jitter)"
              % max(0.0, (quiet - PERIOD) * 1000), flush=True)
        try:
            for i in range(1, a.trials + 1):
                runs.append(trial(m, stream, ids, i, a.hold))
        except Exception as e:  # noqa: BLE001 - any break ends the trials; the summary still prints
            broken = str(e) if isinstance(e, Broken) else "trial %d: %s" % (
                len(runs) + 1, traceback.format_exc())
            print("BROKEN: %s" % broken)
            for n in ("lan1a", "lan2a", "relay1", "relay2"):
                print(m._describe(m[n]))
        stream.stop()
    fail = [r["fail_ms"] for r in runs]
    rec = [r["rec_ms"] for r in runs]
    print()
    print("==== bench_failover summary: %d trials, UDP 100/s lan1a pod -> lan2a pod, SIGKILL of "
          "the relay's meshd in use ====" % len(runs))
    if runs:
        print("baseline jitter (largest gap - 10 ms over 3 s without a kill): %.1f ms" % max(
            0.0, (quiet - PERIOD) * 1000))
        print("failover outage (largest gap - 10 ms): median %.0f ms, p90 %.0f ms, max %.0f ms, "
              "min %.0f ms" % (pct(fail, 50), pct(fail, 90), max(fail), min(fail)))
        print("recovery outage (restart + standby + %.0f s): median %.0f ms, p90 %.0f ms, max "
              "%.0f ms" % (a.hold, pct(rec, 50), pct(rec, 90), max(rec)))
        print("meshctl shows the new relay after: median %.2f s, max %.2f s" % (
            pct([r["seen"] for r in runs], 50), max(r["seen"] for r in runs)))
        print("restarted relay up in lan1a's relays after: median %.2f s, max %.2f s; standby "
              "session bound after: median %.2f s, max %.2f s" % (
                  pct([r["up"] for r in runs], 50), max(r["up"] for r in runs),
                  pct([r["standby"] for r in runs], 50), max(r["standby"] for r in runs)))
        print("pair moved back to the recovered relay: %d of %d trials" % (
            sum(r["moved_back"] for r in runs), len(runs)))
        print("killed: relay1 %d, relay2 %d" % (sum(r["killed"] == "relay1" for r in runs),
                                                sum(r["killed"] == "relay2" for r in runs)))
    print("total run time %.1f s" % (time.monotonic() - t_begin))
    if not runs and not broken:
        broken = "no trial completed (--trials %d)" % a.trials
    if broken:
        print("FAIL: %s" % broken)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
