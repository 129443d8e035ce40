#!/usr/bin/env python3
"""Self-test of the mesh harness (root; Python 3 stdlib) — what works without a running meshd:

the default topology comes up; every mesh node gets its pod CIDRs, a 0600 PSK and a meshd.yaml that
`meshd --check-config` accepts (also with per-node overrides: another PSK, extra config); a bad
override is refused by meshd; pods are created through the real CNI plugin in two nodes (pod CIDRs
from the net conf, and from the node.json that meshd writes at startup) and reach their node over
v4 and v6; CNI DEL leaves no link or IPAM allocation; wait_ready fails with a message that says
why; close() leaves nothing, also when the `with` block raises. Prints `N passed, N failed`; exit 1
on a failure, 77 when it cannot run here.

Usage: test_mesh_harness.py [--build-dir DIR]
"""

import argparse
import ipaddress
import os
import secrets
import shutil
import stat
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import check, expect, results  # noqa: E402
from mesh import Mesh, peer_paths, pod_cidrs  # noqa: E402


def in_cidrs(addr, cidrs):
    a = ipaddress.ip_address(addr)
    return any(a in ipaddress.ip_network(c) for c in cidrs)


def host_links(node):
    """The CNI plugin's host-side veths in a node (named mw + 12 hex digits)."""
    return [l["ifname"] for l in node.ipj("link", "show") if l["ifname"].startswith("mw")
            and len(l["ifname"]) == 14]


def allocations(node):
    d = os.path.join(node.dir, "ipam", "meshnet")
    if not os.path.isdir(d):
        return []
    return [f for f in os.listdir(d) if f[0].isdigit() or ":" in f]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "..", "..", "build"))
    a = ap.parse_args()
    build = os.path.abspath(a.build_dir)
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces)")
        return 77
    if not shutil.which("ip") or not shutil.which("nft"):
        print("skipped: needs ip and nft")
        return 77
    for b in ("meshd/meshd", "cni-plugin/meshwire"):
        if not os.access(os.path.join(build, b), os.X_OK):
            print("FAIL: %s not built in %s" % (b, build))
            return 1

    # Strong enough for meshd to start (psk_file's rules), but not the cluster's.
    wrong_psk = secrets.token_hex(32)
    overrides = {"lan2b": {"psk": wrong_psk, "config": {"logLevel": "info", "mtu": 1380}}}
    m = Mesh(build_dir=build, overrides=overrides)
    t = m.t
    try:
        run_checks(m, wrong_psk)
    finally:
        m.close()

    @check("close() leaves nothing (namespaces, processes, dirs)")
    def _():
        left = m.leftovers()
        expect(not left, "left: %s" % left)
        expect(not os.path.exists(t.tmpdir), t.tmpdir)
        stray = [ns for ns in os.listdir("/run/netns") if ns.startswith(t.prefix)]
        expect(not stray, stray)

    @check("an exception in the with block cleans up too")
    def _():
        holder = {}
        try:
            with Mesh(build_dir=build, topology_args={"relays": 1, "lans": ["cone"],
                                                      "nodes_per_lan": 1}) as m2:
                holder["m"] = m2
                m2.add_pod(m2["lan1a"], "p")
                m2.start(m2["relay1"])
                raise KeyError("boom")
        except KeyError:
            pass
        m2 = holder["m"]
        left = m2.leftovers()
        expect(not left, "left: %s" % left)
        expect(not os.path.exists(m2.t.tmpdir), m2.t.tmpdir)

    failed = sum(1 for _, ok in results if not ok)
    print("%d passed, %d failed" % (len(results) - failed, failed))
    return 1 if failed else 0


def run_checks(m, wrong_psk):
    t = m.t
    names = [n.name for n in m.nodes]

    @check("mesh nodes are the relays and LAN nodes, not routers")
    def _():
        expect(names == ["relay1", "relay2", "lan1a", "lan1b", "lan2a", "lan2b"], names)
        return " ".join(names)

    @check("pod CIDRs, PSK files and meshd.yaml per node")
    def _():
        for i, n in enumerate(m.nodes, 1):
            c = m.configs[n.name]
            expect(c["podCIDRs"] == ["10.244.%d.0/24" % i, "fd00:244:%x::/64" % i] == pod_cidrs(i),
                   c["podCIDRs"])
            expect(c["interface"] == n.wg_ifname and c["nodeName"] == n.name, c)
            expect([r["nodeName"] for r in c["relayNodes"]] == ["relay1", "relay2"], c)
            expect(c["relayNodes"][0]["advertiseAddress"] == [t["relay1"].addr4,
                                                              t["relay1"].addr6], c)
            psk = c["psk"]["path"]
            mode = stat.S_IMODE(os.stat(psk).st_mode)
            expect(mode == 0o600, "%s mode %o" % (psk, mode))
            with open(psk) as f:
                key = f.read().strip()
            expect(key == (wrong_psk if n.name == "lan2b" else m.psk), (n.name, key))
            expect(len(m.psk) == 64 and int(m.psk, 16) >= 0, m.psk)
            with open(m.config_path(n)) as f:
                text = f.read()
            expect("nodeName: \"%s\"" % n.name in text, text)
        expect(m.configs["lan2b"]["logLevel"] == "info" and m.configs["lan2b"]["mtu"] == 1380,
               m.configs["lan2b"])
        expect(m.configs["lan2a"]["logLevel"] == "debug", m.configs["lan2a"])

    @check("meshd --check-config accepts every node's config")
    def _():
        for n in m.nodes:
            p = m.check_config(n)
            out = p.stdout + p.stderr
            expect(p.returncode == 0, "%s: exit %d\n%s" % (n.name, p.returncode, out))
            for want in (n.name, m.configs[n.name]["podCIDRs"][0], "userspace", "relay2",
                         m.socket_path(n)):
                expect(want in out, "%s: %r not in\n%s" % (n.name, want, out))
        return "%d nodes" % len(m.nodes)

    @check("a bad override is refused by meshd, naming the field")
    def _():
        n = m["lan1b"]
        saved = m.configs[n.name]
        m.configs[n.name] = dict(saved, mdns={"enabled": False})
        try:
            m.write_config(n)
            p = m.check_config(n)
            expect(p.returncode == 78 and "mdns.enabled" in p.stdout + p.stderr,
                   "exit %d: %s%s" % (p.returncode, p.stdout, p.stderr))
        finally:
            m.configs[n.name] = saved
            m.write_config(n)
        expect(m.check_config(n).returncode == 0, "restored config refused")

    pods = {}

    @check("pods via the CNI plugin in two nodes (podCIDRs in the net conf)")
    def _():
        for node, name in ((m["lan1a"], "web"), (m["relay1"], "db")):
            p = m.add_pod(node, name)
            pods[node.name] = p
            cidrs = m.configs[node.name]["podCIDRs"]
            expect(p.addr4 and in_cidrs(p.addr4, cidrs), (p, cidrs))
            expect(p.addr6 and in_cidrs(p.addr6, cidrs), (p, cidrs))
            expect(p.path.startswith("/run/netns/" + t.prefix), p.path)
            expect(len(host_links(node)) == 1, host_links(node))
        return " ".join(repr(p) for p in pods.values())

    @check("a pod reaches its own node over v4 and v6")
    def _():
        for node_name, p in pods.items():
            node = t[node_name]
            for addr in (node.addr4, node.addr6):
                p.ping(addr, count=2)
            out = p.run(["ip", "-4", "route", "show", "default"]).stdout
            expect("169.254.1.1" in out, out)

    @check("pods on different nodes have different addresses")
    def _():
        a, b = pods.get("lan1a"), pods.get("relay1")
        expect(a and b and a.addr4 != b.addr4 and a.addr6 != b.addr6, (a, b))

    @check("pod CIDRs from the node.json meshd writes at startup")
    def _():
        n = m["lan1b"]
        proc = m.start(n)
        path = m.node_file(n)
        deadline = time.monotonic() + 15
        # meshd writes node.json early; today it then exits 69 (data plane not there yet), later
        # it keeps running. Either is fine here.
        while not os.path.exists(path) and time.monotonic() < deadline and proc.alive():
            time.sleep(0.05)
        expect(os.path.exists(path), "no %s; meshd %s:\n%s" % (
            path, "running" if proc.alive() else "exit %s" % proc.popen.returncode, proc.log()))
        p = m.add_pod(n, "fromfile", cidrs_from="node_file")
        expect("podCIDRs" not in p.conf, p.conf)
        expect(in_cidrs(p.addr4, m.configs[n.name]["podCIDRs"]), p)
        p.ping(n.addr4)
        code = m.stop(n)
        return "meshd exit %s" % code

    @check("CNI DEL removes the host veth and the IPAM allocation")
    def _():
        n = m["lan1b"]
        pod = [p for p in m.pods if p.node is n][0]
        expect(host_links(n) and allocations(n), (host_links(n), allocations(n)))
        m.del_pod(pod)
        m.del_pod(pod)  # a no-op the second time
        expect(not host_links(n), host_links(n))
        expect(not allocations(n), allocations(n))

    @check("wait_ready fails fast with meshd's state and log")
    def _():
        n = m["relay2"]
        m.start(n)
        t0 = time.monotonic()
        try:
            m.wait_ready(timeout=5, nodes=[n])
        except AssertionError as e:
            msg = str(e)
            expect("relay2" in msg and "meshd" in msg, msg)
            expect(time.monotonic() - t0 < 20, "took %.1fs" % (time.monotonic() - t0))
            return msg.splitlines()[1][:100]
        finally:
            m.stop(n)
        # meshd and meshctl may both work one day: then this is fine too.
        return "meshd answered"

    @check("peer_paths reads list and object forms")
    def _():
        expect(peer_paths([{"nodeName": "a", "path": "direct"}]) == {"a": "direct"}, 1)
        expect(peer_paths({"peers": [{"name": "b", "path": "relay"}]}) == {"b": "relay"}, 2)
        expect(peer_paths({}) == {}, 3)

    @check("stop/kill are safe on nodes that never ran meshd")
    def _():
        expect(m.kill(m["lan2a"]) is None, "kill")
        expect(m.stop(m["lan2a"]) is None, "stop")


if __name__ == "__main__":
    sys.exit(main())
