#!/usr/bin/env python3
"""CNI ADD/DEL latency: meshwire vs Debian's reference bridge + host-local, interleaved.

Both plugins run in one private 'node' network namespace, each with its own pod namespace that is
created once, outside the timed region, and reused (every DEL leaves it empty again). A cycle is
ADD then DEL for each plugin; the order of the two plugins alternates from cycle to cycle. The time
of one operation is the wall time from spawning the plugin to reaping it (what a runtime waits
for). Peak RSS is the largest ru_maxrss that wait4() reported for an invocation (for bridge this
includes the host-local child it waits for).

Prints a table and the ratios reference/meshwire of the median ADD and DEL (target: >= 5x).
Never fails on timing; exits 1 if an invocation fails (timed or in the peak-RSS runs), a peak RSS
could not be measured, or something leaks; 77 (skip) without root or without /usr/bin/time.

    python3 test/bench/cni_bench.py --plugin build/cni-plugin/meshwire [--cycles 150] [--dual-stack]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e", "cni"))
import cnilib as L  # noqa: E402


def pct(xs, p):
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def lean_invoke(plugin, command, conf, containerid, netns, cni_path):
    """The timed invocation: posix_spawn, write stdin, read stdout then stderr, wait4. No
    selector loop (the plugins print a few hundred bytes, far below a pipe's capacity), so the
    harness adds as little as possible to what is measured. Returns (rc, stdout, seconds, cpu)."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
           "CNI_CONTAINERID": containerid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
           "CNI_PATH": cni_path}
    data = L.json.dumps(conf).encode()
    t0 = time.perf_counter()
    p = L._Spawned([plugin], env)
    try:
        p.stdin.write(data)
    except BrokenPipeError:
        pass
    p.stdin.close()
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t0
    p.stdout.close()
    p.stderr.close()
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace"), err.decode(errors="replace"), \
        elapsed, ru.ru_utime + ru.ru_stime


class Subject:
    def __init__(self, label, path, conf, node, pod, cni_path):
        self.label = label
        self.path = path
        self.conf = conf
        self.node = node
        self.pod = pod
        self.cni_path = cni_path
        self.times = {"ADD": [], "DEL": []}
        self.cpu = {"ADD": [], "DEL": []}
        self.maxrss = 0
        self.failures = []
        self.ips = set()

    def cycle(self, i, record):
        cid = "bench-%s-%d" % (self.label.split()[0], i)
        rc, out, err, t_add, c_add = lean_invoke(self.path, "ADD", self.conf, cid, self.pod.path,
                                                  self.cni_path)
        if rc != 0:
            self.failures.append("ADD rc=%d: %s %s" % (rc, out.strip(), err.strip()[-500:]))
            return False
        res = L.json.loads(out)
        self.ips.update(L.result_ips(res))
        rc, out, err, t_del, c_del = lean_invoke(self.path, "DEL", dict(self.conf, prevResult=res), cid,
                                                  self.pod.path, self.cni_path)
        if rc != 0:
            self.failures.append("DEL rc=%d: %s %s" % (rc, out.strip(), err.strip()[-500:]))
            return False
        if record:
            self.times["ADD"].append(t_add * 1000.0)
            self.times["DEL"].append(t_del * 1000.0)
            self.cpu["ADD"].append(c_add * 1000.0)
            self.cpu["DEL"].append(c_del * 1000.0)
        return True


def kernel_veth_floor(pod, n):
    """Median wall time of `ip link add` (veth, peer into the pod) and `ip link del`, run from the
    node namespace like the plugins: what any veth-based plugin pays the kernel, at least."""
    add, dele = [], []
    for i in range(n):
        for argv, xs in ((["ip", "link", "add", "mwtfloor0", "type", "veth", "peer", "name", "eth0",
                           "netns", pod.path], add),
                         (["ip", "link", "del", "mwtfloor0"], dele)):
            t0 = time.perf_counter()
            L.subprocess.run(argv, check=True)
            xs.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(add[5:]), statistics.median(dele[5:])


def peak_rss(s, cycles):
    """Largest max-RSS (KiB) of the plugin process over `cycles` ADD+DEL, via GNU time; 0 after a
    failed invocation (recorded in s.failures)."""
    peak = 0
    for i in range(cycles):
        cid = "rss-%s-%d" % (s.label.split()[0], i)
        prev = None
        for op in ("ADD", "DEL"):
            conf = dict(s.conf, prevResult=prev) if prev else s.conf
            r = L.invoke("/usr/bin/time", op, conf, containerid=cid, netns=s.pod.path, ifname="eth0",
                         cni_path=s.cni_path, node=s.node,
                         argv=["/usr/bin/time", "-f", "MAXRSS=%M", s.path])
            lines = [x for x in r.stderr.splitlines() if x.startswith("MAXRSS=")]
            if r.rc != 0:
                s.failures.append("peak-RSS run, %s of %s: %s" % (op, cid, r.describe()))
                return 0
            if not lines:  # the plugin worked: still DEL what it added, then fail
                s.failures.append("peak-RSS run, %s of %s: no MAXRSS line from /usr/bin/time: %r"
                                  % (op, cid, r.stderr[-500:]))
            else:
                peak = max(peak, int(lines[-1].split("=")[1]))
            if op == "ADD":
                out = r.stdout  # GNU time writes its line to stderr; stdout is the plugin's
                prev = L.json.loads(out)
                s.ips.update(L.result_ips(prev))
        if s.failures:
            return 0
    return peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plugin", required=True, help="meshwire binary")
    ap.add_argument("--cni-dir", default="/usr/lib/cni", help="reference plugins (bridge, host-local)")
    ap.add_argument("--cycles", type=int, default=150, help="timed ADD+DEL cycles per plugin (>= 100)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rss-cycles", type=int, default=5, help="untimed cycles for peak RSS")
    ap.add_argument("--dual-stack", action="store_true", help="IPv4 + IPv6 for both plugins")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: the benchmark needs root (network namespaces)", file=sys.stderr)
        return L.SKIP
    if not os.access("/usr/bin/time", os.X_OK):
        # the peak-RSS figure needs a small process between us and the plugin (see peak_rss)
        print("SKIP: the benchmark needs /usr/bin/time (Debian package time) for peak RSS",
              file=sys.stderr)
        return L.SKIP
    plugin = os.path.abspath(args.plugin)
    bridge = os.path.join(args.cni_dir, "bridge")
    for p in (plugin, bridge, os.path.join(args.cni_dir, "host-local")):
        if not os.access(p, os.X_OK):
            print("missing plugin %s" % p, file=sys.stderr)
            return 1

    L.install_global_cleanup()
    c = L.Cleanup()
    L.GLOBAL_CLEANUP.push(c.run)
    try:
        node = L.Node(c, mtu=1500)
        data_mw = L.tmpdir(c, "bench-mw")
        data_ref = L.tmpdir(c, "bench-ref")
        v = "1.0.0"
        mw_cidrs = ["10.77.0.0/24"] + (["fd00:77::/64"] if args.dual_stack else [])
        ref_ranges = [[{"subnet": "10.88.0.0/24"}]] + ([[{"subnet": "fd00:88::/64"}]] if args.dual_stack else [])
        mw_conf = {"cniVersion": v, "name": "benchmw", "type": "meshwire", "podCIDRs": mw_cidrs,
                   "dataDir": data_mw, "nodeFile": os.path.join(data_mw, "none.json")}
        ref_conf = {"cniVersion": v, "name": "benchref", "type": "bridge", "bridge": "refbr0",
                    "isGateway": True, "ipMasq": False,
                    "ipam": {"type": "host-local", "dataDir": data_ref, "ranges": ref_ranges,
                             "routes": [{"dst": "0.0.0.0/0"}]}}
        cni_path = ":".join([os.path.dirname(plugin), args.cni_dir])
        subjects = [
            Subject("meshwire", plugin, mw_conf, node, node.pod_ns("bmw"), cni_path),
            Subject("bridge + host-local", bridge, ref_conf, node, node.pod_ns("bref"), args.cni_dir),
        ]
        total = args.warmup + args.cycles
        t0 = time.monotonic()
        # this thread stays in the node namespace for the whole run: the plugins it spawns start
        # there, and no setns() is paid inside the timed region
        with L.in_netns(node.path):
            for i in range(total):
                order = subjects if i % 2 == 0 else list(reversed(subjects))
                for s in order:
                    if not s.cycle(i, i >= args.warmup):
                        print("%s failed in cycle %d:\n  %s" % (s.label, i, s.failures[-1]),
                              file=sys.stderr)
                        return 1
            # the floor: spawning and reaping a do-nothing binary the same way
            floor = statistics.median(
                [lean_invoke("/bin/true", "VERSION", {}, "x", "/x", "/x")[3] * 1000.0
                 for _ in range(60)][10:])
            kadd, kdel = kernel_veth_floor(subjects[0].pod, 40)
        wall = time.monotonic() - t0

        mw, ref = subjects
        # peak RSS: wait4() from this (large) Python process reports the RSS of the forked copy
        # of itself, so measure through /usr/bin/time (small) over a few untimed cycles
        for s in subjects:
            s.maxrss = peak_rss(s, args.rss_cycles)
        leaks = L.leaks(node, data_mw, "benchmw", mw.ips)
        leaks += ["reference: " + x for x in L.leaks(node, data_ref, "benchref", ref.ips, link_prefixes=("veth",))]

        print()
        print("CNI ADD/DEL latency, %d cycles (+%d warm-up) per plugin, interleaved, %s, cniVersion %s"
              % (args.cycles, args.warmup, "dual-stack" if args.dual_stack else "IPv4", v))
        print("machine: %d CPUs, kernel %s; %.1f s wall" % (os.cpu_count(), os.uname().release, wall))
        print()
        hdr = "%-22s %-4s %9s %9s %9s %9s %11s" % ("plugin", "op", "median", "p90", "min", "max",
                                                  "cpu median")
        print(hdr + "   (ms)")
        print("-" * len(hdr))
        for s in subjects:
            for op in ("ADD", "DEL"):
                xs = s.times[op]
                print("%-22s %-4s %9.2f %9.2f %9.2f %9.2f %11.2f" % (
                    s.label, op, statistics.median(xs), pct(xs, 90), min(xs), max(xs),
                    statistics.median(s.cpu[op])))
        print()
        for op in ("ADD", "DEL"):
            r = statistics.median(ref.times[op]) / statistics.median(mw.times[op])
            rc = statistics.median(ref.cpu[op]) / max(statistics.median(mw.cpu[op]), 1e-6)
            print("ratio reference/meshwire, median %s: %.1fx  (target >= 5x: %s); cpu time %.1fx"
                  % (op, r, "met" if r >= 5 else "NOT met", rc))
        for op in ("ADD", "DEL"):
            m, r = statistics.median(mw.times[op]), statistics.median(ref.times[op])
            print("net of the spawn floor, median %s: meshwire %.2f ms, reference %.2f ms, ratio %.1fx"
                  % (op, m - floor, r - floor, (r - floor) / max(m - floor, 1e-6)))
        print()
        print("wall time = spawn to reap; cpu = user+sys of the plugin process and the children it "
              "reaped (wait4)")
        print("spawn+reap floor (/bin/true): %.2f ms (every exec pays it; the reference pays it twice, "
              "bridge and host-local)" % floor)
        print("kernel veth floor via `ip` (incl. its spawn): create pair with peer in the pod "
              "%.2f ms, delete %.2f ms" % (kadd, kdel))
        print("peak RSS (max over %d ADD+DEL via /usr/bin/time -f %%M): meshwire %s KiB, "
              "bridge %s KiB (wait4 rusage: includes the host-local child it reaps)"
              % (args.rss_cycles, mw.maxrss or "n/a", ref.maxrss or "n/a"))
        print("leaks after %d cycles: %s" % (total, "none" if not leaks else leaks))
        rss_failed = [(s.label, f) for s in subjects for f in s.failures]
        for label, f in rss_failed:
            print("FAIL: %s: %s" % (label, f))
        for s in subjects:
            if not s.maxrss and not s.failures:
                rss_failed.append((s.label, "no peak RSS measured"))
                print("FAIL: %s: no peak RSS measured" % s.label)
        if leaks:
            print("FAIL: leaks: %s" % leaks)
        return 1 if leaks or rss_failed else 0
    finally:
        c.run()


if __name__ == "__main__":
    sys.exit(main())
