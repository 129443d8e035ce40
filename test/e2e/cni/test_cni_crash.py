#!/usr/bin/env python3
"""Crash consistency of the meshwire CNI plugin (issue 14 §4): root, network namespaces, stdlib.

The real plugin binary is killed with SIGKILL in the middle of ADD and DEL, then the runtime's
recovery (DEL, a retried ADD, GC with the valid attachments) must leave no address reservation,
link, route or store file behind, and a later ADD must work.

  serial      kill points are deterministic: `strace -e inject=<syscall>:signal=KILL:when=<n>`
              kills the plugin on entering its n-th call of that syscall, the points being taken
              from a reference trace of a normal ADD (DEL), spread evenly over it (all of them with
              enough --runs). How far the command got is read back from what exists after the kill.
  concurrent  several ADDs and DELs at once on different containers, killed after a random delay
              in [0, 1.2 x the measured duration]; a fully added 'keeper' in GC's valid list must
              survive everything.
  full fs     the IPAM directory on a small tmpfs filled up (bytes, then inodes): ADD fails with a
              CNI error on stdout and nothing else, leaves nothing, and works once space is freed.

    python3 test/e2e/cni/test_cni_crash.py --plugin build/cni-plugin/meshwire [--runs 300] [-k serial]
"""

import argparse
import concurrent.futures
import ipaddress
import os
import random
import re
import secrets
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnilib as L  # noqa: E402
from cnilib import check, eq  # noqa: E402

test = L.Registry()

NET = "mwcrash"
V4 = "10.78.0.0/24"
V6 = "fd00:78::/64"
STRACE = shutil.which("strace")
IPAM_STATE = re.compile(r"^(lock|last_reserved_ip\.\d+)$")
OPTS = {"runs": 60, "seed": None}


def fnv1a64(s):
    h = 1469598103934665603
    for c in s.encode():
        h ^= c
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def host_veth(cid, ifname="eth0"):
    """The plugin's host veth name (pod_wiring.cpp host_veth_name)."""
    return "mw%012x" % (fnv1a64(cid + "/" + ifname) & 0xFFFFFFFFFFFF)


def cid_for(tag):
    return "%s-%s" % (tag, secrets.token_hex(8))


class Ctx:
    def __init__(self, args):
        plugin = args.plugin or os.path.join(os.path.dirname(__file__),
                                             "../../../build/cni-plugin/meshwire")
        self.plugin = os.path.abspath(plugin)
        if not os.access(self.plugin, os.X_OK):
            raise SystemExit("plugin %s not found or not executable (use --plugin)" % self.plugin)
        self.verbose = args.verbose
        self.runs = OPTS["runs"]
        seed = OPTS["seed"] if OPTS["seed"] is not None else random.randrange(1 << 30)
        print("seed %d (--seed to repeat), runs %d" % (seed, self.runs), flush=True)
        self.rng = random.Random(seed)


class World:
    """A node namespace, a private dataDir (optionally on a given directory), the plugin."""

    def __init__(self, ctx, c, data=None):
        self.ctx = ctx
        self.c = c
        self.node = L.Node(c)
        self.data = data or L.tmpdir(c, "data")
        self.tmp = L.tmpdir(c, "tmp")
        self.seen_ips = set()

    def conf(self, **extra):
        c = {"cniVersion": "1.1.0", "name": NET, "type": "meshwire", "dataDir": self.data,
             "nodeFile": os.path.join(self.tmp, "no-node.json"), "podCIDRs": [V4, V6]}
        c.update(extra)
        return c

    def invoke(self, command, cid=None, pod=None, argv=None, conf=None):
        r = L.invoke(self.ctx.plugin, command, conf or self.conf(), containerid=cid, netns=pod,
                     ifname="eth0" if cid else None, node=self.node, argv=argv)
        if self.ctx.verbose:
            print("     " + r.describe())
        if r.ok and isinstance(r.json, dict):
            for a in L.result_ips(r.json):
                self.seen_ips.add(str(ipaddress.ip_interface(a).ip))
        return r

    def add(self, cid, pod):
        r = self.invoke("ADD", cid, pod)
        check(r.ok and isinstance(r.json, dict) and r.json.get("ips"),
              "ADD of %s failed: %s", cid, r.describe())
        return r.json

    def delete(self, cid, pod):
        r = self.invoke("DEL", cid, pod)
        check(r.ok and r.stdout.strip() == "", "DEL of %s failed: %s", cid, r.describe())

    def gc(self, valid=()):
        c = self.conf()
        c["cni.dev/valid-attachments"] = [{"containerID": v, "ifname": "eth0"} for v in valid]
        r = self.invoke("GC", conf=c)
        check(r.ok, "GC failed: %s", r.describe())

    # ---- what exists

    def store(self):
        """(reservations {ip: owner id}, stray files [name]) of the IPAM directory."""
        d = os.path.join(self.data, NET)
        res, stray = {}, []
        if not os.path.isdir(d):
            return res, stray
        for f in os.listdir(d):
            if IPAM_STATE.match(f):
                continue
            try:
                ipaddress.ip_address(f)
            except ValueError:
                stray.append(f)
                continue
            try:
                with open(os.path.join(d, f), "rb") as fh:
                    res[f] = fh.read().decode(errors="replace").split("\r\n")[0]
            except FileNotFoundError:
                pass
        return res, stray

    def debris(self, cids, pods, keep=()):
        """Everything left for the containers `cids` (and anything not owned by `keep`)."""
        keep = set(keep)
        out = []
        res, stray = self.store()
        for ip, owner in res.items():
            if owner not in keep:
                out.append("reservation %s (%r)" % (ip, owner))
        out += ["store file %s" % f for f in stray]
        keep_links = {host_veth(k) for k in keep}
        for lk in L.links(self.node.name, "mw"):
            if lk["ifname"] not in keep_links:
                out.append("host link %s (alias %r)" % (lk["ifname"], lk.get("ifalias")))
        kept_ips = {ip for ip, owner in res.items() if owner in keep}
        for dst in L.route_dsts(self.node.name):
            try:
                ip = str(ipaddress.ip_interface(dst).ip)
            except ValueError:
                continue
            if ip in self.seen_ips - kept_ips or ip_in_pod_cidr(ip) and ip not in kept_ips:
                out.append("host route %s" % dst)
        for p in pods:
            names = [lk["ifname"] for lk in L.links(p.name) if lk["ifname"] != "lo"]
            out += ["pod link %s in %s" % (n, p.name) for n in names]
        return out


def ip_in_pod_cidr(ip):
    a = ipaddress.ip_address(ip)
    return any(a in ipaddress.ip_network(n) for n in (V4, V6))


def add_stage(world, cid, pod, rc):
    """How far a killed ADD got, read from what exists."""
    if rc == 0:
        return "7 complete"
    res, stray = world.store()
    mine = [ip for ip, o in res.items() if o == cid]
    links = [lk for lk in L.links(world.node.name) if lk["ifname"] == host_veth(cid)]
    if not links:
        if mine:
            return "1 reserved"
        return "0 nothing" if not stray else "0 store temp file"
    lk = links[0]
    if not lk.get("ifalias"):
        return "2 veth without alias"
    pod_addrs = L.addrs(pod.name, "eth0") if any(
        x["ifname"] == "eth0" for x in L.links(pod.name)) else []
    if not pod_addrs:
        return "3 veth aliased"
    has_default = any(r.get("dst") == "default" for r in L.routes(pod.name, 4))
    if not has_default:
        return "4 pod addressed"
    host_routes = [d for d in L.route_dsts(world.node.name) if d and d.split("/")[0] in mine]
    if len(host_routes) < len(mine):
        return "5 pod routes"
    return "6 host routes"


def del_stage(world, cid, rc):
    if rc == 0:
        return "3 complete"
    res, _ = world.store()
    mine = [ip for ip, o in res.items() if o == cid]
    has_link = any(lk["ifname"] == host_veth(cid) for lk in L.links(world.node.name))
    if has_link:
        return "0 link and reservations" if mine else "? link without reservation"
    return "1 reservations only" if mine else "2 nothing left"


# --------------------------------------------------------------------------------------------
# deterministic kill points from a reference strace


TRACE_LINE = re.compile(r"^(\d+)\s+([a-z0-9_]+)\(")


def traced_syscalls(out):
    """(thread id, syscall name) of each call in strace's output file `out`, from the plugin's read
    of stdin on (what came before is the dynamic loader and libc start-up)."""
    started = False
    with open(out) as fh:
        for line in fh:
            m = TRACE_LINE.match(line)
            if not m:
                continue
            if not started and m.group(2) == "read" and line.split("(", 1)[1].startswith("0,"):
                started = True
            if started:
                yield m.group(1), m.group(2)


def trace_points(world, command, cid, pod, out):
    """Runs `command` under strace; returns the kill points [(syscall, n-th call in its thread,
    thread index)] from the plugin's read of stdin on, and the Result."""
    r = world.invoke(command, cid, pod, argv=[STRACE, "-f", "-qq", "-o", out, world.ctx.plugin])
    points = []
    counts = {}
    tids = []
    for tid, name in traced_syscalls(out):
        if tid not in tids:
            tids.append(tid)
        counts[(tid, name)] = counts.get((tid, name), 0) + 1
        points.append((name, counts[(tid, name)], tids.index(tid)))
    return points, r


def killed_at(world, point, command, cid, pod, out):
    """Runs `command` under strace, killed on entering the syscall `point`; returns the Result and
    the index (in trace_points' numbering) of the syscall it died on, read from its own trace."""
    name, n, _ = point
    argv = [STRACE, "-f", "-qq", "-o", out, "-e", "inject=%s:signal=KILL:when=%d" % (name, n),
            world.ctx.plugin]
    r = world.invoke(command, cid, pod, argv=argv)
    return r, sum(1 for _ in traced_syscalls(out)) - 1


def pick(ctx, n_points, runs):
    """`runs` kill point indexes spread evenly over [0, n_points) (all of them if runs allow)."""
    if runs >= n_points:
        idx = list(range(n_points)) + [ctx.rng.randrange(n_points) for _ in range(runs - n_points)]
    else:
        step = n_points / runs
        off = ctx.rng.random() * step
        idx = [int(off + i * step) for i in range(runs)]
    ctx.rng.shuffle(idx)
    return idx


def summary(title, stages, debris_after_kill, debris_after, covered, total, landed):
    print("     %s: %d runs, died at %d distinct syscalls of the reference trace's %d (%d runs on "
          "the very one picked: strace counts calls per thread)" %
          (title, sum(stages.values()), covered, total, landed))
    for s in sorted(stages):
        print("       killed at stage %-28s %4d runs" % (s, stages[s]))
    print("       debris after the kill: %d items (max %d in one run); after DEL/GC: %d" %
          (sum(debris_after_kill), max(debris_after_kill or [0]), debris_after), flush=True)


@test
def serial_kill_add(ctx, c):
    check(STRACE, "strace is not installed (install/deps.sh)")
    w = World(ctx, c)
    pod, pod2 = w.node.pod_ns("cpod"), w.node.pod_ns("cfresh")
    ref_cid = cid_for("ref")
    points, r = trace_points(w, "ADD", ref_cid, pod, os.path.join(w.tmp, "add.trace"))
    check(r.ok, "reference ADD under strace: %s", r.describe())
    w.delete(ref_cid, pod)
    check(len(points) > 20, "reference trace too short: %d points", len(points))
    runs = max(10, ctx.runs * 2 // 3)
    stages, kill_debris, covered = {}, [], set()
    after = landed = 0
    for i, k in enumerate(pick(ctx, len(points), runs)):
        cid = cid_for("ka%d" % i)
        r, at = killed_at(w, points[k], "ADD", cid, pod, os.path.join(w.tmp, "kill.trace"))
        landed += at == k
        check(r.ok or r.rc in (-9, 137), "run %d: ADD neither completed nor was killed: %s",
              i, r.describe())
        covered.add(at)
        st = add_stage(w, cid, pod, r.rc)
        stages[st] = stages.get(st, 0) + 1
        kill_debris.append(len(w.debris([cid], [pod])))
        if i % 2:
            # a runtime retrying ADD: the debris must not make it fail
            w.add(cid, pod)
        w.delete(cid, pod)
        if i % 3 == 0:
            w.gc([])
        left = w.debris([cid], [pod])
        after += len(left)
        check(not left, "run %d (point %d %s, stage %s): left after DEL%s: %s", i, k,
              points[k][:2], st, "+GC" if i % 3 == 0 else "", left)
        cid2 = cid_for("fresh")
        w.add(cid2, pod2)
        w.delete(cid2, pod2)
    summary("ADD killed", stages, kill_debris, after, len(covered), len(points), landed)


@test
def serial_kill_del(ctx, c):
    check(STRACE, "strace is not installed (install/deps.sh)")
    w = World(ctx, c)
    pod, pod2 = w.node.pod_ns("dpod"), w.node.pod_ns("dfresh")
    ref_cid = cid_for("ref")
    w.add(ref_cid, pod)
    points, r = trace_points(w, "DEL", ref_cid, pod, os.path.join(w.tmp, "del.trace"))
    check(r.ok, "reference DEL under strace: %s", r.describe())
    runs = max(5, ctx.runs // 3)
    stages, kill_debris, covered = {}, [], set()
    after = landed = 0
    for i, k in enumerate(pick(ctx, len(points), runs)):
        cid = cid_for("kd%d" % i)
        w.add(cid, pod)
        r, at = killed_at(w, points[k], "DEL", cid, pod, os.path.join(w.tmp, "kill.trace"))
        landed += at == k
        check(r.ok or r.rc in (-9, 137), "run %d: DEL neither completed nor was killed: %s",
              i, r.describe())
        covered.add(at)
        st = del_stage(w, cid, r.rc)
        stages[st] = stages.get(st, 0) + 1
        kill_debris.append(len(w.debris([cid], [pod])))
        if i % 2:
            w.delete(cid, pod)
        else:
            w.gc([])  # GC alone must clean up, too
        left = w.debris([cid], [pod])
        after += len(left)
        check(not left, "run %d (point %d %s, stage %s): left after %s: %s", i, k,
              points[k][:2], st, "DEL" if i % 2 else "GC", left)
        cid2 = cid_for("fresh")
        w.add(cid2, pod2)
        w.delete(cid2, pod2)
    summary("DEL killed", stages, kill_debris, after, len(covered), len(points), landed)


def spawn_and_kill(w, command, cid, pod, delay):
    """Starts the plugin, SIGKILLs it after `delay` s (if still running); returns the exit code."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": pod.path,
           "CNI_IFNAME": "eth0", "CNI_PATH": os.path.dirname(w.ctx.plugin)}
    import json
    with L.in_netns(w.node.path):
        p = L._Spawned([w.ctx.plugin], env)
    try:
        p.stdin.write(json.dumps(w.conf()).encode())
    except BrokenPipeError:
        pass
    p.stdin.close()
    time.sleep(delay)
    p.kill()
    _, status, _ = os.wait4(p.pid, 0)
    p.stdout.close()
    p.stderr.close()
    return os.waitstatus_to_exitcode(status)


@test
def concurrent_kills(ctx, c):
    w = World(ctx, c)
    k = 8
    pods = [w.node.pod_ns("cc") for _ in range(k + k // 2)]
    keeper_pod = w.node.pod_ns("keep")
    keeper = cid_for("keeper")
    kept = w.add(keeper, keeper_pod)
    # the durations the random delays are drawn from
    add_t, del_t = [], []
    for _ in range(5):
        cid = cid_for("t")
        t0 = time.perf_counter()
        w.add(cid, pods[0])
        add_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        w.delete(cid, pods[0])
        del_t.append(time.perf_counter() - t0)
    add_d, del_d = statistics.median(add_t), statistics.median(del_t)
    print("     normal ADD %.1f ms, DEL %.1f ms (median of 5, with spawn)" %
          (add_d * 1e3, del_d * 1e3))
    rounds = max(2, ctx.runs // 15)
    killed = completed = 0
    kill_debris = []
    for rnd in range(rounds):
        adds = [cid_for("ca%d" % rnd) for _ in range(k)]
        dels = [cid_for("cd%d" % rnd) for _ in range(k // 2)]
        for cid, pod in zip(dels, pods[k:]):
            w.add(cid, pod)
        jobs = [("ADD", cid, pods[i], ctx.rng.uniform(0, 1.2 * add_d)) for i, cid in enumerate(adds)]
        jobs += [("DEL", cid, pods[k + i], ctx.rng.uniform(0, 1.2 * del_d))
                 for i, cid in enumerate(dels)]
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
            rcs = list(ex.map(lambda j: spawn_and_kill(w, *j), jobs))
        killed += sum(1 for rc in rcs if rc == -9)
        completed += sum(1 for rc in rcs if rc == 0)
        kill_debris.append(len(w.debris(adds + dels, pods, keep=[keeper])))
        # recovery: DELs at once for everything, then GC with the keeper as the valid attachment
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
            list(ex.map(lambda j: w.delete(j[1], j[2]), jobs))
        w.gc([keeper])
        left = w.debris(adds + dels, pods, keep=[keeper])
        check(not left, "round %d: left after DEL+GC: %s", rnd, left)
        res, _ = w.store()
        eq(sorted(ip for ip, o in res.items() if o == keeper),
           sorted(str(ipaddress.ip_interface(a).ip) for a in L.result_ips(kept)),
           "keeper's reservations after round %d" % rnd)
        check(any(lk["ifname"] == host_veth(keeper) for lk in L.links(w.node.name)),
              "keeper's host veth gone after round %d", rnd)
        fresh = [cid_for("cf%d" % rnd) for _ in range(k)]
        with concurrent.futures.ThreadPoolExecutor(k) as ex:
            list(ex.map(lambda i: w.add(fresh[i], pods[i]), range(k)))
        with concurrent.futures.ThreadPoolExecutor(k) as ex:
            list(ex.map(lambda i: w.delete(fresh[i], pods[i]), range(k)))
    w.delete(keeper, keeper_pod)
    eq(w.debris([keeper], pods + [keeper_pod]), [], "debris after the keeper's DEL")
    print("     %d rounds x %d processes: %d killed, %d completed before the kill; debris after "
          "the kills %s, after DEL/GC 0" % (rounds, k + k // 2, killed, completed, kill_debris))


def fill(path, mode):
    """Fills the filesystem at `path` until it refuses (ENOSPC): with data ("bytes") or with
    empty files ("inodes"). Returns the names of the files written."""
    names = []
    for i in range(100000):
        f = os.path.join(path, "filler%d" % i)
        try:
            with open(f, "wb") as fh:
                names.append(f)
                while mode == "bytes":
                    fh.write(b"x" * 4096)
                    fh.flush()
        except OSError as e:
            if e.errno != 28:
                raise
            if mode == "inodes" or os.path.getsize(f) == 0:
                return names
    raise RuntimeError("filesystem never filled")


@test
def full_filesystem(ctx, c):
    for mode in ("bytes", "inodes"):
        mnt = L.tmpdir(c, "ipamfs")
        opts = "size=256k" if mode == "bytes" else "size=4m,nr_inodes=32"
        L.run(["mount", "-t", "tmpfs", "-o", opts, "mwcrash-ipam", mnt])
        c.push(L.run, ["umount", "-l", mnt], check=False)
        w = World(ctx, c, data=mnt)
        pod = w.node.pod_ns("fpod")
        # a working store first (directory, lock, hints exist), then full
        cid0 = cid_for("pre")
        w.add(cid0, pod)
        w.delete(cid0, pod)
        fillers = fill(mnt, mode)
        cid = cid_for("full")
        r = w.invoke("ADD", cid, pod)
        check(not r.ok, "%s: ADD on a full IPAM filesystem succeeded: %s", mode, r.describe())
        check(r.json_error is None and isinstance(r.json, dict),
              "%s: stdout is not one CNI error JSON: %r", mode, r.stdout)
        eq(r.json.get("code"), 5, "%s: CNI error code (%s)" % (mode, r.describe()))
        check("No space left" in r.json.get("msg", "") + r.json.get("details", ""),
              "%s: error does not say the disk is full: %s", mode, r.stdout)
        eq(r.stdout.count("\n"), 1, "%s: lines on stdout" % mode)
        left = w.debris([cid], [pod])
        check(not left, "%s: failed ADD left %s", mode, left)
        w.delete(cid, pod)  # the runtime's DEL after a failed ADD works on a full disk
        for f in fillers:
            os.unlink(f)
        cid2 = cid_for("after")
        w.add(cid2, pod)
        w.delete(cid2, pod)
        eq(w.debris([cid, cid2], [pod]), [], "%s: debris after space was freed" % mode)
        print("     %s full: ADD -> code %d %r; nothing left; ADD after freeing space works"
              % (mode, r.json["code"], r.json["msg"][:90]))


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--runs", type=int, default=OPTS["runs"],
                    help="serial kill runs (2/3 ADD, 1/3 DEL); concurrent rounds = runs/15")
    ap.add_argument("--seed", type=int, default=None)
    known, rest = ap.parse_known_args(sys.argv[1:])
    OPTS["runs"], OPTS["seed"] = known.runs, known.seed
    return test.main(rest, Ctx, __doc__)


if __name__ == "__main__":
    sys.exit(main())
