#!/usr/bin/env python3
"""Self-test of the e2e testbed (root; Python 3 stdlib; plain tools only: ping, UDP/TCP probes).

Builds the default topology (2 relays, LAN1 behind a cone NAT, LAN2 behind a symmetric NAT, relay2
behind a user-space delay bridge) and proves its properties; then the router kinds `plain` and
`fw6` on a topology of their own (what hole punching gets behind them); then proves that teardown leaves
nothing behind, also when the building process raises, is SIGTERMed, or is SIGKILLed (then
`--cleanup-stale` removes the leftovers). Prints `N passed, N failed`; exit 1 on any failure,
77 when it cannot run here (not root, no `ip netns`).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import topology  # noqa: E402
from pass_fail import check, expect, results  # noqa: E402
from topology import NETTOOLS, Topology  # noqa: E402

DELAY_MS = 25.0  # one-way delay on relay2's uplink
NAT_DELAY_MS = 20.0  # one-way delay on nat3's WAN uplink (0 outside its check)
SLACK_MS = 15.0  # allowed median RTT above 2 * delay (measured: ~1 ms idle, ~4 ms at load 11)
def ping_rtts(node, addr, count=5, interval=0.2):
    p = node.run(["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", addr],
                 check=False, timeout=30)
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", p.stdout)]
    return rtts


def reachable(node, addr):
    return node.run(["ping", "-n", "-c", "1", "-W", "1", addr], check=False).returncode == 0


def udp_probe(node, targets, sport=0, tries=3):
    p = node.run([sys.executable, NETTOOLS, "udp-probe", "--sport", str(sport),
                  "--tries", str(tries),
                  "--targets", ",".join(targets)], check=False, timeout=30)
    return json.loads(p.stdout) if p.stdout.strip() else [{"error": p.stderr}]


def tgt(addr, port):
    return ("[%s]:%d" if ":" in addr else "%s:%d") % (addr, port)


def root_state():
    """What the root namespace looks like (must not change)."""
    links = sorted(l["ifname"] for l in json.loads(
        subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout))
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return links, nft


def procs_mentioning(s):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if s in cmd:
            out.append((int(pid), cmd))
    return out


# ------------------------------------------------------------------------------------------------


def run_topology_checks(t):
    relays = t.relays
    r1, r2 = t["relay1"], t["relay2"]
    lan_nodes = t.lan_nodes()

    @check("plan: addresses as documented")
    def _():
        expect((r1.addr4, r1.addr6) == ("203.0.113.11", "2001:db8::11"), r1)
        expect((t["nat1"].addr4, t["nat2"].addr6) == ("203.0.113.101", "2001:db8::102"), "routers")
        expect((t["lan2b"].addr4, t["lan2b"].addr6) == ("192.168.12.11", "fd02::11"), "lan2b")
        names = [n.wg_ifname for n in t.nodes.values()]
        expect(len(set(names)) == len(names) and max(map(len, names)) <= 15, names)
        got = sorted(a for _, a in t["lan1a"].addrs())
        expect(got == ["192.168.11.10", "fd01::10"], got)
        return "\n" + textwrap.indent(t.describe(), "     ")

    @check("LAN nodes reach every relay over IPv4 and IPv6")
    def _():
        bad = [(n.name, r.name, a) for n in lan_nodes for r in relays
               for a in (r.addr4, r.addr6) if not reachable(n, a)]
        expect(not bad, "unreachable: %s" % bad)
        return "%d pairs x 2 families" % (len(lan_nodes) * len(relays))

    @check("nodes of one LAN reach each other directly")
    def _():
        for k in (1, 2):
            a, b = t.lan_nodes(k)[:2]
            for addr in (b.addr4, b.addr6):
                expect(reachable(a, addr), "%s -> %s" % (a.name, addr))

    echo = {}
    for r in relays:
        echo[r.name] = r.popen([sys.executable, NETTOOLS, "udp-echo", "--port", "7000"],
                               name="udp-echo")
    for p in echo.values():
        p.wait_log("listening")

    @check("relay sees LAN traffic from the NAT router's public address")
    def _():
        seen = []
        for n in (t["lan1a"], t["lan2b"]):
            rt = t.router_of(n)
            for fam in ("addr4", "addr6"):
                res = udp_probe(n, [tgt(getattr(r1, fam), 7000)])[0]
                expect(res.get("seen_src") == getattr(rt, fam),
                       "%s: relay saw %s, expected %s" % (n.name, res, getattr(rt, fam)))
                seen.append("%s->%s" % (n.name, res["seen_src"]))
        return ", ".join(seen)

    @check("LANs cannot reach each other directly")
    def _():
        a, b = t["lan1a"], t["lan2a"]
        for x, y in ((a, b), (b, a)):
            for addr in (y.addr4, y.addr6):
                expect(not reachable(x, addr), "%s reached %s" % (x.name, addr))
        # even a public host that routes the private prefix at the router gets nothing in
        nat2 = t["nat2"]
        r1.ip("route", "add", "192.168.12.0/24", "via", nat2.addr4)
        r1.ip("-6", "route", "add", "fd02::/64", "via", nat2.addr6)
        try:
            expect(not reachable(r1, b.addr4), "relay1 reached %s through nat2" % b.addr4)
            expect(not reachable(r1, b.addr6), "relay1 reached %s through nat2" % b.addr6)
        finally:
            r1.ip("route", "del", "192.168.12.0/24", check=False)
            r1.ip("-6", "route", "del", "fd02::/64", check=False)
        return "private addresses unreachable; unsolicited inbound dropped by the routers"

    figures = []

    @check("cone NAT keeps one public port for one socket (v4, v6)")
    def _():
        out = []
        for fam in ("addr4", "addr6"):
            res = udp_probe(t["lan1a"], [tgt(getattr(r, fam), 7000) for r in relays], sport=40001)
            ports = [x.get("seen_port") for x in res]
            expect(None not in ports and len(set(ports)) == 1, "ports %s (%s)" % (ports, res))
            out.append("%s local 40001 -> %s" % (fam[-1] == "4" and "v4" or "v6", ports))
        figures.append("cone: " + "; ".join(out))
        return "; ".join(out)

    @check("symmetric NAT maps per destination (v4, v6)")
    def _():
        out = []
        for fam in ("addr4", "addr6"):
            res = udp_probe(t["lan2a"], [tgt(getattr(r, fam), 7000) for r in relays], sport=40001)
            ports = [x.get("seen_port") for x in res]
            expect(None not in ports and len(set(ports)) == len(ports),
                   "ports %s (%s)" % (ports, res))
            out.append("%s local 40001 -> %s" % (fam[-1] == "4" and "v4" or "v6", ports))
        figures.append("symmetric: " + "; ".join(out))
        return "; ".join(out)

    @check("cone NAT: second LAN node on the same port gets another port")
    def _():
        a = udp_probe(t["lan1a"], [tgt(r1.addr4, 7000)], sport=40002)[0]["seen_port"]
        b = udp_probe(t["lan1b"], [tgt(r1.addr4, 7000)], sport=40002)[0]["seen_port"]
        # sequential probes: lan1a's mapping is still in conntrack, so lan1b cannot have 40002
        expect(a == 40002 and b not in (None, 40002), "lan1a %s, lan1b %s" % (a, b))
        return "lan1a 40002 -> %s, lan1b 40002 -> %s" % (a, b)

    @check("expose: a port forward makes a LAN node reachable from outside")
    def _():
        b = t["lan1b"]
        e = b.popen([sys.executable, NETTOOLS, "udp-echo", "--port", "7001"], name="udp-echo")
        e.wait_log("listening")
        expect(udp_probe(r1, [tgt(t["nat1"].addr4, 7001)], tries=1)[0].get("seen_port") is None,
               "reached lan1b before the port forward")
        t.expose(b, "udp", 7001, public_port=17001)
        res = udp_probe(r1, [tgt(t["nat1"].addr4, 17001)], sport=41000)[0]
        expect(res.get("seen_src") == r1.addr4 and res.get("seen_port") == 41000, res)
        e.stop()
        return "relay1 -> nat1:17001 -> lan1b:7001, lan1b saw %s:%s" % (
            res["seen_src"], res["seen_port"])

    @check("hole punching: cone<->cone works, cone<->symmetric does not (v4, v6)")
    def _():
        out = []

        def punch(x, y, port, fam):
            rx, ry = t.router_of(x), t.router_of(y)
            px = x.popen([sys.executable, NETTOOLS, "udp-punch", "--sport", str(port), "--peer",
                          tgt(getattr(ry, fam), port), "--seconds", "1.0"], name="punch")
            py = y.popen([sys.executable, NETTOOLS, "udp-punch", "--sport", str(port), "--peer",
                          tgt(getattr(rx, fam), port), "--seconds", "1.0"], name="punch")
            px.wait(10)
            py.wait(10)
            jx = json.loads(px.log().strip().splitlines()[-1])
            jy = json.loads(py.log().strip().splitlines()[-1])
            return jx["received"] > 0 and jy["received"] > 0, jx, jy

        for fam, port in (("addr4", 42000), ("addr6", 42001)):
            ok, jx, jy = punch(t["lan1a"], t["lan3a"], port, fam)
            expect(ok, "cone<->cone %s: %s / %s" % (fam, jx, jy))
            out.append("cone<->cone %s: %d/%d datagrams in" % (fam[-1] == "4" and "v4" or "v6",
                                                              jx["received"], jy["received"]))
            ok, jx, jy = punch(t["lan1b"], t["lan2a"], port, fam)
            expect(not ok, "cone<->symmetric %s punched through: %s / %s" % (fam, jx, jy))
            out.append("cone<->symmetric %s: %d/%d" % (fam[-1] == "4" and "v4" or "v6",
                                                       jx["received"], jy["received"]))
        figures.append("punch (1 s, 50 ms interval): " + ", ".join(out))
        return ", ".join(out)

    @check("latency: relay2 is %g ms one-way slower (ping)" % DELAY_MS)
    def _():
        n = t["lan1a"]
        f1 = ping_rtts(n, r1.addr4, count=10, interval=0.05)
        f2 = ping_rtts(n, r2.addr4, count=10, interval=0.05)
        expect(len(f1) >= 8 and len(f2) >= 8, "lost pings: %s %s" % (f1, f2))
        m1, m2 = sorted(f1)[len(f1) // 2], sorted(f2)[len(f2) // 2]
        expect(m1 < 5, "relay1 median RTT %.2f ms" % m1)
        expect(2 * DELAY_MS <= m2 <= 2 * DELAY_MS + SLACK_MS, "relay2 median RTT %.2f ms" % m2)
        s = "ping median RTT relay1 %.2f ms, relay2 %.2f ms (configured +%g)" % (
            m1, m2, 2 * DELAY_MS)
        figures.append(s)
        return s

    @check("latency: UDP RTT and a runtime change of the delay")
    def _():
        n = t["lan2a"]
        out = []
        for ms in (DELAY_MS, 5.0, 50.0):
            r2.set_delay(ms)
            rt = {}
            for r in relays:
                p = n.run([sys.executable, NETTOOLS, "udp-rtt", "--target", tgt(r.addr4, 7000),
                           "--count", "10"], timeout=60)
                rt[r.name] = json.loads(p.stdout)
            lo, hi = 2 * ms, 2 * ms + SLACK_MS
            # the median, not the mean: a probe that waits for ARP/ND (two more crossings of
            # the delay bridge) is an honest outlier, not a fault
            expect(rt["relay1"]["med_ms"] < 5, rt)
            expect(lo <= rt["relay2"]["min_ms"] and rt["relay2"]["med_ms"] <= hi, (ms, rt))
            out.append("delay %g: relay1 med %.2f, relay2 min/med/max %.2f/%.2f/%.2f ms" % (
                ms, rt["relay1"]["med_ms"], rt["relay2"]["min_ms"], rt["relay2"]["med_ms"],
                rt["relay2"]["max_ms"]))
        r2.set_delay(DELAY_MS)
        figures.extend("UDP " + o for o in out)
        return "\n     " + "\n     ".join(out)

    @check("latency: a delay on a NAT router's WAN uplink (nat3 +%g ms)" % NAT_DELAY_MS)
    def _():
        # The whole LAN's way out crosses it, traffic inside the LAN does not.
        a, b = t["lan3a"], t["lan3b"]
        t["nat3"].set_delay(NAT_DELAY_MS)
        try:
            out = ping_rtts(a, r1.addr4, count=10, interval=0.05)
            lan = ping_rtts(a, b.addr4, count=5, interval=0.05)
        finally:
            t["nat3"].set_delay(0)
        expect(len(out) >= 8 and len(lan) >= 4, "lost pings: %s %s" % (out, lan))
        m_out, m_lan = sorted(out)[len(out) // 2], sorted(lan)[len(lan) // 2]
        expect(2 * NAT_DELAY_MS <= m_out <= 2 * NAT_DELAY_MS + SLACK_MS,
               "lan3a -> relay1 median RTT %.2f ms" % m_out)
        expect(m_lan < 5, "lan3a -> lan3b median RTT %.2f ms" % m_lan)
        s = "ping median RTT lan3a -> relay1 %.2f ms (nat3 +%g one-way), lan3a -> lan3b %.2f ms" % (
            m_out, NAT_DELAY_MS, m_lan)
        figures.append(s)
        return s

    @check("TCP bulk transfer through NAT and the delay bridge")
    def _():
        out = []
        for r in relays:
            r.popen([sys.executable, NETTOOLS, "tcp-sink", "--port", "5001"],
                    name="tcp-sink").wait_log("listening")
        for r in relays:
            for addr in (r.addr4, r.addr6):
                p = t["lan1b"].run([sys.executable, NETTOOLS, "tcp-send", "--target",
                                    tgt(addr, 5001), "--bytes", str(16 << 20)], timeout=60)
                res = json.loads(p.stdout)
                expect(res["bytes"] == 16 << 20, res)
                out.append("%s %s %.0f MB/s" % (r.name, addr, res["MBps"]))
        figures.append("TCP 16 MiB lan1b->: " + ", ".join(out))
        return ", ".join(out)

    @check("link down cuts a relay off, link up restores it")
    def _():
        n = t["lan1a"]
        r1.link_down()
        try:
            expect(not reachable(n, r1.addr4), "relay1 still reachable with its link down")
            expect(not reachable(n, r1.addr6), "relay1 still reachable (v6) with its link down")
        finally:
            r1.link_up()
        deadline = time.monotonic() + 5
        while not (reachable(n, r1.addr4) and reachable(n, r1.addr6)):
            expect(time.monotonic() < deadline, "relay1 not reachable again after link up")

    @check("offline LAN: uplink down, a node joins, LAN still works")
    def _():
        nat3 = t["nat3"]
        nat3.link_down()
        try:
            c = t.add_lan_node(3)
            expect(c.name == "lan3c" and c.addr4 == "192.168.13.12" and c.addr6 == "fd03::12", c)
            expect(reachable(c, t["lan3a"].addr4) and reachable(t["lan3a"], c.addr6),
                   "LAN-local traffic broken while offline")
            expect(not reachable(c, r1.addr4), "reached relay1 with the LAN uplink down")
        finally:
            nat3.link_up()
        expect(reachable(c, r1.addr4) and reachable(c, r1.addr6), "no uplink after link_up")
        return "lan3c joined while nat3's wan0 was down"

    @check("a relay added at runtime")
    def _():
        r3 = t.add_public()
        expect((r3.name, r3.addr4, r3.addr6) == ("relay3", "203.0.113.13", "2001:db8::13"), r3)
        expect(reachable(t["lan2b"], r3.addr4) and reachable(t["lan2b"], r3.addr6), "relay3")

    @check("processes: popen logs, kill, kill_all")
    def _():
        p = r1.popen(["sh", "-c", "echo hello from $(ip -br addr show eth0); sleep 600"],
                     name="sleeper")
        m = p.wait_log(r"hello from (\S+)")
        expect("eth0" in m.group(0), p.log())
        expect(p.pid in r1.pids(), "pid not in the namespace")
        rc = p.kill()
        expect(rc == -signal.SIGKILL and not p.alive(), "exit %s" % rc)
        q = r1.popen(["sleep", "600"], name="sleeper")
        r1.kill_all()
        expect(not q.alive(), "kill_all left sleep alive")
        expect(not echo["relay1"].alive(), "kill_all left udp-echo alive")
        return "log %s" % os.path.basename(p.log_path)

    @check("a second topology beside the first: same addresses, isolated")
    def _():
        with Topology(relays=1, lans=["cone"], nodes_per_lan=1) as t2:
            expect(t2.prefix != t.prefix and t2["relay1"].addr4 == r1.addr4, t2.prefix)
            expect(reachable(t2["lan1a"], t2["relay1"].addr4), "t2 lan1a -> t2 relay1")
            expect(reachable(t["lan1a"], r1.addr4), "t lan1a -> t relay1")
            p2 = t2.prefix
        left = [ns for ns in topology.netns_list() if ns.startswith(p2)]
        expect(not left, left)
        expect(reachable(t["lan1a"], r1.addr4), "first topology broken by closing the second")
        return "prefix %s" % p2

    @check("wireguard-go per node: unique names, private /run/wireguard")
    def _():
        a, b = t["lan1a"], t["lan2a"]
        for n in (a, b):
            n.popen(["wireguard-go", "-f", n.wg_ifname], name="wireguard-go",
                    env=dict(os.environ, WG_PROCESS_FOREGROUND="1"))
        for n in (a, b):
            deadline = time.monotonic() + 10
            while n.run(["wg", "show", "interfaces"], check=False).stdout.split() != \
                    [n.wg_ifname]:
                expect(time.monotonic() < deadline, "%s: wg show interfaces = %r" % (
                    n.name, n.run(["wg", "show", "interfaces"], check=False).stdout))
                time.sleep(0.05)
        links = [l["ifname"] for l in a.ipj("link")]
        expect(a.wg_ifname in links and b.wg_ifname not in links, links)
        # the sockets are in the per-node dirs, not in the shared /run/wireguard
        sock = os.path.join(a.private_path(topology.WG_RUN_DIR), a.wg_ifname + ".sock")
        expect(os.path.exists(sock), "no %s" % sock)
        expect(not os.path.exists(os.path.join(topology.WG_RUN_DIR, a.wg_ifname + ".sock")),
               "socket in the shared /run/wireguard")
        return "%s sees only %s, %s only %s; socket %s" % (a.name, a.wg_ifname, b.name,
                                                          b.wg_ifname, sock)
    return figures


# ------------------------------------------------------------------------------------------------
# leftovers() must see what is really there, or a teardown bug passes unnoticed


def fake_socket(path):
    """A UNIX socket file nobody listens on: what a SIGKILLed wireguard-go leaves."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as so:
        so.bind(path)


def run_leftover_checks():
    @check("leftovers() reports wireguard-go, sockets and strays where they are")
    def _():
        t = Topology(relays=1, lans=["cone"], nodes_per_lan=1, keep_tmp=True)
        strays = []
        try:
            r1, a = t["relay1"], t["lan1a"]
            wg = a.popen(["wireguard-go", "-f", a.wg_ifname], name="wireguard-go",
                         env=dict(os.environ, WG_PROCESS_FOREGROUND="1"))
            sock = os.path.join(a.private_path(topology.WG_RUN_DIR), a.wg_ifname + ".sock")
            deadline = time.monotonic() + 10
            while not os.path.exists(sock):
                expect(time.monotonic() < deadline and wg.alive(), "no socket: " + wg.log())
                time.sleep(0.05)
            left = t.leftovers()
            expect(("wg-socket", sock) in left, left)
            expect(any(k == "process" and ":%d " % wg.pid in w for k, w in left), left)
            # SIGKILL: wireguard-go cannot remove its socket; the file is a leftover
            wg.kill()
            left = t.leftovers()
            expect(("wg-socket", sock) in left, "stale socket not reported: %s" % left)
            expect(not any(":%d " % wg.pid in w for _, w in left), left)
            # a fake socket in the relay's private dir (nobody listens), like a killed one
            fake = os.path.join(r1.private_path(topology.WG_RUN_DIR), r1.wg_ifname + ".sock")
            fake_socket(fake)
            expect(("wg-socket", fake) in t.leftovers(), t.leftovers())
            # processes that popen() does not know: in a node namespace, started by hand ...
            strays.append(subprocess.Popen(["ip", "netns", "exec", r1.ns, "sleep", "600"],
                                           start_new_session=True))
            # ... and one in a namespace of its own naming the node's files (a lost meshd)
            strays.append(subprocess.Popen(
                ["unshare", "-n", "--", sys.executable, "-c", "import time; time.sleep(600)",
                 os.path.join(a.dir, "meshd.yaml")], start_new_session=True))
            time.sleep(0.3)
            pids = [pid for pid, _ in t.processes()]
            expect(all(p.pid in pids for p in strays), "strays %s not in %s" % (
                [p.pid for p in strays], t.processes()))
            # the namespace's name deleted under the hand-started sleep: the namespace lives on
            # through it and leftovers() still finds it (by the namespace's identity)
            topology.sh(["ip", "netns", "del", r1.ns])
            expect(("process", "%d sleep 600" % strays[0].pid) in t.leftovers(),
                   "process of a deleted namespace missed: %s" % t.leftovers())
            t.close()
            left = t.leftovers()
            expect(not left, "after close(): %s" % left)
            expect(all(p.poll() is not None for p in strays), "close() left a stray")
            return "found: per-node socket (live and stale), fake socket, 2 strays (one in a " \
                   "deleted namespace); close() removed all"
        finally:
            t.close()
            for p in strays:
                if p.poll() is None:
                    p.kill()
                p.wait()
            shutil.rmtree(t.tmpdir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# teardown in child processes: normal exception, SIGTERM, SIGKILL + --cleanup-stale

CHILD = r"""
import json, os, socket, subprocess, sys, time
sys.path.insert(0, %(here)r)
import topology
from topology import Topology, NETTOOLS
mode = sys.argv[1]
t = Topology(relays=1, lans=["cone"], nodes_per_lan=1, delay_ms={"relay1": 1})
a, r1 = t["lan1a"], t["relay1"]
procs = [a.popen(["sleep", "600"], name="sleeper"),
         r1.popen([sys.executable, NETTOOLS, "udp-echo", "--port", "7000"], name="echo"),
         a.popen(["wireguard-go", "-f", a.wg_ifname], name="wireguard-go",
                 env=dict(os.environ, WG_PROCESS_FOREGROUND="1"))]
sock = os.path.join(a.private_path(topology.WG_RUN_DIR), a.wg_ifname + ".sock")
while not os.path.exists(sock):
    assert procs[2].alive(), procs[2].log()
    time.sleep(0.05)
# what a test can leave outside the named namespaces: a process in a namespace of its own that
# names the run's files (a meshd whose namespace is gone), a socket in the shared /run/wireguard
lost = subprocess.Popen(["unshare", "-n", "--", sys.executable, "-c",
                         "import time; time.sleep(600)", os.path.join(a.dir, "meshd.yaml")],
                        start_new_session=True)
shared = os.path.join(topology.WG_RUN_DIR, r1.wg_ifname + ".sock")
with socket.socket(socket.AF_UNIX) as so:
    so.bind(shared)
print("READY", os.getpid(), t.tmpdir, json.dumps({"pids": [p.pid for p in procs] + [lost.pid],
      "sockets": [sock, shared]}), flush=True)
if mode == "raise":
    raise RuntimeError("test failure inside the topology")
time.sleep(600)
"""


def child_run(mode):
    p = subprocess.Popen([sys.executable, "-c", CHILD % {"here": HERE}, mode],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().split(None, 3)
    if not line or line[0] != "READY":
        p.kill()
        raise AssertionError("child did not come up: %s" % p.stderr.read())
    return p, int(line[1]), line[2], json.loads(line[3])


def leftovers_of(pid, tmpdir, made):
    """What is left of child run `pid`, looked for independently of topology.py."""
    pre, wg = "mwt%d-" % pid, "mwt%dn" % pid
    left = [ns for ns in topology.netns_list() if ns.startswith(pre)]
    procs = {x for s in (pre, wg, tmpdir) for x in procs_mentioning(s)}
    procs |= {(q, "(started by the run)") for q in made["pids"]
              if topology.pid_alive(q) and not topology._is_zombie(q)}
    left += ["process %d %s" % x for x in sorted(procs)]
    left += [f for f in made["sockets"] if os.path.exists(f)]
    if os.path.isdir(topology.WG_RUN_DIR):
        left += [os.path.join(topology.WG_RUN_DIR, f) for f in os.listdir(topology.WG_RUN_DIR)
                 if f.startswith(wg)]
    if os.path.exists(tmpdir):
        left.append(tmpdir)
    return sorted(set(left))


def wait_gone(pid, tmpdir, made, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers_of(pid, tmpdir, made)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def run_teardown_checks():
    @check("failure inside a topology: everything removed")
    def _():
        p, pid, tmpdir, made = child_run("raise")
        p.wait(30)
        left = wait_gone(pid, tmpdir, made)
        expect(p.returncode != 0 and not left, "rc %s, left %s" % (p.returncode, left))

    @check("SIGTERM / SIGINT: everything removed")
    def _():
        for sig in (signal.SIGTERM, signal.SIGINT):
            p, pid, tmpdir, made = child_run("sleep")
            p.send_signal(sig)
            p.wait(30)
            left = wait_gone(pid, tmpdir, made)
            expect(p.returncode == 128 + sig and not left,
                   "%s: rc %s, left %s" % (sig.name, p.returncode, left))

    @check("SIGKILL leaves debris, --cleanup-stale removes it")
    def _():
        p, pid, tmpdir, made = child_run("sleep")
        p.kill()
        p.wait(30)
        time.sleep(0.2)
        left = leftovers_of(pid, tmpdir, made)
        want = ["mwt%d-" % pid, "process %d" % made["pids"][2], "process %d" % made["pids"][3],
                made["sockets"][0], made["sockets"][1], tmpdir]
        missing = [w for w in want if not any(x.startswith(w) for x in left)]
        expect(not missing, "a SIGKILL should leave %s; left: %s" % (missing, left))
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, os.path.join(HERE, "topology.py"),
                              "--cleanup-stale"], capture_output=True, text=True, timeout=60)
        sweep_s = time.monotonic() - t0
        expect(out.returncode == 0, "exit %d\n%s%s" % (out.returncode, out.stdout, out.stderr))
        left2 = wait_gone(pid, tmpdir, made)
        expect(not left2, "after --cleanup-stale: %s\n%s" % (left2, out.stdout))
        return "%d leftovers (namespaces, wireguard-go, a lost process, sockets, tmpdir) " \
               "removed in %.2fs" % (len(left), sweep_s)


def punch(x, y, port, x_to, y_to, stagger=0.0, only_x=False, seconds=1.0):
    """nettools udp-punch from x (to x_to) and y (to y_to) on `port`, y starting `stagger` s after
    x's first datagram left (x sends that much longer), or x alone: (datagrams x got, datagrams y
    got)."""
    px = x.popen([sys.executable, NETTOOLS, "udp-punch", "--sport", str(port), "--peer",
                  tgt(x_to, port), "--seconds", str(seconds + stagger)], name="punch")
    py = None
    if not only_x:
        if stagger:
            px.wait_log("sending")
            time.sleep(stagger)
        py = y.popen([sys.executable, NETTOOLS, "udp-punch", "--sport", str(port), "--peer",
                      tgt(y_to, port), "--seconds", str(seconds)], name="punch")
    got = []
    for p in (px, py):
        if p is None:
            got.append(0)
            continue
        p.wait(10 + seconds + stagger)
        got.append(json.loads(p.log().strip().splitlines()[-1])["received"])
    return tuple(got)


def run_kind_checks(figures):
    """The router kinds `plain` (masquerade, no firewall) and `fw6` (IPv6 routed behind a stateful
    firewall) on a topology of their own (issue 13's testbed)."""
    t = Topology(relays=1, lans=["plain", "plain", "fw6", "fw6", "cone"], nodes_per_lan=1)
    try:
        r1 = t["relay1"]
        r1.popen([sys.executable, NETTOOLS, "udp-echo", "--port", "7000"],
                 name="udp-echo").wait_log("listening")
        a, b, c, d, e = (t[n] for n in ("lan1a", "lan2a", "lan3a", "lan4a", "lan5a"))

        @check("fw6: a global IPv6 address inside, seen as itself outside; IPv4 still NATed")
        def _():
            expect(c.addr6 == "2001:db8:103::10", c.addr6)
            res = (udp_probe(c, [tgt(r1.addr6, 7000)], sport=40100) +
                   udp_probe(c, [tgt(r1.addr4, 7000)], sport=40100))
            expect(res[0].get("seen_src") == c.addr6 and res[0].get("seen_port") == 40100,
                   "v6: %s" % res[0])
            expect(res[1].get("seen_src") == t["nat3"].addr4, "v4: %s" % res[1])
            # Unsolicited: the firewall drops it (a ping from the relay, and from another fw6 LAN).
            expect(not reachable(r1, c.addr6), "relay1 reached %s unsolicited" % c.addr6)
            expect(not reachable(d, c.addr6), "lan4a reached %s unsolicited" % c.addr6)
            expect(reachable(c, r1.addr6), "lan3a -> relay1 over IPv6")
            return "lan3a %s seen as itself; v4 as %s" % (c.addr6, res[1].get("seen_src"))

        @check("fw6<->fw6 over IPv6: a simultaneous open passes both firewalls; unsolicited UDP "
               "to a listening node does not")
        def _():
            both = punch(c, d, 42100, d.addr6, c.addr6)
            expect(both[0] > 0 and both[1] > 0, "simultaneous: %s" % (both,))
            # lan4a listens (an echo server) and never sent to lan3a: lan3a's datagrams are
            # unsolicited at nat4's firewall, and no echo comes back.
            echo = d.popen([sys.executable, NETTOOLS, "udp-echo", "--port", "42101"],
                           name="udp-echo-fw6")
            echo.wait_log("listening")
            res = udp_probe(c, [tgt(d.addr6, 42101)], sport=42101)[0]
            echo.stop()
            expect(res.get("seen_port") is None, "unsolicited UDP reached lan4a: %s" % res)
            s = "fw6<->fw6 v6: simultaneous %d/%d in; unsolicited UDP to a listener: no echo" % (
                both)
            figures.append(s)
            return s

        # A plain router's own stack takes the first unsolicited packet (ICMP port unreachable)
        # and its conntrack entry then owns the tuple: the LAN node's own packets to that peer
        # are mapped to another port, which the peer's router does not expect. So a plain NAT
        # is punched only by sending from its side first (its mapping is then in place when the
        # peer's packets arrive), and two plain NATs not at all (the first packet in, either
        # way, claims the tuple). `together` depends on which first packet arrives first: shown.
        @check("plain masquerade (no firewall): punched only from its own side first; "
               "plain<->plain not with one side first")
        def _():
            out = []
            cases = (("plain<->plain v4, together", a, b, "addr4", 0.0, None),
                     ("plain<->plain v4, lan1a 0.3 s first", a, b, "addr4", 0.3, False),
                     ("plain<->plain v6, lan1a 0.3 s first", a, b, "addr6", 0.3, False),
                     ("plain<->cone v4, plain 0.3 s first", a, e, "addr4", 0.3, True),
                     ("plain<->cone v6, plain 0.3 s first", a, e, "addr6", 0.3, True),
                     ("cone<->plain v4, cone 0.3 s first", e, a, "addr4", 0.3, False),
                     ("cone<->plain v6, cone 0.3 s first", e, a, "addr6", 0.3, False))
            for i, (what, x, y, fam, stagger, want) in enumerate(cases):
                rx, ry = t.router_of(x), t.router_of(y)
                got = punch(x, y, 42200 + i, getattr(ry, fam), getattr(rx, fam), stagger)
                out.append("%s: %d/%d" % (what, got[0], got[1]))
                if want is not None:
                    expect((got[0] > 0 and got[1] > 0) == want,
                           "%s: %s, want %s" % (what, got, "through" if want else "nothing"))
                    if not want:
                        expect(got == (0, 0), "%s: one way got through: %s" % (what, got))
            figures.append("plain: " + "; ".join(out))
            return "; ".join(out)
    finally:
        t.close()

    @check("kinds topology closed: nothing left")
    def _():
        left = t.leftovers() + [("netns", ns) for ns in topology.netns_list()
                                if ns.startswith(t.prefix)]
        left += [("process", x) for x in procs_mentioning(t.prefix) +
                 procs_mentioning(t.tmpdir)]
        expect(not left, left)


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root")
        return 77
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        print("SKIP: ip netns unavailable")
        return 77
    for tool in ("wireguard-go", "wg", "unshare"):
        if not shutil.which(tool):
            print("SKIP: %s not installed (install/deps.sh)" % tool)
            return 77
    t_start = time.monotonic()
    before = root_state()
    figures = []
    t0 = time.monotonic()
    t = Topology(relays=2, lans=["cone", "symmetric", "cone"], nodes_per_lan=2,
                 delay_ms={"relay2": DELAY_MS, "nat3": 0})
    build_s = time.monotonic() - t0
    prefix, tmpdir = t.prefix, t.tmpdir
    print("topology built in %.2fs (prefix %s, logs in %s)" % (build_s, prefix, tmpdir))
    try:
        figures = run_topology_checks(t)
    finally:
        t0 = time.monotonic()
        t.close()
        close_s = time.monotonic() - t0
    try:
        run_kind_checks(figures)
    except Exception as e:  # noqa: BLE001 - a failed build or setup is a failed check
        err = e

        @check("router kinds: topology built and probes started")
        def _():
            raise err

    @check("teardown: nothing left, root namespace unchanged")
    def _():
        left = t.leftovers()
        left += [("netns", ns) for ns in topology.netns_list() if ns.startswith(prefix)]
        left += [("process", x) for x in procs_mentioning(prefix) + procs_mentioning(tmpdir)]
        expect(not left, left)
        after = root_state()
        expect(after[0] == before[0], "root links changed: %s -> %s" % (before[0], after[0]))
        expect(after[1] == before[1], "root nft ruleset changed")
        return "closed in %.2fs" % close_s

    run_leftover_checks()
    run_teardown_checks()

    print("\nfigures:")
    for f in figures:
        print("  " + f)
    npass = sum(1 for _, ok in results if ok)
    nfail = len(results) - npass
    print("self-test took %.1fs" % (time.monotonic() - t_start))
    print("%d passed, %d failed" % (npass, nfail))
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
