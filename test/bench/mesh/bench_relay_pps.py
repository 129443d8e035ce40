#!/usr/bin/env python3
"""bench_relay_pps: the whole relay daemon under load. Two nodes behind NAT (lan1a behind the cone
NAT, lan2a behind the symmetric NAT) talk through a relay; iperf3 UDP with small datagrams
(-u -b 0 -l 200, unlimited rate) runs between their pods; the relay's `meshctl status --json`
relayService.forwardedPackets/Bytes before and after give the packets per second the relay's meshd
forwarded, and /proc gives its CPU (utime+stime delta / wall). Prints figures, never fails on them.
(test/bench/relay measures the forwarder alone on loopback.)"""

import argparse
import json
import sys
import time

from meshbench import (Mesh, CpuSample, meshd_pid, need_root, peer, ping_until_ok, start_mesh,
                       wg_pid)


def relay_counters(m, relay):
    rs = m.meshctl(m[relay], "status")["relayService"] or {}
    return rs.get("forwardedPackets", 0), rs.get("forwardedBytes", 0), rs.get("drops", {})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--length", type=int, default=200)
    a = ap.parse_args()
    need_root("bench_relay_pps")
    runs = []
    with Mesh(build_dir=a.build_dir) as m:
        settle = start_mesh(m, {("lan1a", "lan2a"): "relay"})
        print("mesh up, lan1a <-> lan2a relayed with a WireGuard session after %.1f s" % settle)
        src = m.add_pod(m["lan1a"], "src")
        dst = m.add_pod(m["lan2a"], "dst")
        dst.netns.popen(["iperf3", "-s"], name="iperf3-server")
        time.sleep(0.5)
        ping_until_ok(src, dst.addr4)
        relay = peer(m, "lan1a", "lan2a")["relay"]
        print("pair: pod %s@lan1a -> pod %s@lan2a through %s" % (src.addr4, dst.addr4, relay))
        pids = {"meshd " + relay: meshd_pid(m, m[relay]), "meshd lan1a": meshd_pid(m, m["lan1a"]),
                "meshd lan2a": meshd_pid(m, m["lan2a"]),
                "wireguard-go lan1a": wg_pid(m, m["lan1a"]),
                "wireguard-go lan2a": wg_pid(m, m["lan2a"])}
        for label, extra in (("unlimited", ["-b", "0"]), ("100 Mbit/s offered", ["-b", "100M"])):
            p0, b0, _ = relay_counters(m, relay)
            with CpuSample(pids) as s:
                r = src.run(["iperf3", "-c", dst.addr4, "-u", "-l", str(a.length), "-t",
                             str(a.seconds), "-J"] + extra, check=False, timeout=a.seconds + 30)
            p1, b1, drops = relay_counters(m, relay)
            doc = json.loads(r.stdout)
            if "error" in doc:
                raise RuntimeError("iperf3: %s" % doc["error"])
            summ = doc["end"]["sum"]
            sent = doc["end"].get("sum_sent", summ).get("packets", summ.get("packets"))
            secs = summ.get("seconds") or a.seconds
            run = {"label": label, "wall": s.wall, "fwd_pkts": p1 - p0, "fwd_bytes": b1 - b0,
                   "pps": (p1 - p0) / s.wall, "cpu": s.delta, "sent": sent,
                   "sent_pps": sent / secs if sent else None,
                   "lost_pct": summ.get("lost_percent"),
                   "recv_mbps": doc["end"].get("sum_received", summ).get("bits_per_second", 0) / 1e6,
                   "drops": {k: v for k, v in drops.items() if v}}
            runs.append(run)
            print("%-18s relay forwarded %d packets / %.1f s = %.0f pps (%.1f Mbit/s UDP payload); "
                  "iperf3 sent %s datagrams (%s/s), lost %.1f%%; relay meshd CPU %.0f%%" % (
                      label, run["fwd_pkts"], s.wall, run["pps"], 8 * run["fwd_bytes"] / s.wall / 1e6,
                      sent, "%.0f" % run["sent_pps"] if sent else "?", run["lost_pct"] or 0,
                      100 * s.delta["meshd " + relay] / s.wall))
    print()
    print("==== bench_relay_pps summary (iperf3 UDP, %d-byte datagrams, %d s, lan1a pod -> lan2a "
          "pod through %s) ====" % (a.length, a.seconds, relay))
    for run in runs:
        print("%-18s relay forwarded %.0f packets/s, %.1f Mbit/s (both directions, UDP payload "
              "incl. WireGuard and relay headers)" % (run["label"], run["pps"],
                                                    8 * run["fwd_bytes"] / run["wall"] / 1e6))
        cpu = run["cpu"]
        print("%-18s CPU %% of one core: %s" % ("", ", ".join(
            "%s %.0f%%" % (k, 100 * v / run["wall"]) for k, v in sorted(cpu.items()))))
        relay_cpu = cpu["meshd " + relay]
        if relay_cpu > 0:
            print("%-18s relay meshd: %.1f us CPU per forwarded packet; iperf3 goodput %.1f Mbit/s,"
                  " loss %.1f%%%s" % ("", 1e6 * relay_cpu / max(run["fwd_pkts"], 1),
                                     run["recv_mbps"], run["lost_pct"] or 0,
                                     ("; relay drops %s" % run["drops"]) if run["drops"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
