#!/usr/bin/env python3
"""bench_meshd_rss: meshd memory. (1) On the e2e testbed (6 meshd, 2 relays, 2 NATed LANs) after
paths settle: VmRSS and VmHWM of a relay's meshd and a LAN node's meshd (and their wireguard-go,
a separate process with the userspace backend). (2) At scale, on the simulated network:
core_rss_bench (test/bench/mesh/core_rss_bench.cpp) runs one observed node_core (the relay) plus N
simulated peers that speak the real sealed protocol, and prints the RSS growth per core and the
observed node's peers and records. Default 500 peers in 10 LANs, 1 s virtual after the observed node
knows all (about 2.5 min wall on 2 cores: every core verifies every other's signed record, O(N^2);
CORE_RSS_PEERS=200 takes ~20 s). Prints figures.

A real meshd with 500 real peers is not run: the peers would have to speak the sealed protocol
(XChaCha20-Poly1305 + Ed25519 records), so the at-scale figure is node_core's, measured in
process on the simulator."""

import argparse
import os
import re
import subprocess
import sys
import time

from meshbench import Mesh, meshd_pid, need_root, start_mesh, status_kb, wg_pid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--peers", type=int, default=int(os.environ.get("CORE_RSS_PEERS", 500)))
    ap.add_argument("--lans", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--settle", type=int, default=1)
    a = ap.parse_args()
    need_root("bench_meshd_rss")
    rows = []
    with Mesh(build_dir=a.build_dir) as m:
        settle = start_mesh(m, {("lan1a", "lan1b"): "direct", ("lan1a", "lan2a"): "relay"})
        time.sleep(2)
        print("testbed mesh settled after %.1f s (+2 s idle)" % settle)
        for name in ("relay1", "lan1a"):
            n = m[name]
            st = m.meshctl(n, "status")
            mp = meshd_pid(m, n)
            rows.append((name, "meshd", status_kb(mp), st["peers"]["total"]))
            wp = wg_pid(m, n)
            if wp:
                rows.append((name, "wireguard-go", status_kb(wp), st["peers"]["total"]))
    for name, what, kb, peers in rows:
        print("idle %-7s %-13s VmRSS %6d KiB  VmHWM %6d KiB  (%d peers)" % (
            name, what, kb["VmRSS"], kb["VmHWM"], peers))

    exe = os.environ.get("CORE_RSS_BENCH") or os.path.join(a.build_dir, "test", "bench", "mesh",
                                                           "core_rss_bench")
    cmd = [exe, "--peers", str(a.peers), "--lans", str(a.lans), "--seconds", str(a.seconds),
           "--settle", str(a.settle)]
    print("$ " + " ".join(cmd))
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    print(p.stdout.rstrip())
    if p.returncode != 0:
        print("core_rss_bench exit %d: %s" % (p.returncode, p.stderr[-2000:]))
    res = dict(re.findall(r"(\w+)=([\d.]+)", (re.findall(r"^RESULT .*$", p.stdout, re.M) or [""])[0]))

    print()
    print("==== bench_meshd_rss summary ====")
    for name, what, kb, peers in rows:
        print("testbed idle %-7s %-13s VmRSS %6.1f MiB  VmHWM %6.1f MiB  (%d peers)" % (
            name, what, kb["VmRSS"] / 1024, kb["VmHWM"] / 1024, peers))
    if res:
        print("simulated: 1 relay node_core + %s peers in %s LANs (%.0f s wall): RSS growth %.1f MiB"
              " = %s KiB per core (every core knows every other)" % (
                  res["peers"], res["lans"], time.monotonic() - t0,
                  float(res["rss_growth_kib"]) / 1024, res["kib_per_core"]))
        print("simulated observed relay node: %s peers, %s records stored, %s relay sessions; all "
              "peers known: %s (after %s ms virtual)" % (
                  res["obs_peers"], res["obs_records"], res["obs_sessions"],
                  "yes" if res["all_known"] == "1" else "no", res["known_after_ms"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
