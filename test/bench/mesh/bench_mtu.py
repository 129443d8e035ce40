#!/usr/bin/env python3
"""bench_mtu (issue 15): iperf3 TCP throughput and retransmits on the e2e testbed, for a relayed
pair pod(lan2a) -> pod(lan1a), lan2a reaching the relays over IPv6 (the worst case), and a direct
pair pod(lan1a) -> pod(relay1) (IPv4): with 1500 bytes everywhere, with the NAT's WAN link at
1400 (nat2 for the relayed pair, nat1 for the direct one: a smaller hop behind the NAT, whose
ICMP "too big" reaches the sender; relayed only), and with it at 1400 and the NAT's ICMP errors
dropped (the black hole: nothing tells anyone; iperf3 runs twice as long), the link lowered just
before iperf3 starts. Per run: Mbit/s, retransmits, the seconds that moved nothing, and the IP
fragments created meanwhile at lan1a, lan2a, the relays and the NATs (FragCreates of
/proc/net/snmp and /proc/net/snmp6). Each build runs twice in one invocation: `pathMtuDiscovery:
false` (before: the interface MTU follows the kernel's ICMP-learned path MTU only) and true
(after: padded probes, route MTUs). With --before-build another build (e.g. main's) runs first,
with its own defaults. Never fails on timing.

Fails (exit 1) when a figure would not be what it claims: a 1500-byte run moved nothing (iperf3
failed or 0 bytes), or a pair was not on its path (relayed, direct). The 1400 runs may stall (a
black hole: that is a result, printed as 0). Skips (77) without root or iperf3.

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

NODES = ["lan1a", "lan2a", "relay1", "relay2", "nat1", "nat2"]


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



def run_mesh(build, seconds, pmtu, runs):
    """One testbed; iperf3 once per (pair, hop MTU, the router's ICMP on) in `runs`, in order:
    pair "relay" is pod(lan2a) -> pod(lan1a) with the hop on nat2's WAN link, "direct" is
    pod(lan1a) -> pod(relay1) (a direct pair, IPv4) with the hop on nat1's."""
    rows = []
    m = Mesh(build_dir=build)
    try:
        cfg = m.configs["lan2a"]
        cfg["relayNodes"] = [{"nodeName": r["nodeName"],
                              "advertiseAddress": [a for a in r["advertiseAddress"] if ":" in a]}
                             for r in cfg["relayNodes"]]
        if pmtu is not None:
            for n in ("lan1a", "lan2a", "relay1"):
                m.configs[n]["pathMtuDiscovery"] = pmtu
        for n in ("lan1a", "lan2a", "relay1"):
            m.write_config(m[n])
        m.start()
        m.wait_ready(timeout=20)
        m.wait_paths({("lan1a", "lan2a"): "relay", ("lan1a", "relay1"): "direct"}, timeout=30)
        pa = m.add_pod(m["lan1a"], "a")
        pb = m.add_pod(m["lan2a"], "b")
        pr = m.add_pod(m["relay1"], "r")
        for p in (pa, pr):
            p.netns.popen(["iperf3", "-s"], name="iperf3-server-" + p.name)
        for src, dst in ((pb, pa), (pa, pr)):
            for _ in range(30):
                if src.run(["ping", "-c", "1", "-W", "1", dst.addr4],
                           check=False).returncode == 0:
                    break
        mtu = json.loads(pa.run(["ip", "-j", "link", "show", "eth0"]).stdout)[0]["mtu"]
        for pair, hop, icmp in runs:
            src, dst, router = (pb, pa, m.t["nat2"]) if pair == "relay" else (pa, pr, m.t["nat1"])
            if not icmp:
                router.nft(NO_ICMP_TABLE)
            router.ip("link", "set", "wan0", "mtu", hop)
            f0 = {n: frags(m.t[n]) for n in NODES}
            # Without ICMP, long enough for TCP's backed-off retransmissions to find the path
            # again once meshd refuses the large packets at the source.
            mbps, retr, stalled, err = iperf(src, dst, seconds if icmp else 2 * seconds)
            f1 = {n: frags(m.t[n]) for n in NODES}
            rows.append({"pair": pair, "hop": hop if icmp else "%d-noicmp" % hop,
                         "pod_mtu": mtu, "mbps": mbps, "retr": retr, "stalled": stalled,
                         "err": err, "frags": {n: f1[n] - f0[n] for n in NODES if f1[n] != f0[n]}})
            router.ip("link", "set", "wan0", "mtu", 1500)
            if not icmp:
                router.nft("delete table inet mwt_noicmp")
        paths = {"relay": m.paths(m["lan1a"]).get("lan2a"),
                 "direct": m.paths(m["lan1a"]).get("relay1")}
    finally:
        m.close()
    return rows, paths


def run_build(build, seconds, pmtu):
    # The black holes on a fresh testbed: what the 1400 run with ICMP taught lan2a (its kernel's
    # path MTU, meshd's route and interface MTUs) would otherwise still hold. The direct one
    # has its own router (nat1), untouched before it.
    rows, paths = run_mesh(build, seconds, pmtu, [("relay", 1500, True), ("relay", 1400, True),
                                                  ("direct", 1500, True)])
    more, paths2 = run_mesh(build, seconds, pmtu, [("relay", 1400, False),
                                                   ("direct", 1400, False)])
    bad = [p for p in ("relay", "direct") if paths[p] != p or paths2[p] != p]
    return rows + more, {p: "%s, then %s" % (paths[p], paths2[p]) for p in bad}


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
    print("%-8s %-7s %-13s %-8s %10s %8s %8s  %s" % (
        "build", "pair", "hop", "pod MTU", "Mbit/s", "retrans", "stalled", "fragments created "
        "(lan1a, lan2a, relays, NATs)"))
    for label, build, pmtu in builds:
        rows, bad_paths = run_build(os.path.abspath(build), a.seconds, pmtu)
        for r in rows:
            print("%-8s %-7s %-13s %-8d %10.1f %8d %7ds  %s%s" % (
                label, r["pair"], r["hop"], r["pod_mtu"], r["mbps"], r["retr"], r["stalled"],
                r["frags"] or "none", ("  (iperf3: %s)" % r["err"]) if r["err"] else ""),
                flush=True)
        if label != "before":
            for pair, seen in bad_paths.items():
                failed.append("%s: the %s pair's path was %s" % (label, pair, seen))
            for r in rows:
                if r["hop"] == 1500 and r["mbps"] <= 0:
                    failed.append("%s: the %s 1500-byte run moved nothing: %s" % (
                        label, r["pair"], r["err"]))
    for f in failed:
        print("FAIL: %s" % f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
