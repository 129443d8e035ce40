"""Shared helpers of the meshd testbed benchmarks (test/bench/mesh): the mesh harness, process
CPU and memory from /proc, pair waiting, and what each benchmark checks before it trusts a figure
(every meshd still running, a pair on the path it is claimed to be on). Python 3 stdlib, root.

A benchmark never fails on a figure; it fails (exit 1, `FAIL: ...` lines) when the thing it
measures did not work, and exits 77 when it cannot run here."""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "test", "e2e", "mesh"))

from mesh import Mesh  # noqa: E402,F401

CLK_TCK = os.sysconf("SC_CLK_TCK")
SKIP = 77


class Failures:
    """What did not work in a benchmark run: add() records (and prints at once) a failure, the
    run goes on where its figures still mean something; done() prints them all again after the
    summary and returns the exit code."""

    def __init__(self, name):
        self.name = name
        self.items = []

    def add(self, what):
        self.items.append(what)
        print("FAIL: %s" % what, flush=True)

    def __bool__(self):
        return bool(self.items)

    def done(self):
        if not self.items:
            print("%s: every measured run worked (figures above)" % self.name)
            return 0
        print("%s: FAILED (%d):" % (self.name, len(self.items)))
        for x in self.items:
            print("FAIL: %s" % x)
        return 1


def meshd_exits(m):
    """Mesh nodes whose meshd is not running (never started, exited, killed): {name: exit code}."""
    out = {}
    for n in m.nodes:
        p = m.procs.get(n.name)
        if p is None or not p.alive():
            out[n.name] = None if p is None else p.popen.returncode
    return out


def check_meshd_alive(m, fails, when, nodes=None):
    """Records a failure (with the node's state and log tail) for every meshd of `nodes` (default:
    all) that is not running; returns True when all run."""
    dead = {k: v for k, v in meshd_exits(m).items() if nodes is None or k in nodes}
    for name, rc in sorted(dead.items()):
        fails.add("meshd on %s is not running %s (exit %s)\n%s" % (name, when, rc,
                                                                  m._describe(m[name])))
    return not dead


def path_of(m, a, b):
    """(path, relay) that `meshctl peers` on a shows for b; (None, None) when b is not listed,
    ("no answer from meshctl", None) when meshctl fails (meshd not running)."""
    doc = m.meshctl(m[a], "peers", check=False)
    if doc is None:
        return "no answer from meshctl", None
    for p in doc.get("peers", []):
        if p.get("name") == b:
            return p.get("path"), p.get("relay")
    return None, None


def check_path(m, fails, a, b, want, relay=None, when=""):
    """Records a failure when `meshctl peers` on a does not show b on path `want` (and through
    `relay`, when given): the figures of a pair are only what they claim while it is on its
    claimed path. Returns True when it is."""
    path, via = path_of(m, a, b)
    if path == want and (relay is None or via == relay):
        return True
    claim = want + (" via %s" % relay if relay else "")
    fails.add("%s -> %s %s: on %s%s, claimed %s" % (a, b, when, path,
                                                    " via %s" % via if via else "", claim))
    return False


def need_root(name):
    if os.geteuid() != 0:
        print("%s: SKIP (needs root for the network-namespace testbed)" % name)
        sys.exit(SKIP)


def cpu_seconds(pid):
    """utime + stime of a process, in seconds. /proc/<pid>/stat counts every thread, live or
    exited (the per-thread figures are in /proc/<pid>/task/*/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat(5)


def status_kb(pid, keys=("VmRSS", "VmHWM")):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0])
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def children(pid):
    out = []
    for d in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, d)) as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def meshd_pid(m, node):
    """meshd's pid (the Proc is `ip netns exec ... sh -c exec meshd`, one exec chain)."""
    pid = m.procs[node.name].pid
    if comm(pid) != "meshd":
        raise RuntimeError("pid %d on %s is %r, not meshd" % (pid, node.name, comm(pid)))
    return pid


def wg_pid(m, node):
    """wireguard-go's pid under this node's meshd (userspace backend), or None."""
    todo = [meshd_pid(m, node)]
    while todo:
        p = todo.pop()
        for c in children(p):
            if comm(c) and comm(c).startswith("wireguard"):
                return c
            todo.append(c)
    return None


class CpuSample:
    """CPU seconds of a set of processes over an interval: with CpuSample({...}) as s: ...;
    s.delta[label] (seconds), s.wall."""

    def __init__(self, pids):
        self.pids = {k: v for k, v in pids.items() if v}

    def __enter__(self):
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        self.delta = {k: cpu_seconds(p) - self.c0[k] for k, p in self.pids.items()}
        return False


def wait_handshake(m, a, b, timeout=30):
    """Waits until `meshctl peers` on a shows a WireGuard handshake with b (and b with a)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = True
        for x, y in ((a, b), (b, a)):
            peers = {p["name"]: p for p in m.meshctl(m[x], "peers").get("peers", [])}
            ok &= bool(peers.get(y, {}).get("lastHandshake"))
        if ok:
            return True
        time.sleep(0.2)
    return False


def peer(m, a, b):
    for p in m.meshctl(m[a], "peers").get("peers", []):
        if p.get("name") == b:
            return p
    return None


def start_mesh(m, pairs):
    """meshd everywhere, paths as expected, WireGuard sessions up for the pairs; returns the
    seconds it took."""
    t0 = time.monotonic()
    m.start()
    m.wait_ready(timeout=20)
    m.wait_paths(pairs, timeout=30)
    for (a, b) in pairs:
        if not wait_handshake(m, a, b):
            raise RuntimeError("no WireGuard handshake %s <-> %s within 30 s" % (a, b))
    return time.monotonic() - t0


def ping_until_ok(pod, addr, timeout=15, grace=45):
    """Waits until `pod` gets an answer from `addr`; returns the seconds it took. Past `timeout`
    it prints the state of the source node and of the node owning `addr` (meshctl, wg, routes,
    logs) and keeps trying for `grace` more seconds, so that a slow start is reported in the
    figures rather than lost; only then does it fail."""
    t0 = time.monotonic()

    def ping(wait):
        return pod.run(["ping", "-n", "-c", "1", "-w", str(wait), addr], check=False,
                       timeout=wait + 5)

    r = ping(timeout)
    if r.returncode == 0:
        return time.monotonic() - t0
    m = pod.mesh
    owner = [n for n in m.nodes if n is not pod.node and any(
        p.addr4 == addr or p.addr6 == addr for p in getattr(m, "pods", []) if p.node is n)]
    print("!! %s@%s got no answer from %s within %d s; state:" % (pod.name, pod.node.name, addr,
                                                                   timeout))
    for n in [pod.node] + owner:
        print(m.diagnose(n))
    sys.stdout.flush()
    r = ping(grace)
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("%s cannot reach %s within %.0f s: %s%s" % (pod.name, addr, took,
                                                                   r.stdout, r.stderr))
    print("!! %s@%s reached %s only after %.1f s (state above)" % (pod.name, pod.node.name, addr,
                                                                    took))
    return took
