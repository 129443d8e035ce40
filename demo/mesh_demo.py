#!/usr/bin/env python3
"""meshwire multi-node demo: meshd on six nodes of the network-namespace testbed (two public relays,
a LAN behind a cone NAT, a LAN behind a symmetric NAT), pods created through the real CNI plugin,
pod-to-pod traffic direct within a LAN and relayed across LANs, and a relay failover.

Run as root through demo/demo.sh. Everything lives in namespaces of the testbed and is removed on
exit, also on failure or Ctrl-C. Exits non-zero when a step fails.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "test", "e2e", "mesh"))

from mesh import CLUSTER_CIDRS, Mesh  # noqa: E402

T0 = time.monotonic()
BOLD = "\033[1m" if sys.stdout.isatty() else ""
RESET = "\033[0m" if sys.stdout.isatty() else ""


def header(text):
    print("\n%s== %s%s   [t=%.1fs]" % (BOLD, text, RESET, time.monotonic() - T0), flush=True)


def note(text):
    for line in text.strip("\n").splitlines():
        print("   " + line)
    sys.stdout.flush()


def show(where, cmd, out):
    """Prints `$ cmd` as it is run (prefixed with the node it runs in) and its output."""
    print("[%s] $ %s" % (where, " ".join(cmd)))
    text = out.rstrip("\n")
    if text:
        print(text)
    sys.stdout.flush()


def meshctl(m, node, *args):
    """Human output of meshctl in `node`, shown like a shell session."""
    out = m.meshctl(node, *args, json=False)
    show(node.name, ["meshctl"] + list(args), out)
    return out


def pod_ping(pod, addr, count=3):
    fam = "-6" if ":" in addr else "-4"
    cmd = ["ping", fam, "-n", "-c", str(count), "-i", "0.2", "-W", "2", addr]
    r = pod.run(cmd, check=False, timeout=30)
    show("pod %s@%s" % (pod.name, pod.node.name), cmd, r.stdout + r.stderr)
    if r.returncode != 0:
        dst = [q.node.name for q in pod.mesh.pods if addr in (q.addr4, q.addr6)]
        diagnose(pod.mesh, [pod.node.name] + dst)
        raise RuntimeError("ping %s from %s failed (exit %d)" % (addr, pod.name, r.returncode))
    return r


def diagnose(m, names):
    """On a failure: the peer tables, `wg show` and the log tails of the nodes involved."""
    for name in names:
        n = m[name]
        print("--- diagnostics for %s" % name, file=sys.stderr)
        try:
            print(m.meshctl(n, "peers", json=False), file=sys.stderr)
            print(n.run(["wg", "show"], check=False).stdout, file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - diagnostics only
            print("   (%s)" % e, file=sys.stderr)
        print("\n".join(m.log(n).splitlines()[-60:]), file=sys.stderr)


def peer_doc(m, node, peer):
    for p in m.meshctl(node, "peers").get("peers", []):
        if p.get("name") == peer:
            return p
    return None


def wait_until(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: needs root (network namespaces)", file=sys.stderr)
        return 1
    for b in ("meshd/meshd", "meshctl/meshctl", "cni-plugin/meshwire"):
        if not os.access(os.path.join(args.build_dir, b), os.X_OK):
            print("demo: %s/%s not built; run install/build.sh" % (args.build_dir, b),
                  file=sys.stderr)
            return 1

    header("The testbed: a small Internet in network namespaces")
    keep = bool(os.environ.get("MESH_DEMO_KEEP"))
    with Mesh(build_dir=args.build_dir, topology_args={"keep_tmp": keep}) as m:
        t = m.t
        note(t.describe())
        print()
        print("   %-8s %-8s %-20s %s" % ("node", "role", "address (v4, v6)", "pod CIDRs"))
        for n in m.nodes:
            role = "relay" if n.kind == "public" else "LAN %s" % t.router_of(n).name
            print("   %-8s %-8s %-20s %s" % (n.name, role, "%s %s" % (n.addr4, n.addr6),
                                            " ".join(m.configs[n.name]["podCIDRs"])))
        note("""
LAN1 (lan1a, lan1b) sits behind nat1, a cone NAT (masquerade: one public port per socket).
LAN2 (lan2a, lan2b) sits behind nat2, a symmetric NAT (masquerade random: a new public port per
destination). Both NATs drop unsolicited inbound packets. relay1 and relay2 have public addresses.
Every meshd.yaml sets clusterCIDRs %s: another node's pod CIDR is routed only inside
it, as a /24 or /64 block no one else was seen claiming first.""" % " ".join(CLUSTER_CIDRS))

        header("Starting meshd on %d nodes" % len(m.nodes))
        for n in m.nodes:
            print("[%s] $ meshd --config %s &" % (n.name, m.config_path(n)))
        t_start = time.monotonic()
        m.start()
        m.wait_ready(timeout=20)
        t_ready = time.monotonic() - t_start
        print("   meshctl answers on every node after %.2f s" % t_ready)
        lan = ["lan1a", "lan1b", "lan2a", "lan2b"]
        expected = {}
        for a in lan:
            for b in lan:
                if a != b:
                    expected[(a, b)] = "direct" if a[:4] == b[:4] else "relay"
            for r in ("relay1", "relay2"):
                expected[(a, r)] = "direct"
        m.wait_paths(expected, timeout=30)
        t_settled = time.monotonic() - t_start
        print("   every pair has its expected path (direct within a LAN and to the relays, relayed "
              "across LANs) %.2f s after start" % t_settled)
        # meshd selects a path from its own probes; WireGuard's first handshake on it can still
        # be pending (an initiation that reaches a peer which has not configured us yet is
        # dropped, and WireGuard retries only after REKEY_TIMEOUT = 5 s). Wait for it too.
        pending = {(a, b) for a in lan for b in lan if a != b}

        def handshaken():
            for a in sorted({a for a, _ in pending}):
                for p in m.meshctl(m[a], "peers").get("peers", []):
                    if (a, p.get("name")) in pending and p.get("lastHandshake"):
                        pending.discard((a, p["name"]))
            return not pending

        if not wait_until(handshaken, 30, step=0.2):
            diagnose(m, sorted({x for pair in pending for x in pair}))
            raise RuntimeError("no WireGuard handshake within 30 s for %s" % sorted(pending))
        t_hs = time.monotonic() - t_start
        print("   WireGuard has a session (lastHandshake set) for every pair of LAN nodes %.2f s "
              "after start" % t_hs)

        header("Pods created through the CNI plugin (CNI_COMMAND=ADD, as a container runtime does)")
        pods = {}
        for name, node in (("web", "lan1a"), ("cache", "lan1b"), ("db", "lan2a"),
                           ("api", "lan2b")):
            pods[node] = p = m.add_pod(m[node], name)
            print("   pod %-6s on %-6s  %-14s %s" % (name, node, p.addr4, p.addr6))
        web, cache, db, api = (pods[n] for n in lan)

        header("Pods ping each other: across LANs (relayed) and within a LAN (direct)")
        note("web@lan1a -> db@lan2a, IPv4 and IPv6 (LAN1 -> LAN2: through a relay)")
        pod_ping(web, db.addr4)
        pod_ping(web, db.addr6)
        note("api@lan2b -> cache@lan1b, IPv4 and IPv6 (LAN2 -> LAN1: through a relay)")
        pod_ping(api, cache.addr4)
        pod_ping(api, cache.addr6)
        note("web@lan1a -> cache@lan1b and db@lan2a -> api@lan2b (within a LAN: direct)")
        pod_ping(web, cache.addr4)
        pod_ping(web, cache.addr6)
        pod_ping(db, api.addr4)

        header("What lan1a's meshd sees")
        meshctl(m, m["lan1a"], "status")
        print()
        meshctl(m, m["lan1a"], "peers")
        print()
        meshctl(m, m["lan1a"], "relays")
        print()
        r = m["lan1a"].run(["wg", "show"], check=False)
        show("lan1a", ["wg", "show"], r.stdout + r.stderr)
        note("""
Why these paths:
 * lan1a <-> lan1b and lan2a <-> lan2b: same LAN, each reaches the other's LAN address -> direct.
 * LAN nodes <-> relays: the relays have public addresses and the NAT lets the answers back in
   -> direct.
 * LAN1 <-> LAN2: neither side is reachable from outside. Hole punching needs a predictable
   public port, but LAN2's symmetric NAT picks a new random port for every destination, so
   cone <-> symmetric punching fails -> WireGuard goes through a relay session (relayed).
   The peer's endpoint in `wg show` is then a loopback address of meshd's relay proxy.""")

        header("Relay failover: the relay carrying web@lan1a <-> db@lan2a crashes")
        pd = peer_doc(m, m["lan1a"], "lan2a")
        show("lan1a", ["meshctl", "peers", "--json", "|", "<lan2a>"],
             json.dumps({k: pd.get(k) for k in ("name", "path", "relay", "sessionId")}))
        if not pd or pd.get("path") != "relay" or not pd.get("relay"):
            raise RuntimeError("lan1a -> lan2a is not relayed: %r" % pd)
        old = pd["relay"]
        other = [r.name for r in m.relays if r.name != old][0]
        note("lan1a reaches lan2a through %s; the other relay is %s." % (old, other))
        ping_cmd = ["ping", "-4", "-n", "-D", "-i", "0.05", "-W", "1", db.addr4]
        print("[pod web@lan1a] $ %s &   (steady ping, 20 per second)" % " ".join(ping_cmd))
        ping = subprocess.Popen(["ip", "netns", "exec", web.netns.ns] + ping_cmd,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(1.5)
            print("[host] $ kill -9 <meshd of %s>   (m.kill: a crash)" % old)
            t_kill = time.time()
            m.kill(m[old])

            def switched():
                d = peer_doc(m, m["lan1a"], "lan2a")
                e = peer_doc(m, m["lan2a"], "lan1a")
                if (d and e and d.get("path") == "relay" and d.get("relay") == other and
                        e.get("path") == "relay" and e.get("relay") == other):
                    return d
                return None

            new = wait_until(switched, 30, step=0.2)
            t_switch = time.time() - t_kill
            if not new:
                raise RuntimeError("lan1a <-> lan2a did not move to %s within 30 s: %r" % (
                    other, peer_doc(m, m["lan1a"], "lan2a")))
            print("   both sides show path relay via %s %.2f s after the kill" % (other, t_switch))
            time.sleep(2.0)  # replies resume over the new path
        finally:
            ping.send_signal(signal.SIGINT)
            try:
                out, _ = ping.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                ping.kill()
                out, _ = ping.communicate()
        replies = [(float(mt.group(1)), int(mt.group(2)))
                   for mt in map(REPLY.match, out.splitlines()) if mt]
        summary = [ln for ln in out.splitlines() if "transmitted" in ln]
        after_kill = [(ts, seq) for ts, seq in replies if ts >= t_kill - 0.2]
        if len(after_kill) < 2:
            raise RuntimeError("too few ping replies around the kill:\n" + out[-2000:])
        gap, before, after = max(((b[0] - a[0], a, b) for a, b in zip(after_kill, after_kill[1:])),
                                 key=lambda x: x[0])
        print("   ping: %s" % (summary[0] if summary else "%d replies" % len(replies)))
        print("   last reply before the gap: icmp_seq=%d at %.3f (%.2f s after the kill)" % (
            before[1], before[0], before[0] - t_kill))
        print("   first reply after the gap: icmp_seq=%d at %.3f (%.2f s after the kill)" % (
            after[1], after[0], after[0] - t_kill))
        print("   %sMEASURED OUTAGE: %.2f s%s (%d requests unanswered): relays in use are probed "
              "every 100 ms and given up after 400 ms of silence; the standby session at the "
              "other relay is already open, so the switch is one table update" % (
                  BOLD, gap, RESET, after[1] - before[1] - 1))
        if after[0] < t_kill:
            raise RuntimeError("no ping reply after the kill")
        pod_ping(web, db.addr4, count=2)
        pod_ping(web, db.addr6, count=2)
        meshctl(m, m["lan1a"], "peers")
        print()
        meshctl(m, m["lan1a"], "relays")

        header("Cleanup")
        note("CNI DEL for every pod, meshd stopped on every node, namespaces removed ...")
    left = m.leftovers()
    if left:
        print("   leftovers: %r" % left)
        return 1
    print("   removed everything (pods, meshd processes, namespaces, WireGuard sockets, temp dirs)")
    header("Demo finished: total %.1f s" % (time.monotonic() - T0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
