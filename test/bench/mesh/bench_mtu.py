#!/usr/bin/env python3
"""bench_mtu (issue 15): iperf3 TCP throughput and retransmits pod(lan2a) -> pod(lan1a) over the
relayed pair of the e2e testbed, lan2a reaching the relays over IPv6 (the worst case), once with
1500 bytes everywhere and once with nat2's WAN link at 1400 (a smaller hop behind the NAT), with
the IP fragments created meanwhile at lan2a, relay1, relay2 and nat2 (FragCreates of
/proc/net/snmp and /proc/net/snmp6). With --before-build the same runs go first on another build
(e.g. main's) so that before and after are printed in one run. Never fails on timing.

Fails (exit 1) when a figure would not be what it claims: the 1500-byte run of the build under
test moved nothing (iperf3 failed or 0 bytes), or the pair was not relayed. The 1400-hop run may
stall (a black hole: that is a result, printed as 0). Skips (77) without root or iperf3.

Usage: bench_mtu.py --build-dir DIR [--before-build DIR] [--seconds 5]
"""

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "e2e", "mesh"))

from mesh import Mesh  # noqa: E402

NODES = ["lan2a", "relay1", "relay2", "nat2"]


def frags(node):
    snmp = node.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
    ip = [ln.split()[1:] for ln in snmp if ln.startswith("Ip:")]
    v4 = int(dict(zip(ip[0], ip[1]))["FragCreates"])
    v6 = 0
    for ln in node.run(["cat", "/proc/net/snmp6"]).stdout.splitlines():
        p = ln.split()
        if len(p) == 2 and p[0] == "Ip6FragCreates":
            v6 = int(p[1])
    return v4 + v6


def iperf(src, dst, seconds):
    """(Mbit/s received, retransmits, error or None)."""
    r = src.run(["iperf3", "-c", dst.addr4, "-t", str(seconds), "-J", "--connect-timeout",
                 "5000"], check=False, timeout=seconds + 40)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        return 0.0, 0, "no JSON (exit %d)" % r.returncode
    end = doc.get("end", {})
    mbps = end.get("sum_received", {}).get("bits_per_second", 0) / 1e6
    retr = end.get("sum_sent", {}).get("retransmits", 0)
    return mbps, retr, doc.get("error")


def run_build(build, seconds):
    rows = []
    m = Mesh(build_dir=build)
    try:
        cfg = m.configs["lan2a"]
        cfg["relayNodes"] = [{"nodeName": r["nodeName"],
                              "advertiseAddress": [a for a in r["advertiseAddress"] if ":" in a]}
                             for r in cfg["relayNodes"]]
        m.write_config(m["lan2a"])
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
        for hop in (1500, 1400):
            m.t["nat2"].ip("link", "set", "wan0", "mtu", hop)
            f0 = {n: frags(m.t[n]) for n in NODES}
            mbps, retr, err = iperf(pb, pa, seconds)
            f1 = {n: frags(m.t[n]) for n in NODES}
            rows.append({"hop": hop, "pod_mtu": mtu, "mbps": mbps, "retr": retr, "err": err,
                         "frags": {n: f1[n] - f0[n] for n in NODES if f1[n] != f0[n]}})
            m.t["nat2"].ip("link", "set", "wan0", "mtu", 1500)
        path = m.paths(m["lan1a"]).get("lan2a")
    finally:
        m.close()
    return rows, path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--before-build")
    ap.add_argument("--seconds", type=int, default=5)
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        print("skipped: needs root and iperf3")
        return 77
    builds = ([("before", a.before_build)] if a.before_build else []) + [("after", a.build_dir)]
    failed = []
    print("%-7s %-6s %-8s %10s %8s  %s" % ("build", "hop", "pod MTU", "Mbit/s", "retrans",
                                          "fragments created (lan2a, relays, nat2)"))
    for label, build in builds:
        rows, path = run_build(os.path.abspath(build), a.seconds)
        for r in rows:
            print("%-7s %-6d %-8d %10.1f %8d  %s%s" % (
                label, r["hop"], r["pod_mtu"], r["mbps"], r["retr"], r["frags"] or "none",
                ("  (iperf3: %s)" % r["err"]) if r["err"] else ""), flush=True)
        if label == "after":
            if path != "relay":
                failed.append("the pair was %s, not relayed" % path)
            if rows[0]["mbps"] <= 0:
                failed.append("the 1500-byte run moved nothing: %s" % rows[0]["err"])
    for f in failed:
        print("FAIL: %s" % f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
