#!/usr/bin/env python3
"""bench_mesh_throughput: iperf3 TCP throughput between pods on the e2e testbed, a direct pair
(lan1a pod -> lan1b pod, same cone-NAT LAN) and a relayed pair (lan1a pod -> lan2a pod, across
the cone and the symmetric NAT through a relay), interleaved over rounds; prints Mbit/s, the ratio
relayed/direct (target >= 0.9, printed, not asserted) and the CPU seconds of meshd (and
wireguard-go) on lan1a, lan2a and the relay during the relayed runs. Never fails on timing."""

import argparse
import json
import sys
import time

from meshbench import (Mesh, CpuSample, meshd_pid, need_root, peer, ping_until_ok, start_mesh,
                       wg_pid)


def iperf(client, server_addr, seconds, extra=()):
    cmd = ["iperf3", "-c", server_addr, "-t", str(seconds), "-J"] + list(extra)
    r = client.run(cmd, check=False, timeout=seconds + 30)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        raise RuntimeError("iperf3 gave no JSON (exit %d): %s %s" % (r.returncode, r.stdout[-500:],
                                                                   r.stderr[-500:]))
    if "error" in doc:
        raise RuntimeError("iperf3: %s" % doc["error"])
    return doc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    need_root("bench_mesh_throughput")
    res = {"direct": [], "relay": []}
    cpu = []
    with Mesh(build_dir=a.build_dir) as m:
        settle = start_mesh(m, {("lan1a", "lan1b"): "direct", ("lan1a", "lan2a"): "relay"})
        print("mesh up, paths and WireGuard sessions ready after %.1f s" % settle)
        src = m.add_pod(m["lan1a"], "src")
        dst = {"direct": m.add_pod(m["lan1b"], "dst"), "relay": m.add_pod(m["lan2a"], "dst")}
        for kind, pod in dst.items():
            pod.netns.popen(["iperf3", "-s"], name="iperf3-server")
        time.sleep(0.5)
        for pod in dst.values():
            ping_until_ok(src, pod.addr4)
        relay = peer(m, "lan1a", "lan2a")["relay"]
        print("direct pair: pod %s@lan1a -> pod %s@lan1b (%s)" % (src.addr4, dst["direct"].addr4,
                                                                 peer(m, "lan1a", "lan1b")["path"]))
        print("relayed pair: pod %s@lan1a -> pod %s@lan2a (via %s)" % (src.addr4,
                                                                      dst["relay"].addr4, relay))
        pids = {"meshd lan1a": meshd_pid(m, m["lan1a"]), "meshd lan2a": meshd_pid(m, m["lan2a"]),
                "meshd %s" % relay: meshd_pid(m, m[relay]),
                "wireguard-go lan1a": wg_pid(m, m["lan1a"]),
                "wireguard-go lan2a": wg_pid(m, m["lan2a"])}
        for rnd in range(1, a.rounds + 1):
            for kind in ("direct", "relay"):
                with CpuSample(pids) as s:
                    doc = iperf(src, dst[kind].addr4, a.seconds)
                end = doc["end"]
                mbps = end["sum_received"]["bits_per_second"] / 1e6
                retr = end.get("sum_sent", {}).get("retransmits")
                res[kind].append(mbps)
                print("round %d %-6s %8.1f Mbit/s (receiver), TCP retransmits %s" % (
                    rnd, kind, mbps, retr))
                if kind == "relay":
                    cpu.append((s.wall, s.delta))
            # whether the relayed pair stayed on its relay
            p = peer(m, "lan1a", "lan2a")
            if p["path"] != "relay" or p["relay"] != relay:
                print("  note: lan1a -> lan2a is now %s via %s" % (p["path"], p["relay"]))
    d = sum(res["direct"]) / len(res["direct"])
    r = sum(res["relay"]) / len(res["relay"])
    print()
    print("==== bench_mesh_throughput summary (iperf3 TCP, %d s x %d rounds, interleaved) ===="
          % (a.seconds, a.rounds))
    print("direct  lan1a pod -> lan1b pod: %8.1f Mbit/s  (rounds: %s)" % (
        d, ", ".join("%.1f" % x for x in res["direct"])))
    print("relayed lan1a pod -> lan2a pod: %8.1f Mbit/s  (rounds: %s)" % (
        r, ", ".join("%.1f" % x for x in res["relay"])))
    print("ratio relayed/direct: %.2f  (target >= 0.9; %s)" % (
        r / d if d else float("nan"), "met" if d and r / d >= 0.9 else "NOT met"))
    print("CPU seconds during the relayed runs (utime+stime, all threads):")
    for label in sorted(cpu[0][1]):
        secs = [c[1][label] for c in cpu]
        walls = [c[0] for c in cpu]
        print("  %-20s %s  (= %.0f%% of one core on average)" % (
            label, " / ".join("%.2f s in %.1f s" % (x, w) for x, w in zip(secs, walls)),
            100 * sum(secs) / sum(walls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
