#!/usr/bin/env python3
"""MTU black holes on the testbed (root; Python 3 stdlib; meshd + wireguard-go + the real CNI
plugin). CTest `e2e_mtu`, label e2e. Issue 15.

Topology (mesh.py's default): relay1, relay2 public; lan1a, lan1b (cone NAT); lan2a, lan2b
(symmetric NAT): lan1a-lan2a is relayed, lan1a-lan1b direct. lan1a reaches the relays over IPv4
only, lan1b and lan2a over IPv6 only (their relayNodes list one family), so every relayed packet
between lan1a and lan2a has one IPv4 and one IPv6 leg, the IPv6 one being the worst case (40-byte header + the
12-byte relay header). Every node serves metrics. Checks:

  one MTU    node.json "mtu", the WireGuard interface and the pods' eth0 all have 1500 - 92 = 1408
             (the plugin takes meshd's node.json value)
  1500 path  20 full-size (1408-byte) don't-fragment pings each way, pod to pod, relayed (v4 and
             v6 inner) and direct (lan1a-lan1b): all answered, and no node's or router's
             FragCreates (/proc/net/snmp Ip, /proc/net/snmp6 Ip6) moves. On main (pod MTU 1420,
             no DF on meshd's sockets) lan2a's Ip6FragCreates grows by 2 per relayed packet
  too big    a 1409-byte DF ping from a pod fails at once with "message too long" (pod MTU), not
             silently
  1400 hop   nat2's WAN link lowered to 1400: the first full-size DF pings from lan2a's pod teach
             lan2a's kernel the path MTU (nat2's ICMPv6 "too big"), meshd's next frames are
             refused (EMSGSIZE) and counted in meshwire_oversize_drops_total{socket=
             "relay_uplink"}, and within MTU_BOUND meshd lowers lan2a's WireGuard interface MTU
             to 1400 - 92 = 1308 (meshctl status shows it). The active pair's padded probes then
             find the path MTU (WireGuard pads to 16 bytes: 1296 over IPv6), meshctl peers shows
             it (pathMtu, complete) and lan2a routes lan1a's pod CIDRs (v4 and v6) with that
             mtu, within PMTU_BOUND. Full-size DF pings get "too big" (never silence), 1308-byte
             ones "too big" with the path MTU, path-MTU-sized ones pass, no node or router
             created a fragment, and 1000-byte pings pass both ways
  streams    iperf3 TCP (4 s) relayed b->a and direct a->c at 1500, relayed b->a through the 1400
             hop once routed, and on each direct pair below: each completes with no second
             below 1 Mbit/s (Mbit/s and retransmits are figures)
  mid-stream  lan1b (IPv6 to the relays) -> lan2b relayed: an iperf3 TCP stream, and 6 s into it
             nat1's WAN link drops to 1400 with nat1's ICMP errors dropped (no "too big" reaches
             anyone: the black hole). lan1b's probes find it (confirmation lost, 1280 at once,
             then the search: 1296 over IPv6), route lan2b's pod CIDRs with it, and the stream
             is back to a tenth of its speed within RECOVER_BOUND s and stays there; nothing is
             fragmented
  restart    then lan1b's meshd is killed and started again (wireguard-go adopted), the pair
             kept active: lan1b's routes to lan2b's pods keep their MTU at every 0.1 s sample
             (the new meshd reads it back from the routes and confirms it on the relay path), no
             black hole is counted, and meshctl peers shows the same path MTU, complete
  direct      lan1a -> relay1 and lan1b -> relay1, direct pairs (WireGuard's own sockets; meshd
             picks the family: IPv4 here), through the same silent 1400 hop on nat1: padded
             PINGs find 1328, route relay1's pod CIDRs with it, a DF ping one byte larger gets
             "too big" with it, one of that size passes, a stream completes; the pairs stay
             direct. Then lan1b's IPv4 UDP to relay1 is cut on nat1: the pair moves to relay1's
             IPv6 address, the kept 1328 fails its confirmation there and the search finds 1312
             (IPv6's 20 bytes more), checked the same way. relay1 -> lan1a (relay1 probes
             lan1a's reflexive address; nat1's WAN link takes 4 bytes over its MTU inbound):
             1304-1344 by family. lan1a -> lan2b, relayed, the hop on its IPv4 leg: 1328.
             Nothing is fragmented
then close() leaves nothing. Prints `N passed, N failed`; exit 1 on a failure, 77 when it cannot
run here.

Usage: test_mtu.py [--build-dir DIR]
"""

import contextlib
import ipaddress
import json
import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import (run_mesh_scenario, PATHS_BOUND, READY_BOUND, check, expect, figure,  # noqa: E402
                    peers_by_name, ping_retry, wait_for)
from topology import NETTOOLS  # noqa: E402 (mesh.py puts test/e2e/topology on the path)

METRICS = "127.0.0.1:9464"
UNDERLAY = 1500
OVERHEAD = 92  # common/tunnel_mtu.hpp k_tunnel_overhead: WireGuard over IPv6 80 + relay header 12
POD_MTU = UNDERLAY - OVERHEAD
HOP_MTU = 1400
# restart: meshd dead this long, then the pair is watched this long after it is ready (the first
# confirmation of the kept MTU comes at the pair's first poll, about 1 s after it is found).
RESTART_DOWN_S = 2.0
RESTART_HOLD_S = 8.0
PINGS = 20
# meshd looks at the relay uplink's oversize drops every 2 s (k_wg_poll) and applies a lower
# WireGuard MTU on the WireGuard thread at once; 2 s + slack for the loaded host.
MTU_BOUND = 6.0
FRAG_NODES = ["lan1a", "lan1b", "lan2a", "lan2b", "relay1", "relay2", "nat1", "nat2"]
# The path MTU search of an active pair: a confirmation every 5 s, 3 tries (3 RTTs each, and the
# next small probe's answer) before a size counts as lost, then a binary search (about 5 sizes);
# slack for the loaded host.
PMTU_BOUND = 40.0
STREAM_S = 20  # the mid-stream iperf3 run
STREAM_CHECK_S = 4  # each other iperf3 run
CUT_AT_S = 6  # nat1's WAN link goes to 1400 after this many seconds of it
RECOVER_BOUND = 15  # s: black hole found (<= 8 s), 1280 applied, TCP's next retransmission
NO_ICMP_TABLE = """table inet mwt_noicmp {
    chain out {
        type filter hook output priority 0;
        icmp type destination-unreachable drop
        icmpv6 type packet-too-big drop
    }
}"""

# lan1b's IPv4 UDP to and from relay1, cut on nat1 (forward: before the masquerade, after its
# reverse): the direct pair's other address family is IPv6.
V4_CUT_TABLE = """table inet mwt_v4cut {
    chain cut {
        type filter hook forward priority -10;
        ip saddr %s ip daddr %s meta l4proto udp drop
    }
}"""

FETCH = ("import urllib.request,sys;"
         "sys.stdout.write(urllib.request.urlopen('http://%s/metrics',timeout=5).read().decode())"
         % METRICS)


def snmp(node):
    """The namespace's IP counters: /proc/net/snmp as "Proto:Name" (e.g. "Ip:FragCreates"),
    /proc/net/snmp6 by its own names (e.g. "Ip6FragCreates")."""
    out = {}
    lines = node.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        proto = names.split(":")[0]
        out.update({"%s:%s" % (proto, k): int(v)
                    for k, v in zip(names.split()[1:], values.split()[1:])})
    for ln in node.run(["cat", "/proc/net/snmp6"]).stdout.splitlines():
        parts = ln.split()
        if len(parts) == 2:
            out[parts[0]] = int(parts[1])
    return out


def frag_creates(node):
    """(Ip FragCreates, Ip6FragCreates) inside the node's namespace."""
    c = snmp(node)
    return c["Ip:FragCreates"], c.get("Ip6FragCreates", 0)


def all_frags(m):
    return {n: frag_creates(m.t[n]) for n in FRAG_NODES}


def frag_delta(before, after):
    return {n: (after[n][0] - before[n][0], after[n][1] - before[n][1])
            for n in before if after[n] != before[n]}


def df_ping(pod, addr, size, count=PINGS, interval=0.1):
    """count don't-fragment pings of `size` bytes (IP packet) from pod: (received, output)."""
    v6 = ":" in addr
    payload = size - (48 if v6 else 28)
    cmd = ["ping", "-6" if v6 else "-4", "-n", "-M", "do", "-s", str(payload), "-c", str(count),
           "-i", str(interval), "-W", "2", addr]
    r = pod.run(cmd, check=False, timeout=count * interval + 20)
    mo = re.search(r"(\d+) received", r.stdout)
    return (int(mo.group(1)) if mo else 0), (r.stdout + r.stderr)


def metric(m, node, name, labels):
    text = m[node].run(["python3", "-c", FETCH]).stdout
    want = "%s{%s}" % (name, labels) if labels else name
    for ln in text.splitlines():
        if ln.startswith(want + " "):
            return float(ln.split()[-1])
    raise AssertionError("%s: no %s in the metrics" % (node, want))


def fits(hop, v6, relayed=True):
    """The largest inner size whose WireGuard frame (padded to 16 bytes, as WireGuard pads it)
    crosses a `hop`-byte link: + 32 WireGuard (+ 12 relay header) + 8 UDP + IP header."""
    outer = 32 + (12 if relayed else 0) + 8 + (40 if v6 else 20)
    return (hop - outer) // 16 * 16


def route_mtu_to(node, addr):
    """The MTU metric of the route on node's WireGuard interface that covers addr (0: none)."""
    fam = "-6" if ":" in addr else "-4"
    best, mtu = -1, 0
    for r in json.loads(node.run(["ip", "-j", fam, "route", "show", "dev",
                                  node.wg_ifname]).stdout or "[]"):
        dst = r.get("dst", "")
        try:
            net = ipaddress.ip_network(dst if "/" in dst else dst + ("/128" if ":" in dst
                                                                     else "/32"))
        except ValueError:
            continue
        if ipaddress.ip_address(addr) in net and net.prefixlen > best:
            best = net.prefixlen
            mtu = 0
            for mt in r.get("metrics", []):
                if isinstance(mt, dict) and "mtu" in mt:
                    mtu = mt["mtu"]
    return mtu


def pmtu_applied(m, a, b, pod_b):
    """(ok, n): a's meshctl peers shows b's path MTU n as complete, and a routes pod_b's v4 and
    v6 addresses with mtu n."""
    peers = {p["name"]: p for p in m.meshctl(m[a], "peers")["peers"]}
    p = peers.get(b, {})
    n = p.get("pathMtu")
    if not n or p.get("pathMtuSearch") != "complete":
        return False, ("meshctl peers", p.get("pathMtu"), p.get("pathMtuSearch"))
    routes = [route_mtu_to(m[a], pod_b.addr4), route_mtu_to(m[a], pod_b.addr6)]
    return routes == [n, n], n if routes == [n, n] else ("routes", routes, "pathMtu", n)


def wait_pmtu(m, a, b, pod_b, lo, hi, bound):
    """Waits until a's path MTU to b is applied (pmtu_applied) and in (lo, hi]: (n, seconds)."""
    def ready():
        ok, n = pmtu_applied(m, a, b, pod_b)
        return ok and lo < n <= hi, n
    return wait_for("%s's path MTU to %s applied, in (%d, %d]" % (a, b, lo, hi), ready, bound)


def stream_ok(what, src, dst, seconds=STREAM_CHECK_S, rate=None):
    """An iperf3 TCP stream pod src -> pod dst (v4, `seconds`, at most `rate`, an iperf3 -b
    value): it completes, and no second of it carries less than 1 Mbit/s (a black hole stalls
    it). Figures: Mbit/s, retransmits."""
    r = src.run(["iperf3", "-c", dst.addr4, "-t", str(seconds), "-i", "1", "-J",
                 "--connect-timeout", "5000"] + (["-b", rate] if rate else []),
                check=False, timeout=seconds + 40)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        doc = {"error": "no JSON (exit %d): %s" % (r.returncode, r.stderr[-300:])}
    per_s = [iv["sum"]["bits_per_second"] / 1e6 for iv in doc.get("intervals", [])]
    end = doc.get("end", {})
    figure("%s: iperf3 Mbit/s, retransmits" % what, "%.0f, %s" % (
        end.get("sum_received", {}).get("bits_per_second", 0) / 1e6,
        end.get("sum_sent", {}).get("retransmits")))
    expect(r.returncode == 0 and not doc.get("error") and len(per_s) >= seconds and
           min(per_s) >= 1, "%s: iperf3 exit %d, %s, per second %s" % (
               what, r.returncode, doc.get("error"), " ".join("%.0f" % v for v in per_s)))


def refused_above(src, dst, n):
    """From pod src to pod dst (v4 and v6): a DF ping of n + 1 bytes gets "too big" with mtu n
    (from src's node, or src's own stack once it learned it), and n-byte DF datagrams arrive.
    One way (UDP to a closed port: counted at dst), not pings: an echo reply takes the other
    direction's path, whose MTU is its own (its node would fragment or drop it)."""
    too_big = re.compile(r"mtu ?[=:]? ?%d\b" % n, re.I)
    # What src's own stack learned before (a "too big" from its node while the path was at 1280
    # after a black hole: the kernel keeps such an exception for net.ipv4.route.mtu_expires, 10
    # min) would answer first; the node's route MTU is what is checked.
    for fam in ("-4", "-6"):
        src.run(["ip", fam, "route", "flush", "cache"])
    for addr in (dst.addr4, dst.addr6):
        got, out = df_ping(src, addr, n + 1, count=3)
        expect(got == 0 and too_big.search(out), "%d bytes -> %s: want \"too big\" with mtu %d, "
               "got:\n%s" % (n + 1, addr, n, out))
        no_ports = "Udp6NoPorts" if ":" in addr else "Udp:NoPorts"
        before = snmp(dst)[no_ports]
        target = "[%s]:9" % addr if ":" in addr else "%s:9" % addr
        r = src.run([sys.executable, NETTOOLS, "udp-df-send", "--target", target, "--size",
                     str(n), "--count", "5"], check=False)
        got = 0
        for _ in range(20):  # they cross the tunnel: a moment
            got = snmp(dst)[no_ports] - before
            if got >= 5:
                break
            time.sleep(0.1)
        expect(r.returncode == 0 and got >= 4, "%d-byte DF datagrams -> %s: %d/5 arrived (exit "
               "%d %s)" % (n, addr, got, r.returncode, r.stderr[-200:]))


def stream_across_cut(m, what, src, dst, a, b, cut, mtu_range, seconds, cut_at, pmtu_bound,
                      recover_bound, rate=None):
    """An iperf3 TCP stream pod src (on node a) -> pod dst (on node b, running `iperf3 -s`), v4,
    `seconds` long (at most `rate`, an iperf3 -b value), and cut() `cut_at` s into it (a hop's
    MTU lowered with no ICMP: a black hole). Checks: a's probes find b's path MTU in mtu_range
    (lo, hi] and a routes dst's pod CIDRs with it within pmtu_bound s of the cut; the stream
    completes, is back to a tenth of its speed before the cut within recover_bound s and does
    not stall again. Figures start with `what`; returns the path MTU."""
    lo, hi = mtu_range
    # Up before the client connects.
    wait_for("iperf3 server in pod %s" % dst.name, lambda: dst.run(
        ["ss", "-ltn", "sport", "= :5201"]).stdout.count("LISTEN") > 0, 10)
    cmd = ["iperf3", "-c", dst.addr4, "-t", str(seconds), "-i", "1", "-J",
           "--connect-timeout", "5000"] + (["-b", rate] if rate else [])
    client = src.netns.popen(cmd, name="iperf3-client-" + src.name)
    time.sleep(cut_at)
    cut()
    t_cut = time.monotonic()
    n, _ = wait_pmtu(m, a, b, dst, lo, hi, pmtu_bound)
    figure("%s: %s's path MTU to %s applied after the cut (s)" % (what, a, b),
           "%.1f" % (time.monotonic() - t_cut))
    figure("%s: %s's path MTU to %s" % (what, a, b), n)
    rc = client.popen.wait(timeout=seconds + 30)
    with open(client.log_path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = {"error": "no JSON (exit %s): %s" % (rc, text[-300:])}
    expect(rc == 0 and not doc.get("error"), "iperf3: exit %s, %s" % (rc, doc.get("error")))
    per_s = [iv["sum"]["bits_per_second"] / 1e6 for iv in doc["intervals"]]
    figure("%s: iperf3 Mbit/s per second" % what, " ".join("%.0f" % v for v in per_s))
    figure("%s: retransmits" % what, doc["end"]["sum_sent"].get("retransmits"))
    before_cut = sorted(per_s[1:cut_at])[len(per_s[1:cut_at]) // 2]
    # Recovered: the first second after the cut at a tenth of the speed before it.
    after = per_s[cut_at:]
    back = next((i for i, v in enumerate(after) if i >= 1 and v >= before_cut / 10), None)
    figure("%s: TCP back to >= 1/10 of its speed after the cut (s)" % what, back)
    expect(back is not None and back <= recover_bound,
           "no recovery within %d s: %s" % (recover_bound, per_s))
    expect(all(v >= before_cut / 10 for v in per_s[cut_at + back:]),
           "the stream stalled again: %s" % per_s)
    return n


@contextlib.contextmanager
def keep_active(pod, addr):
    """Pings in the background so that the pair stays active (probed) meanwhile."""
    proc = pod.netns.popen(["ping", "-n", "-i", "0.2", "-s", "900", addr], name="keep-active")
    try:
        yield
    finally:
        proc.stop()


def body(m):
    # lan1a reaches the relays over IPv4 only, lan1b and lan2a over IPv6 only.
    for name, fam in (("lan1a", "."), ("lan1b", ":"), ("lan2a", ":")):
        cfg = m.configs[name]
        cfg["relayNodes"] = [{"nodeName": r["nodeName"],
                              "advertiseAddress": [a for a in r["advertiseAddress"] if fam in a]}
                             for r in cfg["relayNodes"]]
        m.write_config(m[name])
    m.start()
    m.wait_ready(timeout=READY_BOUND)
    m.wait_paths({("lan1a", "lan2a"): "relay", ("lan1a", "lan1b"): "direct",
                  ("lan1b", "lan2b"): "relay"},
                 timeout=PATHS_BOUND)
    pa = m.add_pod(m["lan1a"], "a")
    pb = m.add_pod(m["lan2a"], "b")
    pc = m.add_pod(m["lan1b"], "c")
    pr = m.add_pod(m["relay1"], "r")
    for p in (pa, pc, pr):
        p.netns.popen(["iperf3", "-s"], name="iperf3-server-" + p.name)

    @check("one MTU: node.json, the WireGuard interface and the pods have underlay - 92")
    def _():
        for n in ("lan1a", "lan2a", "lan1b"):
            node = m[n]
            with open(os.path.join(node.dir, "run", "node.json")) as f:
                nj = json.load(f)
            expect(nj.get("mtu") == POD_MTU, "%s node.json mtu %r" % (n, nj.get("mtu")))
            wg = node.ipj("link", "show", node.wg_ifname)
            expect(wg and wg[0]["mtu"] == POD_MTU, "%s %s mtu %r" % (
                n, node.wg_ifname, wg and wg[0]["mtu"]))
        for p in (pa, pb, pc):
            link = json.loads(p.run(["ip", "-j", "link", "show", "eth0"]).stdout)
            expect(link[0]["mtu"] == POD_MTU, "%s eth0 mtu %r" % (p.name, link[0]["mtu"]))
        figure("MTU (node.json = wg = pod eth0)", POD_MTU)

    # "Full size" is what the pods really have (on main: 1420), so that the checks below measure
    # what a pod can send, whatever the one-MTU check found.
    full = json.loads(pa.run(["ip", "-j", "link", "show", "eth0"]).stdout)[0]["mtu"]

    # Sessions up (handshakes done) before counting.
    for src, dst in ((pa, pb), (pb, pa), (pa, pc)):
        ping_retry(src, dst.addr4)
        ping_retry(src, dst.addr6)

    @check("1500 path: full-size DF pings pass, relayed and direct, and nothing is fragmented")
    def _():
        before = all_frags(m)
        for src, dst, what in ((pa, pb, "relayed a->b"), (pb, pa, "relayed b->a"),
                               (pa, pc, "direct a->c")):
            for addr in (dst.addr4, dst.addr6):
                got, out = df_ping(src, addr, full)
                figure("%s %s %d-byte DF pings answered" % (what, "v6" if ":" in addr else "v4",
                                                           full), "%d/%d" % (got, PINGS))
                expect(got >= PINGS - 1, "%s -> %s: %d/%d answered\n%s" % (
                    what, addr, got, PINGS, out))
        delta = frag_delta(before, all_frags(m))
        figure("FragCreates delta (v4, v6) at 1500", delta or "none")
        expect(not delta, "fragments created: %s" % delta)

    @check("1500 path: iperf3 TCP streams complete, relayed and direct, no second stalls")
    def _():
        before = all_frags(m)
        for src, dst, what in ((pb, pa, "relayed b->a"), (pa, pc, "direct a->c")):
            stream_ok("1500 path: " + what, src, dst)
        delta = frag_delta(before, all_frags(m))
        figure("FragCreates delta (v4, v6) at 1500, streams", delta or "none")
        expect(not delta, "fragments created: %s" % delta)

    @check("too big: a packet above the pod MTU fails at once in the pod, not silently")
    def _():
        for addr in (pb.addr4, pb.addr6):
            got, out = df_ping(pa, addr, full + 1, count=1)
            expect(got == 0 and re.search(r"too long", out, re.I),
                   "%s: %s" % (addr, out))

    nat2 = m.t["nat2"]
    nat2.ip("link", "set", "wan0", "mtu", HOP_MTU)
    try:
        @check("1400 hop: the pod gets \"too big\" with the path MTU, never silence; no fragments")
        def _():
            before = all_frags(m)
            drops0 = metric(m, "lan2a", "meshwire_oversize_drops_total",
                            'socket="relay_uplink"')
            # The first full-size frames teach lan2a's kernel the path MTU (nat2's ICMPv6 "too
            # big"); the next ones are refused (EMSGSIZE) and counted, and meshd lowers the
            # WireGuard interface MTU to what the relay path carries.
            got, _out = df_ping(pb, pa.addr6, full, count=5)
            figure("1400 hop: first full-size DF pings answered (path MTU unknown)", "%d/5" % got)
            wg = m["lan2a"].wg_ifname

            def lowered():
                have = m["lan2a"].ipj("link", "show", wg)[0]["mtu"]
                return have == HOP_MTU - OVERHEAD, have
            _, took = wait_for("lan2a's %s MTU at %d" % (wg, HOP_MTU - OVERHEAD), lowered,
                               MTU_BOUND)
            figure("1400 hop: WireGuard MTU lowered after (s)", "%.1f" % took)
            st = m.meshctl(m["lan2a"], "status")["node"]
            expect(st.get("mtu") == HOP_MTU - OVERHEAD, "meshctl status mtu %r" % st.get("mtu"))
            drops = metric(m, "lan2a", "meshwire_oversize_drops_total",
                           'socket="relay_uplink"') - drops0
            figure("1400 hop: lan2a oversize drops (relay_uplink)", int(drops))
            expect(drops > 0, "lan2a counted no oversize drops")
            # The padded probes of the active pair find the path MTU (frames padded as
            # WireGuard pads them: the largest multiple of 16 that fits) and lan2a routes lan1a's
            # pod CIDRs with it.
            want = fits(HOP_MTU, v6=True)
            with keep_active(pb, pa.addr4):
                n, took = wait_for("lan2a's path MTU to lan1a applied",
                                   lambda: pmtu_applied(m, "lan2a", "lan1a", pa), PMTU_BOUND)
                # The other direction crosses the hop too (nat2's WAN link drops what it
                # receives above 1400): lan1a finds it as well. Until then lan1a may route lan2a's
                # pods at 1280 (the black hole's value), and it fragments the pods' echo replies
                # (no DF) to fit: inner packets, routed like any router, but not what is tested.
                n2, _ = wait_for("lan1a's path MTU to lan2a applied",
                                 lambda: pmtu_applied(m, "lan1a", "lan2a", pb), PMTU_BOUND)
            figure("1400 hop: lan2a's path MTU to lan1a (meshctl peers, route mtu)", n)
            figure("1400 hop: lan1a's path MTU to lan2a", n2)
            figure("1400 hop: path MTU applied after (s)", "%.1f" % took)
            expect(want - 8 < n <= want, "path MTU %d, want (%d, %d]" % (n, want - 8, want))
            # Received on nat2's WAN veth, a frame may exceed its MTU by 4 bytes (the kernel
            # leaves room for a VLAN tag: is_skb_forwardable): 1404 bytes come in.
            want_in = fits(HOP_MTU + 4, v6=True)
            expect(want - 8 < n2 <= want_in, "lan1a's path MTU %d, want (%d, %d]" % (
                n2, want - 8, want_in))
            # Refused at the source, never silence: full size with the smaller MTU the pod
            # learned (the interface's, from the first lowering, or the path MTU), and a packet
            # of the interface MTU with the path MTU (lan2a's ICMP from the route, or the pod's
            # own stack once it learned it). The path MTU itself passes.
            any_mtu = re.compile(r"mtu ?[=:]? ?(\d+)", re.I)
            too_big = re.compile(r"mtu ?[=:]? ?%d\b" % n, re.I)
            for addr in (pa.addr4, pa.addr6):
                got, out = df_ping(pb, addr, full, count=3)
                said = [int(v) for v in any_mtu.findall(out)]
                expect(got == 0 and said and max(said) <= HOP_MTU - OVERHEAD,
                       "full size -> %s: want \"too big\" with mtu <= %d, got:\n%s" % (
                           addr, HOP_MTU - OVERHEAD, out))
                got, out = df_ping(pb, addr, HOP_MTU - OVERHEAD, count=3)
                expect(got == 0 and too_big.search(out), "%d bytes -> %s: want \"too big\" with "
                       "mtu %d, got:\n%s" % (HOP_MTU - OVERHEAD, addr, n, out))
                got, out = df_ping(pb, addr, n, count=10)
                figure("1400 hop: relayed b->a %s %d-byte DF pings answered" % (
                    "v6" if ":" in addr else "v4", n), "%d/10" % got)
                expect(got >= 9, "%d-byte pings -> %s: %d/10\n%s" % (n, addr, got, out))
            stream_ok("1400 hop: relayed b->a", pb, pa)
            delta = frag_delta(before, all_frags(m))
            figure("1400 hop: FragCreates delta (v4, v6)", delta or "none")
            expect(not delta, "fragments created: %s" % delta)
            for src, dst in ((pb, pa), (pa, pb)):
                for addr in (dst.addr4, dst.addr6):
                    got, out = df_ping(src, addr, 1000, count=5)
                    expect(got >= 4, "1000-byte pings %s -> %s: %d/5\n%s" % (
                        src.name, addr, got, out))
    finally:
        nat2.ip("link", "set", "wan0", "mtu", UNDERLAY)

    # lan1b (IPv6 to the relays) -> lan2b, relayed: an iperf3 stream, and nat1's WAN link drops
    # to 1400 mid-stream with nat1's ICMP dropped (the classic black hole: nothing tells lan1b).
    pe = m.add_pod(m["lan1b"], "e")
    pd = m.add_pod(m["lan2b"], "d")
    ping_retry(pe, pd.addr4)
    nat1 = m.t["nat1"]
    pd.netns.popen(["iperf3", "-s"], name="iperf3-server")
    nat1.nft(NO_ICMP_TABLE)
    try:
        @check("black hole mid-stream (no ICMP, IPv6): found by probes, TCP recovers in seconds")
        def _():
            before = all_frags(m)
            want = fits(HOP_MTU, v6=True)
            stream_across_cut(m, "mid-stream", pe, pd, "lan1b", "lan2b",
                              lambda: nat1.ip("link", "set", "wan0", "mtu", HOP_MTU),
                              (want - 8, want), STREAM_S, CUT_AT_S, PMTU_BOUND, RECOVER_BOUND)
            delta = frag_delta(before, all_frags(m))
            figure("mid-stream: FragCreates delta (v4, v6)", delta or "none")
            expect(not delta, "fragments created: %s" % delta)

        @check("restart: lan1b's meshd killed and started again keeps the route MTU it measured "
               "(read back from its routes) and confirms it; the routes never lose it")
        def _():
            want = fits(HOP_MTU, v6=True)
            n, _ = wait_pmtu(m, "lan1b", "lan2b", pd, want - 8, want, PMTU_BOUND)
            node = m["lan1b"]
            samples = []
            done = threading.Event()

            def sample():
                while not done.is_set():
                    samples.append((route_mtu_to(node, pd.addr4), route_mtu_to(node, pd.addr6)))
                    time.sleep(0.1)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            with keep_active(pe, pd.addr4):
                try:
                    m.kill(node)
                    time.sleep(RESTART_DOWN_S)
                    m.start(node)
                    m.wait_ready(timeout=READY_BOUND, nodes=[node])
                    # The pair is active: its first poll confirms the kept MTU on the relay path
                    # (lost: 1280 at once, which the samples would show), then searches upward.
                    time.sleep(RESTART_HOLD_S)
                finally:
                    done.set()
                    sampler.join()
                # The upward search (nothing above fits) completes where it started; the pair
                # stays active meanwhile (an idle pair does not probe).
                n2, took = wait_pmtu(m, "lan1b", "lan2b", pd, want - 8, want, PMTU_BOUND)
            changed = sorted({smp for smp in samples if smp != (n, n)})
            figure("restart: lan1b's route MTUs to lan2b's pods, %d samples over %.0f s" % (
                len(samples), RESTART_DOWN_S + RESTART_HOLD_S),
                "all %d" % n if not changed else "%d, and %s" % (n, changed))
            expect(samples and not changed, "route MTU left %d: %s" % (n, changed))
            expect("route MTUs from before the restart kept" in m.log(node),
                   "lan1b did not log the route MTUs it kept")
            holes = metric(m, "lan1b", "meshwire_pmtu_black_holes_total", "")
            expect(holes == 0, "lan1b's restarted meshd saw %d black holes" % holes)
            figure("restart: search after the restart complete at, after (s)",
                   "%d, %.1f" % (n2, took + RESTART_HOLD_S))
            expect(n2 == n, "after the restart: path MTU %d, before %d" % (n2, n))
    finally:
        nat1.ip("link", "set", "wan0", "mtu", UNDERLAY)
        nat1.nft("delete table inet mwt_noicmp")

    # lan1a -> relay1 and lan1b -> relay1 are direct pairs (WireGuard's own sockets): the same
    # black hole on nat1's WAN link, found by padded PINGs to relay1's control address. Then
    # relay1's direction, and a relayed pair with the hop on its IPv4 leg.
    ping_retry(pa, pr.addr4)
    ping_retry(pc, pr.addr4)
    nat1.nft(NO_ICMP_TABLE)
    nat1.ip("link", "set", "wan0", "mtu", HOP_MTU)
    try:
        @check("direct pairs, black hole (no ICMP): path MTU found by padded PINGs, routed, "
               "refused at the source, TCP streams")
        def _():
            before = all_frags(m)
            families = set()
            # meshd picks the family of a direct endpoint (both pairs settle on IPv4 here); then
            # lan1b's IPv4 UDP to relay1 is cut: the pair moves to relay1's IPv6 address (a path
            # change), where the kept MTU fails its confirmation and the search finds IPv6's.
            for src, node, cut_v4 in ((pa, "lan1a", False), (pc, "lan1b", False),
                                      (pc, "lan1b", True)):
                with keep_active(src, pr.addr4):
                    if cut_v4:
                        nat1.nft(V4_CUT_TABLE % (m[node].addr4, m["relay1"].addr4))
                        _, took = wait_for(
                            "%s's endpoint for relay1 on IPv6" % node,
                            lambda: (peers_by_name(m, node)["relay1"].get("endpoint") or "")
                            .startswith("["), PATHS_BOUND)
                        figure("direct: %s moved to IPv6 after the IPv4 cut" % node,
                               "%.1fs" % took)
                    # The family of the WireGuard endpoint in use (meshctl peers): the MTU's.
                    ep = peers_by_name(m, node)["relay1"].get("endpoint") or ""
                    v6 = ep.startswith("[")
                    expect(v6 == cut_v4, "%s: endpoint %s for relay1" % (node, ep))
                    fam = "IPv6" if v6 else "IPv4"
                    families.add(fam)
                    want = fits(HOP_MTU, v6=v6, relayed=False)
                    n, took = wait_pmtu(m, node, "relay1", pr, want - 8, want, PMTU_BOUND)
                    figure("direct %s: %s's path MTU to relay1, applied after" % (fam, node),
                           "%d, %.1fs" % (n, took))
                    expect(m.paths(m[node]).get("relay1") == "direct",
                           "%s: the pair left its direct path" % node)
                    refused_above(src, pr, n)
                    stream_ok("direct %s %s->relay1" % (fam, node), src, pr)
            figure("direct: underlay families covered", " ".join(sorted(families)))
            expect(families == {"IPv4", "IPv6"}, "families %s" % families)
            # relay1's direction to lan1a, through nat1: relay1 probes lan1a's reflexive control
            # address (its registration, either family) and measures that route. The hop is
            # nat1's WAN link inbound, which takes 4 bytes more than its MTU (a veth's check
            # allows for a VLAN tag): between IPv6's fit for 1400 and IPv4's for 1404.
            with keep_active(pr, pa.addr4):
                expect(m.paths(m["relay1"]).get("lan1a") == "direct",
                       "relay1's path to lan1a: %s" % m.paths(m["relay1"]).get("lan1a"))
                lo, hi = fits(HOP_MTU, v6=True, relayed=False) - 8, fits(
                    HOP_MTU + 4, v6=False, relayed=False)
                n, took = wait_pmtu(m, "relay1", "lan1a", pa, lo, hi, PMTU_BOUND)
                figure("direct: relay1's path MTU to lan1a, applied after",
                       "%d, %.1fs" % (n, took))
                refused_above(pr, pa, n)
                stream_ok("direct relay1->lan1a", pr, pa)
            # A relayed pair whose hop is on its IPv4 leg: lan1a (IPv4 to the relays) -> lan2b,
            # never measured before (the pair carried no traffic), through the same hop.
            with keep_active(pa, pd.addr4):
                want = fits(HOP_MTU, v6=False)
                n, took = wait_pmtu(m, "lan1a", "lan2b", pd, want - 8, want, PMTU_BOUND)
                figure("relayed, IPv4 leg: lan1a's path MTU to lan2b, applied after",
                       "%d, %.1fs" % (n, took))
                expect(m.paths(m["lan1a"]).get("lan2b") == "relay",
                       "lan1a -> lan2b: %s" % m.paths(m["lan1a"]).get("lan2b"))
                refused_above(pa, pd, n)
                stream_ok("relayed IPv4 leg lan1a->lan2b", pa, pd)
            delta = frag_delta(before, all_frags(m))
            figure("direct: FragCreates delta (v4, v6)", delta or "none")
            expect(not delta, "fragments created: %s" % delta)
    finally:
        nat1.ip("link", "set", "wan0", "mtu", UNDERLAY)
        nat1.nft("delete table inet mwt_noicmp")
        nat1.run(["nft", "delete", "table", "inet", "mwt_v4cut"], check=False)


def main():
    config = {"metrics": {"listen": METRICS}}
    overrides = {n: {"config": config} for n in
                 ("relay1", "relay2", "lan1a", "lan1b", "lan2a", "lan2b")}
    return run_mesh_scenario(body, 64, overrides=overrides)


if __name__ == "__main__":
    t0 = time.monotonic()
    sys.exit(main())
