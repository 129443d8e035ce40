#!/usr/bin/env python3
"""bench_mesh_throughput: iperf3 TCP throughput between pods on the e2e testbed, a direct pair
(lan1a pod -> lan1b pod, same cone-NAT LAN) and a relayed pair (lan1a pod -> lan2a pod, across
the cone and the symmetric NAT through a relay), interleaved over rounds; prints Mbit/s, the ratio
relayed/direct (target >= 0.9, printed, not asserted) and the CPU seconds of meshd (and
wireguard-go) on lan1a, lan2a and both relays during the relayed runs. Never fails on timing.

Fails (exit 1) when a figure would not be what it claims: iperf3 failed or moved nothing; before or
after a run, `meshctl peers` on either end did not show the pair on its claimed path (direct, or
relay); the relays' forwardedBytes contradict the path (the relays together forwarded fewer bytes
than the receiver of a relayed run got, or as many as the receiver of a direct run got); a meshd
died. Which relays a relayed run used is printed per run (before -> after for each direction, and the
bytes each relay forwarded); the pair may move between the relays, which is not a failure. Skips (77) without
root."""

import argparse
import json
import sys
import time

from meshbench import (Mesh, CpuSample, Failures, check_meshd_alive, check_path, meshd_pid,
                       need_root, peer, ping_until_ok, start_mesh, wg_pid)


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
    if r.returncode != 0:
        raise RuntimeError("iperf3 exit %d: %s" % (r.returncode, r.stderr[-500:]))
    return doc


def relay_bytes(m):
    """forwardedBytes of every relay node's relay service: {name: bytes} (0 while not serving)."""
    out = {}
    for n in m.relays:
        rs = m.meshctl(n, "status")["relayService"] or {}
        out[n.name] = rs.get("forwardedBytes", 0)
    return out


def relays_used(m):
    """The relays of the relayed pair as meshctl shows them: (lan1a -> lan2a, lan2a -> lan1a)."""
    return (peer(m, "lan1a", "lan2a") or {}).get("relay"), (peer(m, "lan2a", "lan1a") or {}).get(
        "relay")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    need_root("bench_mesh_throughput")
    fails = Failures("bench_mesh_throughput")
    res = {"direct": [], "relay": []}
    cpu = []
    with Mesh(build_dir=a.build_dir) as m:
        settle = start_mesh(m, {("lan1a", "lan1b"): "direct", ("lan1b", "lan1a"): "direct",
                                ("lan1a", "lan2a"): "relay", ("lan2a", "lan1a"): "relay"})
        print("mesh up, paths and WireGuard sessions ready after %.1f s" % settle)
        src = m.add_pod(m["lan1a"], "src")
        dst = {"direct": m.add_pod(m["lan1b"], "dst"), "relay": m.add_pod(m["lan2a"], "dst")}
        for kind, pod in dst.items():
            pod.netns.popen(["iperf3", "-s"], name="iperf3-server")
        time.sleep(0.5)
        for pod in dst.values():
            ping_until_ok(src, pod.addr4)
        relay = peer(m, "lan1a", "lan2a")["relay"]
        back = peer(m, "lan2a", "lan1a")["relay"]
        moves = []  # relayed runs that did not stay on one relay
        print("direct pair: pod %s@lan1a -> pod %s@lan1b (%s)" % (src.addr4, dst["direct"].addr4,
                                                                 peer(m, "lan1a", "lan1b")["path"]))
        print("relayed pair: pod %s@lan1a -> pod %s@lan2a (via %s; lan2a -> lan1a via %s)" % (
            src.addr4, dst["relay"].addr4, relay, back))
        # The claimed path of each pair, as both ends must show it before and after every run.
        claims = {"direct": [("lan1a", "lan1b", "direct"), ("lan1b", "lan1a", "direct")],
                  "relay": [("lan1a", "lan2a", "relay"), ("lan2a", "lan1a", "relay")]}
        pids = {"meshd lan1a": meshd_pid(m, m["lan1a"]), "meshd lan2a": meshd_pid(m, m["lan2a"]),
                "wireguard-go lan1a": wg_pid(m, m["lan1a"]),
                "wireguard-go lan2a": wg_pid(m, m["lan2a"])}
        for n in m.relays:  # both: the pair may move from one to the other
            pids["meshd %s" % n.name] = meshd_pid(m, n)
        for rnd in range(1, a.rounds + 1):
            for kind in ("direct", "relay"):
                when = "round %d %s" % (rnd, kind)
                for (x, y, want) in claims[kind]:
                    check_path(m, fails, x, y, want, when="before " + when)
                via0 = relays_used(m)
                b0 = relay_bytes(m)
                try:
                    with CpuSample(pids) as s:
                        doc = iperf(src, dst[kind].addr4, a.seconds)
                except RuntimeError as e:
                    fails.add("%s: %s" % (when, e))
                    doc = None
                if not check_meshd_alive(m, fails, "after " + when):
                    break
                b1 = relay_bytes(m)
                via1 = relays_used(m)
                for (x, y, want) in claims[kind]:
                    check_path(m, fails, x, y, want, when="after " + when)
                if doc is None:
                    continue
                end = doc["end"]
                got = end["sum_received"]["bytes"]
                mbps = end["sum_received"]["bits_per_second"] / 1e6
                retr = end.get("sum_sent", {}).get("retransmits")
                fwd = {r: b1.get(r, 0) - b0.get(r, 0) for r in b1}
                res[kind].append(mbps)
                print("round %d %-6s %8.1f Mbit/s (receiver), TCP retransmits %s; receiver got %.1f "
                      "MB, relays forwarded %s%s" % (
                          rnd, kind, mbps, retr, got / 1e6,
                          ", ".join("%s %.1f MB" % (r, v / 1e6) for r, v in sorted(fwd.items())),
                          "; relays before -> after: lan1a -> lan2a %s -> %s, lan2a -> lan1a %s -> %s"
                          % (via0[0], via1[0], via0[1], via1[1]) if kind == "relay" else ""),
                      flush=True)
                if kind == "relay" and via0 != via1:
                    moves.append(rnd)
                # Every byte the receiver got crossed the path: through the relays (plus WireGuard
                # and relay headers), or through none of them.
                if got == 0:
                    fails.add("%s: iperf3 moved nothing" % when)
                elif kind == "relay" and sum(fwd.values()) < got:
                    fails.add("%s: the relays forwarded %d bytes, less than the %d the receiver "
                              "got: the stream was not relayed" % (when, sum(fwd.values()), got))
                elif kind == "direct" and sum(fwd.values()) >= got:
                    fails.add("%s: the relays forwarded as many bytes as the receiver got (%s, %d):"
                              " the stream was relayed" % (when, fwd, got))
                if kind == "relay":
                    cpu.append((s.wall, s.delta))
            else:
                continue
            break  # a meshd died: later rounds would measure nothing
    print()
    print("==== bench_mesh_throughput summary (iperf3 TCP, %d s x %d rounds, interleaved) ===="
          % (a.seconds, a.rounds))
    d = sum(res["direct"]) / len(res["direct"]) if res["direct"] else 0.0
    r = sum(res["relay"]) / len(res["relay"]) if res["relay"] else 0.0
    print("direct  lan1a pod -> lan1b pod: %8.1f Mbit/s  (rounds: %s)" % (
        d, ", ".join("%.1f" % x for x in res["direct"])))
    print("relayed lan1a pod -> lan2a pod: %8.1f Mbit/s  (rounds: %s)" % (
        r, ", ".join("%.1f" % x for x in res["relay"])))
    print("ratio relayed/direct: %.2f  (target >= 0.9; %s)" % (
        r / d if d else float("nan"), "met" if d and r / d >= 0.9 else "NOT met"))
    if cpu:
        print("CPU seconds during the relayed runs (utime+stime, all threads):")
        for label in sorted(cpu[0][1]):
            secs = [c[1][label] for c in cpu]
            walls = [c[0] for c in cpu]
            print("  %-20s %s  (= %.0f%% of one core on average)" % (
                label, " / ".join("%.2f s in %.1f s" % (x, w) for x, w in zip(secs, walls)),
                100 * sum(secs) / sum(walls)))
    print("relayed runs after which meshctl showed another relay than before: %s" % (
        ", ".join("round %d" % x for x in moves) or "none"))
    if len(res["direct"]) < a.rounds or len(res["relay"]) < a.rounds:
        fails.add("measured %d direct and %d relayed runs of %d rounds" % (
            len(res["direct"]), len(res["relay"]), a.rounds))
    return fails.done()


if __name__ == "__main__":
    sys.exit(main())
