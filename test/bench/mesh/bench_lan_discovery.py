#!/usr/bin/env python3
"""bench_lan_discovery: peers found without relays (issue 10, Benchmark). On the e2e testbed, N
meshd (+ wireguard-go each) on one LAN behind a NAT router, with mDNS on and no relayNodes, no
dht.bootstrap, no Kubernetes, all started at once:

  time to "every LAN peer direct": from the first meshd start until every node has all N-1
      others on path direct. Each node is polled (`meshctl status`, then `meshctl peers`) until
      it does; the figure is then taken from the meshd logs (wall-clock timestamps to the ms:
      the last "path selected ... path=direct" that still stands, per node), since a poll round
      of 20 nodes takes seconds on a loaded machine; the polled time is printed beside it. Also
      from the logs: when each meshd was ready and when its mDNS had found every other node.
      For N = 3 (--runs3 runs) and N = 20 (--runs20 runs); median and max over the runs.
  mDNS packets per node per minute in steady state: counted on the wire by nftables counters in
      every node's namespace (output hook: UDP from port 5353, which is every packet meshd's mDNS
      sends; input hook: UDP to port 5353), over --window s starting --settle s after the start,
      on the last run of each size; compared with meshd's own counters (`meshctl status` mdns
      sent/received) over the same window.

Fails (exit 1) when what it measures did not work: not every pair direct within --limit s, a
meshd not running when sampled, a pair no longer direct at the end of the window, a counter that
cannot be read. Never on a figure. Skips (77) without root, nft, wireguard-go or ping. Memory and
processes: one mesh at a time (2N processes), everything removed after each run, also on failure
(Mesh/Topology cleanup); the processes' total RSS is printed.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import sys
import time

from meshbench import (Failures, Mesh, check_meshd_alive, cpu_seconds, meshd_pid, need_root,
                       status_kb, wg_pid)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "e2e",
                                "mesh"))
from checks import preflight  # noqa: E402

TABLE = "mwbench_mdns"
COUNTERS = ("out4", "out6", "in4", "in6")


def install_counters(node):
    """Named nftables counters in the node's namespace: mDNS packets it sends (UDP source port
    5353, per family) and receives (UDP destination port 5353). Vanish with the namespace."""
    node.nft("""
table inet %s {
  counter out4 {}
  counter out6 {}
  counter in4 {}
  counter in6 {}
  chain out {
    type filter hook output priority 0; policy accept;
    meta nfproto ipv4 udp sport 5353 counter name "out4"
    meta nfproto ipv6 udp sport 5353 counter name "out6"
  }
  chain in {
    type filter hook input priority 0; policy accept;
    meta nfproto ipv4 udp dport 5353 counter name "in4"
    meta nfproto ipv6 udp dport 5353 counter name "in6"
  }
}
""" % TABLE)


def read_counters(node):
    """{counter name: packets} of install_counters' table."""
    r = node.run(["nft", "-j", "list", "counters", "table", "inet", TABLE], timeout=15)
    out = {}
    for item in json.loads(r.stdout).get("nftables", []):
        c = item.get("counter")
        if c and c.get("table") == TABLE:
            out[c["name"]] = c["packets"]
    missing = [c for c in COUNTERS if c not in out]
    if missing:
        raise RuntimeError("nft counters %s missing on %s: %s" % (missing, node.name, r.stdout))
    return out


def all_direct(m, name, others):
    """(True, None) when `meshctl peers` on name lists every one of others as direct; else
    (False, what is not)."""
    doc = m.meshctl(m[name], "peers", check=False, timeout=5)
    if doc is None:
        return False, "no answer from meshctl"
    paths = {p.get("name"): p.get("path") for p in doc.get("peers", [])}
    bad = {o: paths.get(o) for o in others if paths.get(o) != "direct"}
    return not bad, bad


def progress(m, name):
    """(peers direct, peers found by mDNS) from one `meshctl status` on name; (None, None) when
    meshctl does not answer. One call per node and poll: the figures' resolution is a round."""
    st = m.meshctl(m[name], "status", check=False, timeout=5)
    if st is None:
        return None, None
    return st["peers"]["direct"], (st.get("mdns") or {}).get("peersFound", 0)


_TS = re.compile(r'^ts=(\S+) .*?msg="([^"]*)"(.*)$')
_PEER = re.compile(r'\bpeer=(\S+)')


_PATH = re.compile(r'\bpath=(\S+)')


def log_times(m, name, t0_wall, n):
    """From the node's meshd log (wall-clock timestamps, to the millisecond): seconds after
    t0_wall when meshd was ready, when mDNS had found the (n-1)th distinct other node, and the
    first moment all n-1 peers were on path direct at once (each None when not in the log). No
    poll resolution in these."""
    ready = found_all = all_direct_at = None
    seen = set()
    paths = {}  # peer -> path of its last "path selected"
    for line in m.log(m[name]).splitlines():
        mo = _TS.match(line)
        if not mo:
            continue
        try:
            ts = datetime.datetime.strptime(mo.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp() - t0_wall
        except ValueError:
            continue
        msg, rest = mo.group(2), mo.group(3)
        pm = _PEER.search(rest)
        if msg == "meshd ready" and ready is None:
            ready = ts
        elif msg == "mdns found a node" and pm:
            seen.add(pm.group(1))
            if len(seen) >= n - 1 and found_all is None:
                found_all = ts
        elif msg == "path selected" and pm:
            pa = _PATH.search(rest)
            paths[pm.group(1)] = pa.group(1) if pa else None
            if all_direct_at is None and sum(p == "direct" for p in paths.values()) >= n - 1:
                all_direct_at = ts
    return ready, found_all, all_direct_at


def spread(values):
    v = [x for x in values if x is not None]
    if not v:
        return "none"
    return "min %.2f median %.2f max %.2f s" % (min(v), statistics.median(v), max(v))


def cpu_of(m, names):
    """(meshd, wireguard-go) CPU seconds summed over the nodes, each since its start."""
    md = wg = 0.0
    for x in names:
        md += cpu_seconds(meshd_pid(m, m[x]))
        wp = wg_pid(m, m[x])
        wg += cpu_seconds(wp) if wp else 0.0
    return md, wg


def mdns_stats(m, name):
    md = m.meshctl(m[name], "status").get("mdns")
    if not md:
        raise RuntimeError("meshctl status on %s has no mdns section" % name)
    return md


def snapshot(m, name):
    """(nft counters, meshd's mdns counters) of one node at one moment: meshd's counters read
    before and after the nft counters must agree on `sent` (else a packet went out between the
    reads, and the pair is read again), so that the two counts cover the same packets."""
    for _ in range(10):
        before = mdns_stats(m, name)
        c = read_counters(m[name])
        after = mdns_stats(m, name)
        if before["sent"] == after["sent"]:
            return c, after
        time.sleep(0.05)
    raise RuntimeError("%s: meshd's mDNS sent count moved during 10 reads in a row" % name)



def one_run(a, build, n, measure_traffic, fails, label):
    """One mesh of n nodes on one LAN: returns {"direct_s": seconds or None, "per_node": {...},
    "traffic": {...} or None, "rss_kib": total}."""
    res = {"direct_s": None, "direct_poll_s": None, "per_node": {}, "traffic": None,
           "rss_kib": None}
    names = ["lan1%s" % chr(ord("a") + j) for j in range(n)]  # Topology's LAN node names
    mdns_on = {"config": {"mdns": {"enable": True}, "dht": {"bootstrap": []}}}
    with Mesh(build_dir=build, topology_args={"relays": 0, "lans": ["cone"], "nodes_per_lan": n},
              overrides={x: mdns_on for x in names}) as m:
        for x in names:
            cfg = m.configs[x]
            if cfg.get("relayNodes") or cfg.get("dht", {}).get("bootstrap"):
                fails.add("%s: %s has relays or bootstrap nodes configured" % (label, x))
                return res
            install_counters(m[x])
        t0 = time.monotonic()
        t0_wall = time.time()
        m.start()
        pending = set(names)
        done_at = {}  # every other node direct (status), confirmed with `meshctl peers`
        found_at = {}  # every other node found by mDNS (peersFound)
        last = {}
        rounds = []
        while pending and time.monotonic() - t0 < a.limit:
            r0 = time.monotonic()
            for x in sorted(pending):
                direct, found = progress(m, x)
                now = time.monotonic() - t0
                if found is not None and found >= n - 1 and x not in found_at:
                    found_at[x] = now
                if direct is not None and direct >= n - 1:
                    ok, bad = all_direct(m, x, [y for y in names if y != x])
                    if ok:
                        done_at[x] = now
                        pending.discard(x)
                        continue
                    last[x] = bad
                else:
                    last[x] = "%s direct, %s found by mDNS" % (direct, found)
            rounds.append(time.monotonic() - r0)
            if pending and not check_meshd_alive(m, fails, "%s while forming" % label):
                return res
        if pending:
            fails.add("%s: not every LAN peer direct within %.0f s of the start: %s" % (
                label, a.limit, {x: last.get(x) for x in sorted(pending)}))
            for x in sorted(pending)[:3]:
                print(m._describe(m[x]))
            return res
        try:
            form_cpu, form_wall = cpu_of(m, names), time.monotonic() - t0
            res["form_cpu"] = (form_cpu[0] / n, form_cpu[1] / n, form_wall)
        except (OSError, RuntimeError) as e:
            fails.add("%s: CPU time not read: %s" % (label, e))
        res["direct_poll_s"] = max(done_at.values())
        res["per_node"] = done_at
        print("%s: polls saw every LAN peer direct on every node %.2f s after the start (nodes: "
              "%s; a poll round took %s)" % (label, res["direct_poll_s"], spread(done_at.values()),
                                             spread(rounds)), flush=True)
        lt = {x: log_times(m, x, t0_wall, n) for x in names}
        print("%s: from meshd's logs: meshd ready %s after the start; every other node found by "
              "mDNS %s after the start, %s after the node's own ready; every peer direct %s "
              "after the start" % (
                  label, spread(r for r, _, _ in lt.values()), spread(f for _, f, _ in lt.values()),
                  spread(f - r for r, f, _ in lt.values() if r is not None and f is not None),
                  spread(d for _, _, d in lt.values())), flush=True)
        if a.keep_logs:  # for a closer look: the meshd logs, copied before the cleanup
            d = os.path.join(a.keep_logs, "%d-nodes-%d" % (n, int(t0_wall)))
            os.makedirs(d, exist_ok=True)
            for x in names:
                with open(os.path.join(d, x + ".log"), "w") as f:
                    f.write(m.log(m[x]))
            print("%s: meshd logs kept in %s" % (label, d))
        logged = [d for _, _, d in lt.values()]
        if all(d is not None for d in logged):
            res["direct_s"] = max(logged)
        else:
            fails.add("%s: meshctl shows every pair direct but the logs of %s do not say so" % (
                label, [x for x in names if lt[x][2] is None]))
        if found_at:
            print("%s: every other node found by mDNS on %d/%d nodes by then (min %.2f median %.2f"
                  " max %.2f s; a node may be direct with a neighbour whose record it got by HELLO"
                  " before its own browse finds it)" % (
                      label, len(found_at), n, min(found_at.values()),
                      statistics.median(found_at.values()), max(found_at.values())), flush=True)
        if not measure_traffic:
            return res

        # Steady state: from --settle s after the start, over --window s.
        wait = a.settle - (time.monotonic() - t0)
        if wait > 0:
            time.sleep(wait)
        if not check_meshd_alive(m, fails, "%s at the start of the window" % label):
            return res
        c0, s0 = {}, {}
        for x in names:
            c0[x], s0[x] = snapshot(m, x)
        cpu0 = cpu_of(m, names)
        w0 = time.monotonic()
        time.sleep(a.window)
        c1, s1 = {}, {}
        cpu1 = cpu_of(m, names)
        for x in names:
            c1[x], s1[x] = snapshot(m, x)
        wall = time.monotonic() - w0
        res["steady_cpu"] = ((cpu1[0] - cpu0[0]) / n / wall, (cpu1[1] - cpu0[1]) / n / wall)
        if not check_meshd_alive(m, fails, "%s at the end of the window" % label):
            return res
        for x in names:
            ok, bad = all_direct(m, x, [y for y in names if y != x])
            if not ok:
                fails.add("%s: %s no longer has every LAN peer direct after the window: %s" % (
                    label, x, bad))
        per_min = 60.0 / wall
        t = {"wall": wall, "since_start": w0 - t0, "nodes": {}, "total": {}}
        # Everything since the start (probing, announcing, the fast browse included).
        life = time.monotonic() - t0
        for k in COUNTERS:
            t["total"][k] = statistics.mean(c1[x][k] for x in names)
        t["total"]["meshd_sent"] = statistics.mean(s1[x]["sent"] for x in names)
        t["total"]["seconds"] = life
        for x in names:
            d = {k: c1[x][k] - c0[x][k] for k in COUNTERS}
            d["meshd_sent"] = s1[x]["sent"] - s0[x]["sent"]
            d["meshd_received"] = s1[x]["received"] - s0[x]["received"]
            d["meshd_queries"] = s1[x]["queries"] - s0[x]["queries"]
            d["meshd_answers"] = s1[x]["answers"] - s0[x]["answers"]
            d["meshd_announcements"] = s1[x]["announcements"] - s0[x]["announcements"]
            t["nodes"][x] = {k: v * per_min for k, v in d.items()}
            t["nodes"][x]["raw"] = d
        res["traffic"] = t
        rss = 0
        for x in names:
            try:
                rss += status_kb(meshd_pid(m, m[x]))["VmRSS"]
                wp = wg_pid(m, m[x])
                if wp:
                    rss += status_kb(wp)["VmRSS"]
            except (OSError, RuntimeError, KeyError) as e:
                print("(RSS of %s not read: %s)" % (x, e))
        res["rss_kib"] = rss
    return res


def print_traffic(label, n, t):
    nodes = t["nodes"]
    out = [nodes[x]["out4"] + nodes[x]["out6"] for x in nodes]
    sent = [nodes[x]["meshd_sent"] for x in nodes]
    print("%s: steady state %.0f s window starting %.0f s after the start" % (
        label, t["wall"], t["since_start"]))
    print("  %-8s %8s %8s %8s %8s | %10s %10s %8s %8s %8s  (per minute)" % (
        "node", "out v4", "out v6", "in v4", "in v6", "meshd sent", "meshd recv", "queries",
        "answers", "announce"))
    for x in sorted(nodes):
        v = nodes[x]
        print("  %-8s %8.1f %8.1f %8.1f %8.1f | %10.1f %10.1f %8.1f %8.1f %8.1f" % (
            x, v["out4"], v["out6"], v["in4"], v["in6"], v["meshd_sent"], v["meshd_received"],
            v["meshd_queries"], v["meshd_answers"], v["meshd_announcements"]))
    print("  mDNS packets sent per node per minute on the wire (v4+v6): mean %.2f, median %.2f, "
          "max %.2f; whole LAN %.1f/min; meshd's own count: mean %.2f" % (
              statistics.mean(out), statistics.median(out), max(out), sum(out),
              statistics.mean(sent)))
    tot = t["total"]
    print("  since the start (%.0f s, start included): per node %.1f sent (v4 %.1f, v6 %.1f; "
          "meshd's count %.1f), %.1f received" % (
              tot["seconds"], tot["out4"] + tot["out6"], tot["out4"], tot["out6"],
              tot["meshd_sent"], tot["in4"] + tot["in6"]))
    diff = [x for x in nodes if nodes[x]["raw"]["out4"] + nodes[x]["raw"]["out6"]
            != nodes[x]["raw"]["meshd_sent"]]
    if diff:
        print("  NOTE: on the wire and meshd's `sent` differ on %s: %s" % (", ".join(diff), {
            x: (nodes[x]["raw"]["out4"] + nodes[x]["raw"]["out6"], nodes[x]["raw"]["meshd_sent"])
            for x in diff}))
    else:
        print("  on the wire = meshd's `sent` on every node, packet for packet")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--runs3", type=int, default=3)
    ap.add_argument("--runs20", type=int, default=1)
    ap.add_argument("--big", type=int, default=20, help="the large LAN's node count")
    ap.add_argument("--limit", type=float, default=60.0,
                    help="s after the start by which every pair must be direct (else FAIL)")
    ap.add_argument("--settle", type=float, default=60.0,
                    help="the steady-state window starts this many s after the start")
    ap.add_argument("--window", type=float, default=120.0)
    ap.add_argument("--keep-logs", metavar="DIR", help="copy every run's meshd logs into DIR")
    a = ap.parse_args()
    need_root("bench_lan_discovery")
    rc = preflight(os.path.abspath(a.build_dir))
    if rc is not None:
        return rc
    fails = Failures("bench_lan_discovery")
    summary = {}
    cpu = {}
    for n, runs in ((3, a.runs3), (a.big, a.runs20)):
        times, polled = [], []
        traffic = None
        rss = None
        for i in range(runs):
            label = "%d nodes run %d/%d" % (n, i + 1, runs)
            r = one_run(a, os.path.abspath(a.build_dir), n, i == runs - 1, fails, label)
            if r["direct_s"] is not None:
                times.append(r["direct_s"])
                polled.append(r["direct_poll_s"])
            if r.get("form_cpu"):
                md, wg, wall = r["form_cpu"]
                print("%s: CPU per node from the start until the polls saw every peer direct "
                      "(%.1f s): meshd %.2f s, wireguard-go %.2f s" % (label, wall, md, wg))
            if r["traffic"]:
                traffic = print_traffic(label, n, r["traffic"])
                rss = r["rss_kib"]
                cpu[n] = r.get("steady_cpu")
                if cpu[n]:
                    print("%s: CPU per node in the window: meshd %.1f ms/s, wireguard-go %.1f ms/s"
                          % (label, cpu[n][0] * 1000, cpu[n][1] * 1000))
        summary[n] = (times, polled, traffic, rss, runs)

    print()
    print("==== bench_lan_discovery summary ====")
    for n, (times, polled, traffic, rss, runs) in summary.items():
        if runs == 0:
            continue
        if times:
            print("%2d nodes, one LAN, no relays: every LAN peer direct %s s after the start "
                  "(median %.2f, max %.2f over %d/%d runs)" % (
                      n, ", ".join("%.2f" % x for x in times), statistics.median(times),
                      max(times), len(times), runs))
            print("%2d nodes: (as meshd logged it; the meshctl polls saw it at %s s)" % (
                n, ", ".join("%.2f" % x for x in polled)))
        else:
            print("%2d nodes: no run had every LAN peer direct" % n)
        if traffic:
            print("%2d nodes steady state: %.2f mDNS packets sent per node per minute (mean on "
                  "the wire, v4+v6; max %.2f)" % (n, statistics.mean(traffic), max(traffic)))
        if cpu.get(n):
            print("%2d nodes steady state: meshd %.1f ms CPU per second per node, wireguard-go "
                  "%.1f" % (n, cpu[n][0] * 1000, cpu[n][1] * 1000))
        if rss:
            print("%2d nodes: meshd + wireguard-go RSS %.1f MiB in total (%.1f MiB per node)" % (
                n, rss / 1024, rss / 1024 / n))
    return fails.done()


if __name__ == "__main__":
    sys.exit(main())
