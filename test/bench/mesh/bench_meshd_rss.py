#!/usr/bin/env python3
"""bench_meshd_rss: meshd memory. (1) On the e2e testbed (6 meshd, 2 relays, 2 NATed LANs) after
paths settle: VmRSS and VmHWM of a relay's meshd and a LAN node's meshd (and their wireguard-go,
a separate process with the userspace backend). (2) At scale, on the simulated network:
core_rss_bench (test/bench/mesh/core_rss_bench.cpp) runs one observed node_core (the relay) plus N
simulated peers that speak the real sealed protocol, and prints the RSS growth per core and the
observed node's peers and records. Default 500 peers in 10 LANs, 1 s virtual after the observed node
knows all (about 2.5 min wall on 2 cores: every core verifies every other's signed record, O(N^2);
CORE_RSS_PEERS=200 takes ~20 s). Prints figures.

--part testbed or sim runs one of the two (the suite runs them as bench_meshd_rss and
bench_core_rss; the second beside other CPU-only tests).

Fails (exit 1) when a figure is missing or would not be what it claims: a meshd not running when
sampled (or dead by the end of the testbed part), no VmRSS/VmHWM for a process that must have one
(meshd on relay1 and lan1a, and their wireguard-go with the userspace backend), core_rss_bench
crashing, failing (it checks that every simulated core knows every other), timing out or printing
no complete RESULT line. Skips (77) without root.

A real meshd with 500 real peers is not run: the peers would have to speak the sealed protocol
(XChaCha20-Poly1305 + Ed25519 records), so the at-scale figure is node_core's, measured in
process on the simulator."""

import argparse
import os
import re
import subprocess
import sys
import time

from meshbench import (Failures, Mesh, check_meshd_alive, meshd_pid, need_root, start_mesh,
                       status_kb, wg_pid)

RESULT_KEYS = ("peers", "lans", "all_known", "known_after_ms", "rss_growth_kib", "kib_per_core",
               "heap_kib_per_core", "obs_peers", "obs_records", "obs_sessions")


def sample(fails, rows, node, what, pid, peers):
    """Appends (node, what, {VmRSS, VmHWM} KiB, peers) to rows; a failure when the process is gone
    or /proc has no figure for it."""
    try:
        kb = status_kb(pid) if pid else {}
    except OSError as e:
        kb = {}
        fails.add("%s on %s: /proc/%s/status: %s" % (what, node, pid, e))
        return
    if "VmRSS" not in kb or "VmHWM" not in kb:
        fails.add("%s on %s (pid %s): no VmRSS/VmHWM (%s)" % (what, node, pid, kb))
        return
    rows.append((node, what, kb, peers))


def testbed(a, fails, rows):
    """Part 1: meshd and wireguard-go of relay1 and lan1a on the settled 6-node testbed."""
    with Mesh(build_dir=a.build_dir) as m:
        settle = start_mesh(m, {("lan1a", "lan1b"): "direct", ("lan1a", "lan2a"): "relay"})
        time.sleep(2)
        print("testbed mesh settled after %.1f s (+2 s idle)" % settle)
        if check_meshd_alive(m, fails, "when sampled", ("relay1", "lan1a")):
            for name in ("relay1", "lan1a"):
                n = m[name]
                st = m.meshctl(n, "status")
                sample(fails, rows, name, "meshd", meshd_pid(m, n), st["peers"]["total"])
                wp = wg_pid(m, n)
                if wp or m.configs[name]["wireguard"].get("backend") == "userspace":
                    sample(fails, rows, name, "wireguard-go", wp, st["peers"]["total"])
            check_meshd_alive(m, fails, "at the end of the testbed part")


def simulated(a, fails):
    """Part 2: core_rss_bench. Returns its RESULT fields ({} when it failed) and its wall time."""
    exe = os.environ.get("CORE_RSS_BENCH") or os.path.join(a.build_dir, "test", "bench", "mesh",
                                                           "core_rss_bench")
    cmd = [exe, "--peers", str(a.peers), "--lans", str(a.lans), "--seconds", str(a.seconds),
           "--settle", str(a.settle)]
    print("$ " + " ".join(cmd))
    t0 = time.monotonic()
    try:
        # bounded below the ctest TIMEOUT (900 s) so that a hang is reported here, with its output
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=800)
        out = p.stdout
        print(out.rstrip())
        if p.returncode != 0:
            fails.add("core_rss_bench %s: %s" % (
                "killed by signal %d" % -p.returncode if p.returncode < 0
                else "exit %d" % p.returncode, p.stderr[-2000:]))
    except (OSError, subprocess.TimeoutExpired) as e:
        out = e.stdout if isinstance(getattr(e, "stdout", None), str) else ""
        fails.add("core_rss_bench: %s" % e)
    res = dict(re.findall(r"(\w+)=([\d.]+)", (re.findall(r"^RESULT .*$", out, re.M) or [""])[0]))
    missing = [k for k in RESULT_KEYS if k not in res]
    if missing:
        fails.add("core_rss_bench printed no complete RESULT line (missing %s)" % ", ".join(missing))
        res = {}
    return res, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--peers", type=int, default=int(os.environ.get("CORE_RSS_PEERS", 500)))
    ap.add_argument("--lans", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--settle", type=int, default=1)
    ap.add_argument("--part", choices=("all", "testbed", "sim"), default="all",
                    help="testbed: the 6-node testbed only (root); sim: core_rss_bench only (no "
                         "root, CPU only: the suite runs it beside other such tests)")
    a = ap.parse_args()
    if a.part != "sim":
        need_root("bench_meshd_rss")
    fails = Failures("bench_meshd_rss")
    rows = []
    if a.part != "sim":
        testbed(a, fails, rows)
    for name, what, kb, peers in rows:
        print("idle %-7s %-13s VmRSS %6d KiB  VmHWM %6d KiB  (%d peers)" % (
            name, what, kb["VmRSS"], kb["VmHWM"], peers))
    res, wall = simulated(a, fails) if a.part != "testbed" else ({}, 0.0)

    print()
    print("==== bench_meshd_rss summary ====")
    for name, what, kb, peers in rows:
        print("testbed idle %-7s %-13s VmRSS %6.1f MiB  VmHWM %6.1f MiB  (%d peers)" % (
            name, what, kb["VmRSS"] / 1024, kb["VmHWM"] / 1024, peers))
    if res:
        print("simulated: 1 relay node_core + %s peers in %s LANs (%.0f s wall): RSS growth %.1f MiB"
              " = %s KiB per core, heap in use %s KiB per core (every core knows every other; RSS"
              " keeps the formation's peak)" % (
                  res["peers"], res["lans"], wall, float(res["rss_growth_kib"]) / 1024,
                  res["kib_per_core"], res["heap_kib_per_core"]))
        print("simulated observed relay node: %s peers, %s records stored, %s relay sessions; all "
              "peers known: %s (after %s ms virtual)" % (
                  res["obs_peers"], res["obs_records"], res["obs_sessions"],
                  "yes" if res["all_known"] == "1" else "no", res["known_after_ms"]))
    return fails.done()


if __name__ == "__main__":
    sys.exit(main())
