#!/usr/bin/env python3
"""meshd end to end with the KERNEL WireGuard backend (root; Python 3 stdlib; meshd + the kernel's
wireguard module + the real CNI plugin; iperf3). CTest `e2e_mesh_kernel` (--part all), labels
e2e;vm;kernel-wg, runs it in the QEMU guest of test/vm (this machine's kernel has no WireGuard);
by hand it runs wherever the module loads.

Why not test_mesh.py and test_failover.py themselves: their six-node mesh keeps the guest's two
emulated CPUs busy at steady state (meshd's relay probing: every LAN node with a relayed pair
probes both relays on both addresses every 100 ms, and under TCG a control datagram through the
testbed costs about 1 ms of emulated CPU): 74 % busy with an idle host, saturated once the host
has a load average of 2-4. Relay RTTs then swing between 5 and 200 ms (0.5-1.7 s when saturated),
elections flip the pairs between the relays every few seconds and relays "stop answering"
(400 ms): test_mesh.py's "relayed pairs kept their relay" fails in the guest even on an idle
host, and on a loaded one paths never settle. The five-node mesh here leaves the guest about two
thirds idle (relay RTT 5-10 ms) and still has each kind of path: relay1, relay2 (public); LAN1
behind a cone NAT (lan1a, lan1b); LAN2 behind a symmetric NAT (lan2a). lan1a-lan1b are direct,
lan1a-lan2a and lan1b-lan2a relayed. On a host that has the module,
MESHWIRE_WG_BACKEND=kernel runs test_mesh.py and test_failover.py themselves with the kernel
backend (mesh.py).

Both parts start with:
  kernel      every meshd runs the kernel backend: its interface is a wireguard link, no
              wireguard-go runs, no UAPI socket exists, meshctl status says kernel (a silent
              fallback to wireguard-go fails); `wg show` (netlink) lists every peer meshctl lists
  paths       direct within LAN1 and to the relays, relayed across LANs (both ends)
--part mesh:
  pods        pods on the three LAN nodes reach each other over v4 and v6, direct and relayed
  wg          the kernel's endpoint per peer equals meshctl's (direct: the peer's LAN
              address:51820; relayed: a 127.0.0.1 relay proxy socket), and relayed peers have a
              handshake and traffic both ways
  ping        `meshctl ping` of a relayed and a direct peer
  block       the direct lan1a-lan1b path blocked by nftables turns relay (pods still reach each
              other; the kernel's endpoint moves to a 127.0.0.1 proxy), and direct again when
              unblocked
  path MTU    first, at 1500, full-size (1408-byte) DF pings pass on both pairs below, v4 and v6.
              relayed: an iperf3 TCP stream pod(lan2a) -> pod(lan1a) (4 Mbit/s), and 4 s into it
              nat2's WAN link drops to 1400 with nat2's ICMP errors dropped (a black hole):
              lan2a (which reaches the relays over IPv6 only) finds the path MTU of the pair
              with padded probes (1296: IPv6) and routes lan1a's pod CIDRs with it, the stream
              recovers and completes (test_mtu.py's checks, with the kernel backend); a DF ping
              one byte larger gets "too big" with it, one of that size passes, lan2a and nat2
              create no fragment.
              direct: lan1a -> a pod on relay1 through the same silent 1400 hop on nat1: padded
              PINGs find 1328 over IPv4, then lan1a's IPv4 UDP to relay1 is cut and the pair
              moves to IPv6, where they find 1304-1312; each routed, "too big" one byte above, a
              4 s iperf3 stream completes, no fragment
--part failover:
  tcp         an iperf3 TCP stream pod(lan1a) -> pod(lan2a) and a ping -i 0.01 beside it; at
              ~3 s the meshd of the relay lan1a sends through then (its meshd's log says) is
              killed (SIGKILL): lan1a's meshd logs the relay silent and moves lan2a off it as
              gone (not by an election), the pair (both ways) is on the other relay, the
              largest gap between ping replies across the kill (the outage) and every run of
              0-byte 0.1 s intervals at the receiver are at most FAILOVER_BOUND (3 s, not
              scaled: see OUTAGE), data arrives after the kill, iperf3 succeeds
  idle        the idle relayed pair lan1b-lan2a leaves the dead relay too
  restart     the dead relay's kernel interface outlived its meshd with its peers; the restarted
              meshd adopts it (same ifindex, not created again) and every LAN node lists the relay
              up again
  lan kill    lan1b's meshd (one end of the direct pair lan1a-lan1b and of the relayed pair
              lan2a-lan1b) killed with SIGKILL, dead LAN_DOWN_S (2 s), started again while pods
              ping every 0.1 s: the direct pair loses 0 pings, the relayed one answers again
              within RESUME (1 s times TIME_FACTOR) of the restart, and lan1b's interface
              (ifindex), peers with their allowed-ips and routes are unchanged (issue 14 §3 with
              the kernel backend); route MTUs are shown, not compared: the restarted meshd
              keeps them and confirms them, but the paths are clean again by then, so the
              upward search after the confirmation may drop them (e2e_mtu checks the restart
              with the hop in place)
--part all (the default): both, on one mesh. All end with: every meshd still runs, nothing is
left.

Bounds are checks.py's (each with its reason) times mesh.TIME_FACTOR (3 in the QEMU guest, 1
elsewhere: see mesh.py), except the failover outage; a missed one fails. Prints figures and
`N passed, N failed`; exit 1 on a failure, 77 when it cannot run here (not root, a tool missing,
no kernel WireGuard outside the guest; in the guest, a missing module is a failure).

Usage: test_kernel_mesh.py [--build-dir DIR] [--part mesh|failover|all]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import (FAILOVER_BOUND, HANDSHAKE_BOUND, PATHS_BOUND, READY_BOUND,  # noqa: E402
                    RELAYS, WG_PORT, block_udp, check, expect, figure, log_time, peers_by_name,
                    wait_for,
                    ping_retry, pods_pinging, preflight, print_logs,
                    relays_of, report, run_and_clean)
from mesh import TIME_FACTOR, Mesh  # noqa: E402
from test_failover import (fmt_table, intervals, largest_gap, longest_empty_run,  # noqa: E402
                           ping_reply_times, relay_table)
from test_mesh import want_path, wg_endpoints  # noqa: E402
from test_mtu import (HOP_MTU, NO_ICMP_TABLE, PMTU_BOUND, POD_MTU, RECOVER_BOUND,  # noqa: E402
                      UNDERLAY, V4_CUT_TABLE, df_ping,
                      fits, frag_creates, keep_active, refused_above,
                      stream_across_cut, stream_ok, wait_pmtu)
from test_meshd_restart import RESUME_BOUND  # noqa: E402
from topology import Topology  # noqa: E402

LAN = ["lan1a", "lan1b", "lan2a"]
NODES = RELAYS + LAN
CROSS = [("lan1a", "lan2a"), ("lan2a", "lan1a"), ("lan1b", "lan2a"), ("lan2a", "lan1b")]
IN_VM = os.environ.get("MESHWIRE_VM") == "1"

# checks.py's bounds (reasons there), times TIME_FACTOR for the emulated CPU of the guest: what
# they bound is seen through polls and execs of the scenario, each of which is slow there.
READY = READY_BOUND * TIME_FACTOR
PATHS = PATHS_BOUND * TIME_FACTOR
HANDSHAKE = HANDSHAKE_BOUND * TIME_FACTOR
SWITCH_SEEN = FAILOVER_BOUND * TIME_FACTOR  # meshctl shows the pair on the other relay
# The direct path of a pair is given up after path_timeout (3.5 s) without a PONG, then relayed;
# a relayed pair probes its direct candidates every 5 s (upgrade_interval) and is direct on the
# first PONG. Both within PATHS_BOUND.
PATH_CHANGE = PATHS_BOUND * TIME_FACTOR
# The failover outage itself is measured by the data path (ping -D timestamps, the iperf3
# receiver's intervals), not through the scenario's execs, and meshd's timers run in real time in
# the guest too (0.40-0.43 s measured there): checks.py's bound unscaled, so that it keeps its
# meaning (below REKEY_TIMEOUT: the failover kept the WireGuard session).
OUTAGE = FAILOVER_BOUND
# A restarted relay: it serves after its dial-back (1-2 s) and every node lists it up on its
# first PONG (pinged at least every second): 10 s, and the slack of the loaded host.
RESTART = 15.0 * TIME_FACTOR
IPERF_SECONDS = 10
IPERF_INTERVAL = 0.1
# The stream's rate: the guest's emulated CPUs carry a few Mbit/s through a relay (meshd forwards
# in user space); more only queues and starves meshd's probing, which is not what is tested here.
IPERF_RATE = "4M"
# Path MTU: the search of an active pair (test_mtu.py's bound) runs on meshd's real-time timers,
# but its probes cross the emulated testbed. The relayed case cuts the hop MTU_CUT_AT_S into a
# stream of MTU_STREAM_S, which must outlast the recovery bound (the search, then TCP's backed-off
# retransmission): the bound is the host's times TIME_FACTOR, capped by the stream.
PMTU = PMTU_BOUND * TIME_FACTOR
MTU_STREAM_S = 40
MTU_CUT_AT_S = 4
MTU_RECOVER = min(RECOVER_BOUND * TIME_FACTOR, MTU_STREAM_S - MTU_CUT_AT_S - 3)
LAN_DOWN_S = 2.0  # lan kill: below the peers' path timeout (3.5 s), as test_meshd_restart.py (a)
# lan kill: the relayed pair lan2a -> lan1b answers again this soon after lan1b's meshd restarts
# (issue 14 §3's 1 s, test_meshd_restart.py's bound), times TIME_FACTOR: the restarted meshd's
# start (config, key, device read, proxy sockets) runs on the guest's emulated CPU.
RESUME = RESUME_BOUND * TIME_FACTOR


def full_size_pass(what, src, dst):
    """The plain 1500 path: full-size (pod MTU) don't-fragment pings src -> dst, v4 and v6, all
    answered (WireGuard's and the relay's overhead fit in the underlay)."""
    for addr in (dst.addr4, dst.addr6):
        got, out = df_ping(src, addr, POD_MTU, count=5)
        figure("kernel: 1500 path: %s %s %d-byte DF pings answered" % (
            what, "v6" if ":" in addr else "v4", POD_MTU), "%d/5" % got)
        expect(got == 5, "%s: %d-byte DF pings -> %s: %d/5\n%s" % (what, POD_MTU, addr, got,
                                                                      out))


def all_pairs(nodes):
    return [(a, b) for a in nodes for b in nodes if a != b]


def kernel_wireguard():
    """None when this kernel makes WireGuard links, else why not (a scratch link in a scratch
    network namespace: the kernel loads the module on demand)."""
    if os.path.exists("/sys/module/wireguard"):
        return None
    r = subprocess.run(["unshare", "--net", "ip", "link", "add", "mwkprobe", "type", "wireguard"],
                       capture_output=True, text=True, timeout=30)
    return None if r.returncode == 0 else (r.stderr.strip() or "exit %d" % r.returncode)


def relay_choices(m, a, b):
    """[(unix time, relay or None)]: the relays a's meshd chose to send to b through, from its
    log ("path selected" and "relay switched" lines, written when it decides)."""
    out = []
    for ln in m.log(m[a]).splitlines():
        if "peer=%s " % b not in ln + " ":
            continue
        if 'msg="relay switched"' not in ln and 'msg="path selected"' not in ln:
            continue
        path = re.search(r" path=(\S+)", ln)
        relay = re.search(r" relay=(\S+)", ln)
        out.append((log_time(ln), relay.group(1) if path and path.group(1) == "relay" and relay
                    else None))
    return out


def link_of(node):
    """node's WireGuard link as `ip -d -j link` shows it (None if it has none)."""
    links = node.ipj("-d", "link", "show")
    return next((l for l in links if l.get("ifname") == node.wg_ifname), None)


def wg_peer_count(node):
    return len(node.run(["wg", "show", node.wg_ifname, "peers"]).stdout.split())


def wg_dump(node):
    """{public key: (latest handshake unix s, rx bytes, tx bytes)} from `wg show <if> dump`."""
    out = node.run(["wg", "show", node.wg_ifname, "dump"]).stdout.splitlines()
    peers = {}
    for line in out[1:]:  # the first line is the interface
        f = line.split("\t")
        if len(f) >= 7:
            peers[f[0]] = (int(f[4]), int(f[5]), int(f[6]))
    return peers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "..", "..", "build"))
    ap.add_argument("--part", choices=("mesh", "failover", "all"), default="all")
    a = ap.parse_args()
    build = os.path.abspath(a.build_dir)
    rc = preflight(build, ("ip", "nft", "wg", "ping", "iperf3", "unshare"))
    if rc is not None:
        return rc
    why = kernel_wireguard()
    if why is not None:
        if IN_VM:  # the guest loads the module at boot: its absence is a failure
            print("FAIL: no kernel WireGuard in the QEMU guest: %s" % why)
            return 1
        print("skipped: this kernel makes no WireGuard links (%s); run it in the QEMU guest: "
              "ctest -L kernel-wg" % why)
        return 77

    t_start = time.monotonic()
    figure("time factor (bounds x)", "%g%s" % (TIME_FACTOR, " (QEMU guest)" if IN_VM else ""))
    t = Topology(relays=2, lans=["cone", "symmetric"], nodes_per_lan=1, private_dirs=(),
                 keep_tmp=bool(os.environ.get("MESHWIRE_KEEP_TMP")))
    try:
        t.add_lan_node(1)  # lan1b
        m = Mesh(topology=t, close_topology=True, build_dir=build, wg_backend="kernel")
    except BaseException:
        t.close()
        raise
    run_and_clean(m, lambda m: run(m, a.part), "close() leaves nothing")
    return report(t_start, 56)


def run(m, part):
    started = {}

    @check("meshd starts on the 5 nodes with the kernel backend (wireguard links, no wireguard-go)")
    def _():
        # lan2a reaches the relays over IPv6 only (its relayNodes list that family): the relayed
        # pairs have an IPv6 leg, the path MTU check's worst case (test_mtu.py's choice).
        cfg = m.configs["lan2a"]
        cfg["relayNodes"] = [{"nodeName": r["nodeName"],
                              "advertiseAddress": [a for a in r["advertiseAddress"] if ":" in a]}
                             for r in cfg["relayNodes"]]
        m.write_config(m["lan2a"])
        t0 = time.monotonic()
        m.start()
        # wait_ready() fails unless check_backend() passes on every node: meshctl says kernel,
        # the interface is a wireguard link, no wireguard-go runs, no UAPI socket exists.
        m.wait_ready(timeout=READY)
        started["t0"] = t0
        figure("meshd ready on all nodes", "%.2fs" % (time.monotonic() - t0))
        seen = m.backend_seen
        expect(sorted(seen) == sorted(NODES), "backend checked on %s" % sorted(seen))
        return " ".join("%s:%s/%s/wireguard-go%s" % (n, seen[n]["meshctl"], seen[n]["link"],
                                                     seen[n]["wireguard-go"] or "-")
                        for n in NODES)

    if "t0" not in started:
        return

    @check("paths: direct within LAN1 and to relays, relay across LANs")
    def _():
        want = {(a, b): want_path(a, b) for a, b in all_pairs(NODES)}
        m.wait_paths(want, timeout=PATHS)
        figure("all 20 paths settled (from start)", "%.2fs" % (time.monotonic() - started["t0"]))

    @check("wg show (netlink) lists every peer meshctl lists, on every node")
    def _():
        out = []
        for n in NODES:
            peers = peers_by_name(m, n)
            keys = set(wg_dump(m[n]))
            missing = [p for p, v in peers.items() if v["wgPublicKey"] not in keys]
            expect(len(peers) == 4 and not missing, "%s: meshctl %s, wg %d peers, missing %s" % (
                n, sorted(peers), len(keys), missing))
            out.append("%s:%d" % (n, len(keys)))
        return " ".join(out)

    if part in ("mesh", "all"):
        mesh_part(m)
    if part in ("failover", "all"):
        failover_part(m)

    with open("/proc/loadavg") as f:
        figure("load average (1/5/15 min)%s" % (" in the guest" if IN_VM else ""),
               " ".join(f.read().split()[:3]))

    @check("every meshd still runs")
    def _():
        dead = [n for n in NODES if not m.procs[n].alive()]
        expect(not dead, "exited: %s\n%s" % (dead, "\n".join(m._describe(m[n]) for n in dead)))


def mesh_part(m):
    pods = {}

    @check("pods on lan1a, lan1b, lan2a reach each other over v4 and v6 (direct and relayed)")
    def _():
        for n in LAN:
            pods[n] = m.add_pod(m[n], "p")
        rtts = {"direct": [], "relay": []}
        errors = []
        for a, b in all_pairs(LAN):
            for addr in (pods[b].addr4, pods[b].addr6):
                try:
                    rtts[want_path(a, b)].append(ping_retry(pods[a], addr, within=HANDSHAKE))
                except AssertionError as e:
                    errors.append(str(e))
        expect(not errors, "%d of 12 pod pings failed:\n%s" % (len(errors), "\n".join(errors)))
        for kind, v in rtts.items():
            v = sorted(v)
            figure("pod ping avg RTT, %s (min/median/max of %d)" % (kind, len(v)),
                   "%.3f / %.3f / %.3f ms" % (v[0], v[len(v) // 2], v[-1]))
        return " ".join("%s=%s,%s" % (n, p.addr4, p.addr6) for n, p in pods.items())

    @check("kernel endpoints equal meshctl's (direct: LAN addr, relayed: 127.0.0.1 proxy)")
    def _():
        notes = []
        for n in LAN:
            for _attempt in range(3):  # meshctl and wg are read one after the other
                peers = peers_by_name(m, n)
                eps = wg_endpoints(m[n])
                problems = []
                for name, p in peers.items():
                    ep = eps.get(p["wgPublicKey"], "missing")
                    if ep != p["endpoint"]:
                        problems.append("%s->%s: wg %s, meshctl %s" % (n, name, ep,
                                                                       p["endpoint"]))
                    elif p["path"] == "direct":
                        peer = m[name]
                        if ep not in ("%s:%d" % (peer.addr4, WG_PORT),
                                      "[%s]:%d" % (peer.addr6, WG_PORT)):
                            problems.append("%s->%s direct: endpoint %s" % (n, name, ep))
                    elif not re.fullmatch(r"127\.0\.0\.1:\d+", ep or ""):
                        problems.append("%s->%s %s: endpoint %s" % (n, name, p["path"], ep))
                if not problems:
                    break
                time.sleep(0.5 * TIME_FACTOR)
            expect(not problems, "; ".join(problems) + "\nwg: %s" % eps)
            notes.append("%s:%s" % (n, ",".join(sorted(
                p["endpoint"] for p in peers.values() if p["path"] == "relay"))))
        return " ".join(notes)

    @check("relayed kernel peers have a handshake and traffic both ways")
    def _():
        out = []
        for a, b in CROSS:
            key = peers_by_name(m, a)[b]["wgPublicKey"]
            hs, rx, tx = wg_dump(m[a]).get(key, (0, 0, 0))
            expect(hs > 0 and rx > 0 and tx > 0, "%s->%s: handshake %d rx %d tx %d" % (
                a, b, hs, rx, tx))
            out.append("%s>%s rx %d tx %d" % (a, b, rx, tx))
        return "; ".join(out)

    @check("meshctl ping: lan1a->lan2a relay, lan1a->lan1b direct")
    def _():
        r = m.meshctl(m["lan1a"], "ping", "lan2a")
        expect(r["path"] == "relay" and r["relay"] in RELAYS and r["received"] >= 1, r)
        d = m.meshctl(m["lan1a"], "ping", "lan1b")
        expect(d["path"] == "direct" and d["relay"] is None and d["received"] >= 1, d)
        figure("meshctl ping rtt lan1a->lan2a (relay %s)" % r["relay"],
               " ".join("%.3f" % x for x in r["rttMs"]) + " ms")
        figure("meshctl ping rtt lan1a->lan1b (direct)",
               " ".join("%.3f" % x for x in d["rttMs"]) + " ms")

    @check("a blocked direct LAN path under pod traffic turns relay (kernel endpoint: a proxy), "
           "then direct again")
    def _():
        expect("lan1a" in pods and "lan1b" in pods, "pods missing")
        a, b = m["lan1a"], m["lan1b"]
        # The pods ping each other every 0.5 s throughout: only a pair with traffic is probed
        # (issue 18); an idle pair's path holds until traffic tests it.
        with pods_pinging(pods["lan1a"], pods["lan1b"], HANDSHAKE) as resumed:
            t0 = time.monotonic()
            with block_udp(b, a):
                m.wait_paths({("lan1a", "lan1b"): "relay", ("lan1b", "lan1a"): "relay"},
                             timeout=PATH_CHANGE)
                t_relay = time.monotonic() - t0
                figure("direct -> relay after blocking lan1a<->lan1b (pods pinging)",
                       "%.2fs" % t_relay)
                pa = peers_by_name(m, "lan1a")["lan1b"]
                ep = wg_endpoints(a).get(pa["wgPublicKey"])
                expect(re.fullmatch(r"127\.0\.0\.1:\d+", ep or ""), "lan1a's kernel endpoint "
                       "for lan1b is %s while meshctl says relay %s" % (ep, pa))
                figure("pods relayed: pings resumed after", "%.2fs" % resumed())
            t0 = time.monotonic()
            m.wait_paths({("lan1a", "lan1b"): "direct", ("lan1b", "lan1a"): "direct"},
                         timeout=PATH_CHANGE)
            t_direct = time.monotonic() - t0
            figure("relay -> direct after unblocking (pods pinging)", "%.2fs" % t_direct)
            figure("pods direct again: pings resumed after", "%.2fs" % resumed())
        return "relay after %.1fs (via %s), direct again after %.1fs" % (
            t_relay, pa["relay"], t_direct)

    @check("path MTU (kernel backend), relayed: a 1400 hop without ICMP on lan2a's uplink "
           "under a TCP stream is found by probes and routed, TCP recovers, larger packets are "
           "refused at the source; no fragments")
    def _():
        pb, pa = pods["lan2a"], pods["lan1a"]
        nat2 = m.t["nat2"]
        pa.netns.popen(["iperf3", "-s"], name="iperf3-server-mtu")
        before = {n: frag_creates(m.t[n]) for n in ("lan2a", "nat2")}
        full_size_pass("relayed lan2a->lan1a", pb, pa)
        nat2.nft(NO_ICMP_TABLE)
        try:
            # lan2a reaches the relays over IPv6.
            hi = fits(HOP_MTU, v6=True)
            lo = hi - 8
            n = stream_across_cut(m, "kernel: relayed lan2a->lan1a", pb, pa, "lan2a", "lan1a",
                                  lambda: nat2.ip("link", "set", "wan0", "mtu", HOP_MTU),
                                  (lo, hi), MTU_STREAM_S, MTU_CUT_AT_S, PMTU, MTU_RECOVER,
                                  rate=IPERF_RATE)
            refused_above(pb, pa, n)
            after = {n_: frag_creates(m.t[n_]) for n_ in ("lan2a", "nat2")}
            expect(after == before, "fragments created: %s -> %s" % (before, after))
        finally:
            nat2.ip("link", "set", "wan0", "mtu", UNDERLAY)
            nat2.nft("delete table inet mwt_noicmp")
        return "path MTU %d" % n

    @check("path MTU (kernel backend), direct: lan1a -> relay1 through a 1400 hop without ICMP "
           "on nat1's uplink: found by padded PINGs, routed, refused at the source, a TCP stream "
           "completes; no fragments")
    def _():
        pa = pods["lan1a"]
        pr = pods["relay1"] = m.add_pod(m["relay1"], "r")
        pr.netns.popen(["iperf3", "-s"], name="iperf3-server-r")
        ping_retry(pa, pr.addr4, within=HANDSHAKE)
        nat1 = m.t["nat1"]
        before = {n: frag_creates(m.t[n]) for n in ("lan1a", "nat1", "relay1")}
        full_size_pass("direct lan1a->relay1", pa, pr)
        nat1.nft(NO_ICMP_TABLE)
        nat1.ip("link", "set", "wan0", "mtu", HOP_MTU)
        found = []
        try:
            # meshd picks the family of the endpoint (IPv4 here); then lan1a's IPv4 UDP to
            # relay1 is cut: the pair moves to relay1's IPv6 address, where the kept MTU fails
            # its confirmation and the search finds IPv6's.
            for cut_v4 in (False, True):
                with keep_active(pa, pr.addr4):
                    if cut_v4:
                        nat1.nft(V4_CUT_TABLE % (m["lan1a"].addr4, m["relay1"].addr4))
                        wait_for("lan1a's endpoint for relay1 on IPv6",
                                 lambda: (peers_by_name(m, "lan1a")["relay1"].get("endpoint")
                                          or "").startswith("["), PATH_CHANGE)
                    ep = peers_by_name(m, "lan1a")["relay1"].get("endpoint") or ""
                    expect(ep.startswith("[") == cut_v4, "lan1a: endpoint %s for relay1" % ep)
                    want = fits(HOP_MTU, v6=cut_v4, relayed=False)
                    n, took = wait_pmtu(m, "lan1a", "relay1", pr, want - 8, want, PMTU)
                    figure("kernel: direct lan1a->relay1 (%s): path MTU, applied after" % ep,
                           "%d, %.1fs" % (n, took))
                    expect(m.paths(m["lan1a"]).get("relay1") == "direct",
                           "lan1a: the pair left its direct path")
                    refused_above(pa, pr, n)
                    stream_ok("kernel: direct lan1a->relay1 (%s)" % ep, pa, pr, rate=IPERF_RATE)
                    found.append("%s: %d after %.1fs" % (ep, n, took))
            after = {n_: frag_creates(m.t[n_]) for n_ in ("lan1a", "nat1", "relay1")}
            expect(after == before, "fragments created: %s -> %s" % (before, after))
        finally:
            nat1.ip("link", "set", "wan0", "mtu", UNDERLAY)
            nat1.nft("delete table inet mwt_noicmp")
            nat1.run(["nft", "delete", "table", "inet", "mwt_v4cut"], check=False)
        return "; ".join(found)


def failover_part(m):
    pods = {}
    state = {}

    @check("pods on lan1a and lan2a reach each other (relayed)")
    def _():
        pods["a"] = m.add_pod(m["lan1a"], "src")
        pods["b"] = m.add_pod(m["lan2a"], "dst")
        ping_retry(pods["a"], pods["b"].addr4, within=HANDSHAKE)
        ping_retry(pods["b"], pods["a"].addr4, within=HANDSHAKE)
        return "%s -> %s" % (pods["a"].addr4, pods["b"].addr4)

    @check("TCP stream and ping -i 0.01 survive killing the pair's relay (outage <= bound)")
    def _():
        expect(pods, "no pods")
        src, dst = pods["a"], pods["b"]
        ifindex = {}
        for r in RELAYS:
            link = link_of(m[r])
            expect(link and link["linkinfo"]["info_kind"] == "wireguard", (r, link))
            ifindex[r] = link["ifindex"]
        dst.netns.popen(["iperf3", "-s", "-1", "-i", str(IPERF_INTERVAL), "-J"],
                        name="iperf3-server")
        time.sleep(0.7 * TIME_FACTOR)  # iperf3 -s needs a moment to listen
        t_launch = time.time()
        cli = src.netns.popen(["iperf3", "-c", dst.addr4, "-t", str(IPERF_SECONDS),
                               "-i", str(IPERF_INTERVAL), "-b", IPERF_RATE, "-J",
                               "--get-server-output"], name="iperf3-client")
        t_ping = time.time()
        pinger = src.netns.popen(["ping", "-D", "-n", "-i", "0.01", "-w", str(IPERF_SECONDS + 1),
                                  dst.addr4], name="ping-kill")
        time.sleep(3)
        # The relay lan1a sends through at this moment, from its meshd's log (written when it
        # decides; a meshctl call would take long enough in the guest for an election to move
        # the pair in between: elections flip every few seconds there, see the module doc).
        pair = relay_table(m, [("lan2a", "lan1a")])
        # Kill once lan1a's choice has held for 2 s: the traffic just started loads the relay in
        # use, and the guest's elections may move the pair then; a move between reading the
        # choice and the kill would make the kill miss the relay in use (seen once, under load).
        steady_by = time.monotonic() + 3  # the stream runs IPERF_SECONDS; keep 4 s after the kill
        while True:
            choices = relay_choices(m, "lan1a", "lan2a")
            last = choices[-1][0] if choices and choices[-1][0] else 0
            if time.time() - last >= 2.0 or time.monotonic() > steady_by:
                break
            time.sleep(0.1)
        relay = (choices or [(None, None)])[-1][1]
        expect(relay in RELAYS, "lan1a>lan2a is not relayed: %s" % choices[-5:])
        node = m[relay]
        t_kill = time.time()
        m.kill(node)
        state["killed"] = relay
        state["ifindex"] = ifindex[relay]
        t_mono = time.monotonic()
        off = {}  # direction -> seconds after the kill when meshctl showed another relay
        while time.monotonic() - t_mono < SWITCH_SEEN and len(off) < len(CROSS):
            for k, r in relay_table(m, CROSS).items():
                if r in RELAYS and r != relay and k not in off:
                    off[k] = time.time() - t_kill
            time.sleep(0.05)
        state["off"] = off
        rc = cli.wait(30 * TIME_FACTOR)
        pinger.wait(15 * TIME_FACTOR)
        out = cli.log()
        expect(rc == 0, "iperf3 exit %s:\n%s" % (rc, out[-3000:]))
        doc = json.loads(out)
        expect("error" not in doc, doc.get("error"))
        kill_at = t_kill - t_launch  # the receiver's clock starts after t_launch
        srv = doc.get("server_output_json") or {}
        rx = intervals(srv)
        rx_run, rx_run_at = longest_empty_run(rx)
        after_kill = sum(b for st, _e, b in rx if st >= kill_at)
        total = doc["end"]["sum_received"]["bytes"]
        replies = ping_reply_times(pinger.log())
        gap, gap_at = largest_gap(replies, start=t_kill, end=t_ping + IPERF_SECONDS + 0.5)
        new = relay_table(m, [("lan1a", "lan2a")])[("lan1a", "lan2a")]
        # lan1a's meshd moved lan2a off the relay because it died ("was gone"), i.e. the kill hit
        # the relay in use, and not by an election that happened to come first.
        log = m.log(m["lan1a"]).splitlines()
        gone = [log_time(ln) for ln in log if 'msg="relay switched"' in ln and
                "peer=lan2a " in ln and "previous_relay=%s " % relay in ln and "was gone" in ln]
        gone = [t for t in gone if t is not None and t >= t_kill - 0.05]
        silent = [log_time(ln) for ln in log if "relay stopped answering" in ln and
                  "relay=%s " % relay in ln + " "]
        silent = [t for t in silent if t is not None and t >= t_kill - 0.05]
        figure("relay killed / new relay (lan1a>lan2a; lan2a>lan1a used %s)" % pair[
            ("lan2a", "lan1a")], "%s / %s; lan1a's meshd: relay silent %s, lan2a moved %s" % (
                relay, new, "%.2fs after the kill" % (silent[0] - t_kill) if silent else "never",
                "%.2fs after the kill" % (gone[0] - t_kill) if gone else "never"))
        figure("failover outage: largest gap between ping -i 0.01 replies after the kill",
               "%.3fs (starting %.2fs after the kill; %d replies)" % (
                   gap, (gap_at or t_kill) - t_kill, len(replies)))
        figure("TCP outage: longest run of 0-byte %.1f s intervals (receiver)" % IPERF_INTERVAL,
               "%.1fs" % rx_run)
        figure("TCP transfer", "%.1f MB received in %.1fs (%.1f MB after the kill), %d "
               "retransmits" % (total / 1e6, doc["end"]["sum_received"]["seconds"],
                                after_kill / 1e6, doc["end"]["sum_sent"].get("retransmits", -1)))
        problems = []
        if not (new in RELAYS and new != relay):
            problems.append("lan1a>lan2a still/now on %s" % new)
        if not silent:
            problems.append("lan1a's meshd never logged %s as silent after the kill" % relay)
        if not gone:
            raced = [c for c in relay_choices(m, "lan1a", "lan2a") if c[0] and c[0] < t_kill]
            problems.append("lan1a's meshd never moved lan2a off %s as gone (its choices up to "
                            "the kill: %s; a change right before it would be a race of this "
                            "test)" % (relay, raced[-3:]))
        for k in [("lan1a", "lan2a"), ("lan2a", "lan1a")]:
            if k not in off:
                problems.append("%s>%s not off %s within %.1fs" % (k[0], k[1], relay,
                                                                   SWITCH_SEEN))
        if len(rx) < int(IPERF_SECONDS / IPERF_INTERVAL * 0.9):
            problems.append("%d receiver intervals (server output: %s)" % (len(rx),
                                                                           str(srv)[:300]))
        if rx_run > OUTAGE:
            problems.append("TCP: no data at the receiver for %.1fs (from %.1fs into the stream, "
                            "the kill at %.1fs), bound %.1fs" % (rx_run, rx_run_at, kill_at,
                                                                 OUTAGE))
        if after_kill <= 0:
            problems.append("TCP: no bytes received after the kill")
        if not replies:
            problems.append("ping -i 0.01: no replies at all")
        elif gap > OUTAGE:
            problems.append("ping -i 0.01: no reply for %.2fs from %.2fs after the kill, bound "
                            "%.1fs" % (gap, (gap_at or t_kill) - t_kill, OUTAGE))
        if problems:
            raise AssertionError("; ".join(problems) + "\nrelay table: %s" % fmt_table(
                relay_table(m, CROSS)))
        return "%s -> %s, outage %.2fs (ping), %.1fs (TCP)" % (relay, new, gap, rx_run)

    @check("every relayed direction, also the idle lan1b-lan2a, leaves the dead relay")
    def _():
        killed = state.get("killed")
        expect(killed, "no relay was killed")
        off = state.get("off") or {}
        figure("directions off the killed %s (s after the kill, as meshctl polls saw it)" % killed,
               " ".join("%s>%s:%.2f" % (a, b, t) for (a, b), t in sorted(off.items())))
        expect(len(off) == len(CROSS), "not off %s within %.1fs: %s (now: %s)" % (
            killed, SWITCH_SEEN, [k for k in CROSS if k not in off],
            fmt_table(relay_table(m, CROSS))))

    @check("restart: the relay's kernel interface outlived meshd; the new meshd adopts it")
    def _():
        killed = state.get("killed")
        expect(killed, "no relay was killed")
        node = m[killed]
        link = link_of(node)
        # Killed with SIGKILL, meshd removed nothing: the kernel device, its peers and its keys
        # stay (a restarted meshd must not interrupt a working data path).
        expect(link and link["ifindex"] == state["ifindex"], (link, state["ifindex"]))
        npeers = wg_peer_count(node)
        expect(npeers > 0, "the dead meshd's interface has no peers")
        t0 = time.monotonic()
        m.start(node)
        m.wait_ready(timeout=READY, nodes=[node])
        ready = time.monotonic() - t0
        link2 = link_of(node)
        expect(link2 and link2["ifindex"] == state["ifindex"], "ifindex %s, was %s" % (
            link2 and link2["ifindex"], state["ifindex"]))
        expect("created kernel wireguard interface" not in m.log(node),
               "the restarted meshd created the interface again")
        up = {}
        while time.monotonic() - t0 < RESTART and len(up) < len(LAN):
            for n in LAN:
                if n not in up and relays_of(m, n)[killed]["state"] == "up":
                    up[n] = time.monotonic() - t0
            time.sleep(0.2 * TIME_FACTOR)
        figure("restarted %s: ready / up on every LAN node after" % killed, "%.2fs / %s" % (
            ready, " ".join("%s:%.2fs" % kv for kv in sorted(up.items()))))
        expect(len(up) == len(LAN), "not up within %.0fs on %s" % (
            RESTART, [n for n in LAN if n not in up]))
        ping_retry(pods["a"], pods["b"].addr4, within=HANDSHAKE)
        return "ifindex %d kept with %d peers; up everywhere after %.1fs" % (
            state["ifindex"], npeers, max(up.values()))

    @check("lan kill: lan1b's meshd killed %.0f s: the direct pair loses 0 pings, the relayed "
           "pair answers <= %.1f s after the restart; interface, peers and routes unchanged" % (
               LAN_DOWN_S, RESUME))
    def _():
        node = m["lan1b"]
        src, dst = m.add_pod(m["lan1a"], "dsrc"), m.add_pod(node, "ddst")
        rsrc = m.add_pod(m["lan2a"], "rsrc")  # lan2a-lan1b is relayed
        ping_retry(src, dst.addr4, within=HANDSHAKE)
        ping_retry(rsrc, dst.addr4, within=HANDSHAKE)

        def data_path():
            """The interface, peers and routes, and apart from them the routes' MTUs."""
            link = link_of(node)
            allowed = node.run(["wg", "show", node.wg_ifname, "allowed-ips"]).stdout
            routes, mtus = [], {}
            for fam in ("-4", "-6"):
                lines = []
                for ln in node.run(["ip", fam, "route", "show", "dev",
                                    node.wg_ifname]).stdout.split("\n"):
                    mo = re.search(r" mtu (\d+)", ln)
                    if mo:
                        mtus[ln.split()[0]] = int(mo.group(1))
                    lines.append(re.sub(r" mtu \d+", "", ln))
                routes.append(sorted(lines))
            return {"ifindex": link and link["ifindex"], "allowed-ips": sorted(allowed.split("\n")),
                    "routes": routes}, mtus

        before, mtus_before = data_path()
        count = int((1.0 + LAN_DOWN_S + 3.0) / 0.1)
        pinger = src.netns.popen(["ping", "-4", "-n", "-c", str(count), "-i", "0.1", "-W", "1",
                                  dst.addr4], name="ping-lan-kill")
        # The relayed pair is down while lan1b's meshd is (its relay proxy sockets go with it):
        # pings until RESUME + 3 s after the restart, timestamped.
        rcount = int((1.0 + LAN_DOWN_S + RESUME + 3.0) / 0.1)
        relayed = rsrc.netns.popen(["ping", "-4", "-n", "-D", "-c", str(rcount), "-i", "0.1",
                                    "-W", "1", dst.addr4], name="ping-lan-kill-relayed")
        time.sleep(1.0)
        m.kill(node)
        time.sleep(LAN_DOWN_S)
        t_restart = time.time()
        t0 = time.monotonic()
        m.start(node)
        m.wait_ready(timeout=READY, nodes=[node])
        ready = time.monotonic() - t0
        # In a loaded guest meshd may get ready after the first ping run ended: pings go on for
        # 3 s after it is ready too (its first apply comes then).
        after_ready = src.netns.popen(["ping", "-4", "-n", "-c", "30", "-i", "0.1", "-W", "1",
                                       dst.addr4], name="ping-lan-kill-ready")
        sent = got = 0
        for p in (pinger, after_ready):
            p.wait(count * 0.1 + 30 * TIME_FACTOR)
            mo = re.search(r"(\d+) packets transmitted, (\d+) received", p.log())
            expect(mo, "no ping summary:\n%s" % p.log()[-500:])
            sent, got = sent + int(mo.group(1)), got + int(mo.group(2))
        relayed.wait(rcount * 0.1 + 30 * TIME_FACTOR)
        # Back: the first reply after the restart (none arrive while lan1b's meshd is dead; a
        # later stray loss, e.g. an election in the guest, does not move it).
        rtimes = ping_reply_times(relayed.log())
        back = min((t for t in rtimes if t >= t_restart), default=None)
        back = None if back is None else back - t_restart
        after, mtus_after = data_path()
        # A route's MTU (there when an earlier check left one, e.g. lan2a's pod CIDRs at 1320
        # after the relayed 1400 hop) is kept by the restarted meshd and confirmed; the hop is
        # gone by now, so the upward search that follows may drop it. Shown, not compared.
        figure("lan1b's meshd killed: route MTUs before / after the restart",
               "%s / %s" % (mtus_before or "none", mtus_after or "none"))
        if back is None or back > RESUME:
            print_logs(m, ["lan1b", "lan2a"] + RELAYS, t_restart - 0.5,
                       t_restart + (back if back is not None else RESUME + 3.0) + 0.5,
                       about=["lan1b", "lan2a"] + RELAYS)
        figure("lan1b's meshd killed %.0f s: ready after / pings lan1a->lan1b sent, lost" %
               LAN_DOWN_S, "%.2fs / %d, %d" % (ready, sent, sent - got))
        figure("lan1b's meshd killed %.0f s: relayed lan2a->lan1b answers after the restart / "
               "pings sent, lost" % LAN_DOWN_S, "%s / %d, %d" % (
                   "never" if back is None else "%.2fs" % back, rcount, rcount - len(rtimes)))
        expect(sent == count + 30 and got == sent, "lost %d of %d pings" % (sent - got, sent))
        expect(after == before, "interface/peers/routes changed:\n%s\n->\n%s" % (before, after))
        expect("created kernel wireguard interface" not in m.log(node),
               "the restarted meshd created the interface again")
        expect(back is not None and back <= RESUME, "relayed pair answered %s after the restart "
               "(bound %.1fs)" % ("never" if back is None else "%.2fs" % back, RESUME))
        return "0 of %d lost direct; relayed back %.2fs after the restart; ifindex %s kept" % (
            sent, back, before["ifindex"])


if __name__ == "__main__":
    sys.exit(main())
