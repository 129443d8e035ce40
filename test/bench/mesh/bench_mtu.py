#!/usr/bin/env python3
"""bench_mtu (issue 15): iperf3 TCP throughput and retransmits pod(lan2a) -> pod(lan1a) over the
relayed pair of the e2e testbed, lan2a reaching the relays over IPv6 (the worst case): with 1500
bytes everywhere, with nat2's WAN link at 1400 (a smaller hop behind the NAT, whose ICMP "too big"
reaches lan2a), and with it at 1400 and nat2's ICMP errors dropped (the black hole: nothing tells
anyone; iperf3 runs twice as long), the link lowered just before iperf3 starts. Per run: Mbit/s, retransmits, the seconds
that moved nothing, and the IP fragments created meanwhile at lan2a, relay1, relay2 and nat2
(FragCreates of /proc/net/snmp and /proc/net/snmp6). Each build runs twice in one invocation:
`pathMtuDiscovery: false` (before: the interface MTU follows the kernel's ICMP-learned path MTU
only) and true (after: padded probes, route MTUs). With --before-build another build (e.g.
main's) runs first, with its own defaults. Never fails on timing.

Fails (exit 1) when a figure would not be what it claims: a 1500-byte run moved nothing (iperf3
failed or 0 bytes), or the pair was not relayed. The 1400 runs may stall (a black hole: that is a
result, printed as 0). Skips (77) without root or iperf3.

Usage: bench_mtu.py --build-dir DIR [--before-build DIR] [--seconds 8]
"""

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "e2e", "mesh"))

from mesh import Mesh  # noqa: E402
from test_mtu import NO_ICMP_TABLE, frag_creates  # noqa: E402

NODES = ["lan2a", "relay1", "relay2", "nat2"]


def frags(node):
    v4, v6 = frag_creates(node)
    return v4 + v6


def iperf(src, dst, seconds):
    """(Mbit/s received, retransmits, seconds that moved nothing, error or None)."""
    r = src.run(["iperf3", "-c", dst.addr4, "-t", str(seconds), "-i", "1", "-J",
                 "--connect-timeout", "5000"], check=False, timeout=seconds + 40)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        return 0.0, 0, seconds, "no JSON (exit %d)" % r.returncode
    end = doc.get("end", {})
    mbps = end.get("sum_received", {}).get("bits_per_second", 0) / 1e6
    retr = end.get("sum_sent", {}).get("retransmits", 0)
    stalled = sum(1 for iv in doc.get("intervals", [])
                  if iv.get("sum", {}).get("bits_per_second", 0) < 1e6)
    return mbps, retr, stalled, doc.get("error")



def run_mesh(build, seconds, pmtu, hops):
    """One testbed; iperf3 once per (hop MTU, nat2's ICMP on) in `hops`, in order."""
    rows = []
    m = Mesh(build_dir=build)
    try:
        cfg = m.configs["lan2a"]
        cfg["relayNodes"] = [{"nodeName": r["nodeName"],
                              "advertiseAddress": [a for a in r["advertiseAddress"] if ":" in a]}
                             for r in cfg["relayNodes"]]
        if pmtu is not None:
            for n in ("lan1a", "lan2a"):
                m.configs[n]["pathMtuDiscovery"] = pmtu
        for n in ("lan1a", "lan2a"):
            m.write_config(m[n])
        m.start()
        m.wait_ready(timeout=20)
        m.wait_paths({("lan1a", "lan2a"): "relay"}, timeout=30)
        pa = m.add_pod(m["lan1a"], "a")
        pb = m.add_pod(m["lan2a"], "b")
        pa.netns.popen(["iperf3", "-s"], name="iperf3-server")
        for _ in range(30):
            if pb.run(["ping", "-c", "1", "-W", "1", pa.addr4], check=False).returncode == 0:
                break
        mtu = json.loads(pa.run(["ip", "-j", "link", "show", "eth0"]).stdout)[0]["mtu"]
        nat2 = m.t["nat2"]
        for hop, icmp in hops:
            if not icmp:
                nat2.nft(NO_ICMP_TABLE)
            nat2.ip("link", "set", "wan0", "mtu", hop)
            f0 = {n: frags(m.t[n]) for n in NODES}
            # Without ICMP, long enough for TCP's backed-off retransmissions to find the path
            # again once meshd refuses the large packets at the source.
            mbps, retr, stalled, err = iperf(pb, pa, seconds if icmp else 2 * seconds)
            f1 = {n: frags(m.t[n]) for n in NODES}
            rows.append({"hop": hop if icmp else "%d-noicmp" % hop, "pod_mtu": mtu,
                         "mbps": mbps, "retr": retr, "stalled": stalled, "err": err,
                         "frags": {n: f1[n] - f0[n] for n in NODES if f1[n] != f0[n]}})
            nat2.ip("link", "set", "wan0", "mtu", 1500)
            if not icmp:
                nat2.nft("delete table inet mwt_noicmp")
        path = m.paths(m["lan1a"]).get("lan2a")
    finally:
        m.close()
    return rows, path


def run_build(build, seconds, pmtu):
    # The black hole on a fresh testbed: what the 1400 run with ICMP taught lan2a (its kernel's
    # path MTU, meshd's route and interface MTUs) would otherwise still hold.
    rows, path = run_mesh(build, seconds, pmtu, [(1500, True), (1400, True)])
    more, path2 = run_mesh(build, seconds, pmtu, [(1400, False)])
    return rows + more, path if path != "relay" else path2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--before-build")
    ap.add_argument("--seconds", type=int, default=8)
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        print("skipped: needs root and iperf3")
        return 77
    builds = ([("before", a.before_build, None)] if a.before_build else []) + [
        ("no-pmtu", a.build_dir, False), ("pmtu", a.build_dir, True)]
    failed = []
    print("%-8s %-13s %-8s %10s %8s %8s  %s" % (
        "build", "hop", "pod MTU", "Mbit/s", "retrans", "stalled", "fragments created (lan2a, "
        "relays, nat2)"))
    for label, build, pmtu in builds:
        rows, path = run_build(os.path.abspath(build), a.seconds, pmtu)
        for r in rows:
            print("%-8s %-13s %-8d %10.1f %8d %7ds  %s%s" % (
                label, r["hop"], r["pod_mtu"], r["mbps"], r["retr"], r["stalled"],
                r["frags"] or "none", ("  (iperf3: %s)" % r["err"]) if r["err"] else ""),
                flush=True)
        if label != "before":
            if path != "relay":
                failed.append("%s: the pair was %s, not relayed" % (label, path))
            if rows[0]["mbps"] <= 0:
                failed.append("%s: the 1500-byte run moved nothing: %s" % (label, rows[0]["err"]))
    for f in failed:
        print("FAIL: %s" % f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
