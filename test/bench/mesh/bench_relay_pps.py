#!/usr/bin/env python3
"""bench_relay_pps: the whole relay daemon under load. Two nodes behind NAT (lan1a behind the cone
NAT, lan2a behind the symmetric NAT) talk through a relay; iperf3 UDP with small datagrams
(-u -b 0 -l 200, unlimited rate) runs between their pods; the relays' `meshctl status --json`
relayService.forwardedPackets/Bytes before and after give the packets per second the relays' meshd
forwarded, and /proc gives their CPU (utime+stime delta / wall). Prints figures, never fails on them.
(test/bench/relay measures the forwarder alone on loopback.) Both relays are sampled: the pair may
move from one to the other during a run (printed, not a failure); the figures are their sum.

Fails (exit 1) when the relays did not forward the stream: iperf3 failed (no JSON, an error, a
non-zero exit) or nothing arrived; the relays forwarded fewer packets than the datagrams that
arrived (each crossed a relay once); before or after a run, `meshctl peers` on either end did not
show the pair relayed; a meshd died. Skips (77) without root."""

import argparse
import json
import sys
import time

from meshbench import (Mesh, CpuSample, Failures, check_meshd_alive, check_path, meshd_pid,
                       need_root, peer, ping_until_ok, start_mesh, wg_pid)


def relay_counters(m):
    """{relay name: (forwardedPackets, forwardedBytes, drops)} of every relay node."""
    out = {}
    for n in m.relays:
        rs = m.meshctl(n, "status")["relayService"] or {}
        out[n.name] = (rs.get("forwardedPackets", 0), rs.get("forwardedBytes", 0),
                       rs.get("drops", {}))
    return out


def relays_used(m):
    """The pair's relays as meshctl shows them: (lan1a -> lan2a, lan2a -> lan1a)."""
    return (peer(m, "lan1a", "lan2a") or {}).get("relay"), (peer(m, "lan2a", "lan1a") or {}).get(
        "relay")


def iperf_udp(src, addr, length, seconds, extra):
    """iperf3 UDP from src to addr: the JSON document; raises RuntimeError when iperf3 failed."""
    r = src.run(["iperf3", "-c", addr, "-u", "-l", str(length), "-t", str(seconds), "-J"] + extra,
                check=False, timeout=seconds + 30)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--length", type=int, default=200)
    a = ap.parse_args()
    need_root("bench_relay_pps")
    fails = Failures("bench_relay_pps")
    runs = []
    with Mesh(build_dir=a.build_dir) as m:
        settle = start_mesh(m, {("lan1a", "lan2a"): "relay", ("lan2a", "lan1a"): "relay"})
        print("mesh up, lan1a <-> lan2a relayed with a WireGuard session after %.1f s" % settle)
        src = m.add_pod(m["lan1a"], "src")
        dst = m.add_pod(m["lan2a"], "dst")
        dst.netns.popen(["iperf3", "-s"], name="iperf3-server")
        time.sleep(0.5)
        ping_until_ok(src, dst.addr4)
        relay = peer(m, "lan1a", "lan2a")["relay"]
        print("pair: pod %s@lan1a -> pod %s@lan2a through %s" % (src.addr4, dst.addr4, relay))
        relays = [n.name for n in m.relays]
        pids = {"meshd lan1a": meshd_pid(m, m["lan1a"]), "meshd lan2a": meshd_pid(m, m["lan2a"]),
                "wireguard-go lan1a": wg_pid(m, m["lan1a"]),
                "wireguard-go lan2a": wg_pid(m, m["lan2a"])}
        for name in relays:
            pids["meshd " + name] = meshd_pid(m, m[name])
        for label, extra in (("unlimited", ["-b", "0"]), ("100 Mbit/s offered", ["-b", "100M"])):
            for x, y in (("lan1a", "lan2a"), ("lan2a", "lan1a")):
                check_path(m, fails, x, y, "relay", when="before the %s run" % label)
            via0 = relays_used(m)
            c0 = relay_counters(m)
            try:
                with CpuSample(pids) as s:
                    doc = iperf_udp(src, dst.addr4, a.length, a.seconds, extra)
            except RuntimeError as e:
                fails.add("%s run: %s" % (label, e))
                doc = None
            if not check_meshd_alive(m, fails, "after the %s run" % label):
                break
            c1 = relay_counters(m)
            via1 = relays_used(m)
            for x, y in (("lan1a", "lan2a"), ("lan2a", "lan1a")):
                check_path(m, fails, x, y, "relay", when="after the %s run" % label)
            if doc is None:
                continue
            per = {r: (c1[r][0] - c0[r][0], c1[r][1] - c0[r][1]) for r in relays}
            fwd_pkts = sum(p for p, _ in per.values())
            fwd_bytes = sum(b for _, b in per.values())
            summ = doc["end"]["sum"]
            sent = doc["end"].get("sum_sent", summ).get("packets", summ.get("packets"))
            rcv = doc["end"].get("sum_received", summ)
            arrived = rcv.get("bytes", 0) // a.length  # fixed-size datagrams: exact
            secs = summ.get("seconds") or a.seconds
            relay_cpu = sum(s.delta["meshd " + r] for r in relays)
            run = {"label": label, "wall": s.wall, "fwd_pkts": fwd_pkts, "fwd_bytes": fwd_bytes,
                   "pps": fwd_pkts / s.wall, "cpu": s.delta, "sent": sent, "arrived": arrived,
                   "sent_pps": sent / secs if sent else None, "per": per, "relay_cpu": relay_cpu,
                   "lost_pct": rcv.get("lost_percent", summ.get("lost_percent")),
                   "recv_mbps": rcv.get("bits_per_second", 0) / 1e6, "via": (via0, via1),
                   "drops": {"%s %s" % (r, k): v - c0[r][2].get(k, 0)
                             for r in relays for k, v in c1[r][2].items()
                             if v - c0[r][2].get(k, 0)}}
            runs.append(run)
            print("%-18s relays forwarded %d packets / %.1f s = %.0f pps (%.1f Mbit/s UDP payload; "
                  "%s); iperf3 sent %s datagrams (%s/s), %d arrived, lost %.1f%%; relay meshd CPU "
                  "%.0f%%; relays before -> after: lan1a -> lan2a %s -> %s, lan2a -> lan1a %s -> %s"
                  % (label, fwd_pkts, s.wall, run["pps"], 8 * fwd_bytes / s.wall / 1e6,
                     ", ".join("%s %d" % (r, p) for r, (p, _) in sorted(per.items())), sent,
                     "%.0f" % run["sent_pps"] if sent else "?", arrived, run["lost_pct"] or 0,
                     100 * relay_cpu / s.wall, via0[0], via1[0], via0[1], via1[1]), flush=True)
            # Every datagram that arrived crossed a relay once (WireGuard sends each as one
            # packet), so the relays forwarded at least as many packets.
            if arrived == 0:
                fails.add("%s run: no datagram arrived" % label)
            elif fwd_pkts < arrived:
                fails.add("%s run: the relays forwarded %d packets, fewer than the %d datagrams "
                          "that arrived: the stream was not relayed" % (label, fwd_pkts, arrived))
    print()
    print("==== bench_relay_pps summary (iperf3 UDP, %d-byte datagrams, %d s, lan1a pod -> lan2a "
          "pod, first through %s) ====" % (a.length, a.seconds, relay))
    for run in runs:
        print("%-18s relays forwarded %.0f packets/s, %.1f Mbit/s (both directions, UDP payload "
              "incl. WireGuard and relay headers)" % (run["label"], run["pps"],
                                                    8 * run["fwd_bytes"] / run["wall"] / 1e6))
        cpu = run["cpu"]
        print("%-18s CPU %% of one core: %s" % ("", ", ".join(
            "%s %.0f%%" % (k, 100 * v / run["wall"]) for k, v in sorted(cpu.items()))))
        if run["relay_cpu"] > 0:
            print("%-18s relay meshd: %.1f us CPU per forwarded packet; iperf3 goodput %.1f Mbit/s,"
                  " loss %.1f%%%s" % ("", 1e6 * run["relay_cpu"] / max(run["fwd_pkts"], 1),
                                     run["recv_mbps"], run["lost_pct"] or 0,
                                     ("; relay drops %s" % run["drops"]) if run["drops"] else ""))
        if run["via"][0] != run["via"][1]:
            print("%-18s the pair moved between the relays during the run: %s" % (
                "", ", ".join("%s %d packets" % (r, p) for r, (p, _) in sorted(run["per"].items()))))
    if len(runs) < 2:
        fails.add("measured %d of 2 runs" % len(runs))
    return fails.done()


if __name__ == "__main__":
    sys.exit(main())
