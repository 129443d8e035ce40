#!/usr/bin/env python3
"""The whole daemon under ThreadSanitizer (root; Python 3 stdlib): meshd, meshctl and the CNI plugin
from the TSan tree (test/sanitize/tsan_build.sh) on a three-node mesh of the e2e testbed (relay1;
lan1a behind a cone NAT, lan2a behind a symmetric one), so that every thread of meshd has work:
the core's io_context, the relay forwarder (relay1), the relay proxies (lan1a <-> lan2a is relayed),
the WireGuard worker (peers applied, `wg show` for meshctl), the record cache writer, the control
socket and the metrics endpoint (meshctl and a scrape on every node), a live config change (the
config watcher), then a clean stop (SIGTERM: the threads' shutdown).

meshd runs with TSAN_OPTIONS halt_on_error=1 (the first report ends it, which also fails the pings)
and log_path=<node dir>/tsan: a check fails when any meshd wrote a report (printed here) or did
not exit 0 on SIGTERM. About 45 s. Prints `N passed, N failed`; exit 1 on a failure, 77 when it
cannot run here.

Usage: tsan_mesh.py [--build-dir DIR]   (default build-tsan/)
"""

import glob
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# meshctl's answer timeouts and the stop's grace (mesh.TIME_FACTOR): TSan makes meshd 2-5x slower.
os.environ.setdefault("MESHWIRE_TIME_FACTOR", "2")
sys.path.insert(0, os.path.join(HERE, "..", "e2e", "mesh"))

import checks  # noqa: E402
from checks import (HANDSHAKE_BOUND, PATHS_BOUND, READY_BOUND, check, expect, figure,  # noqa: E402
                    ping_retry, report, run_and_clean)
from mesh import TIME_FACTOR, Mesh  # noqa: E402

NODES = ["relay1", "lan1a", "lan2a"]
METRICS = "127.0.0.1:9464"
TSAN_OPTIONS = "halt_on_error=1:second_deadlock_stack=1:exitcode=66:history_size=4"


def tsan_reports(m):
    """{node name: report text} of every meshd that wrote one (log_path=<node dir>/tsan.<pid>)."""
    out = {}
    for n in m.nodes:
        for path in sorted(glob.glob(os.path.join(n.dir, "tsan.*"))):
            with open(path, errors="replace") as f:
                out.setdefault(n.name, "")
                out[n.name] += "--- %s\n%s" % (path, f.read())
    return out


def body(m):
    for n in m.nodes:
        m.wrap[n.name] = ["env", "TSAN_OPTIONS=%s:log_path=%s" % (
            TSAN_OPTIONS, os.path.join(n.dir, "tsan"))]
    pods = {}

    @check("meshd under TSan: ready, relayed and direct pairs on their paths, pods ping")
    def _():
        t0 = time.monotonic()
        m.start()
        m.wait_ready(timeout=READY_BOUND * TIME_FACTOR)
        m.wait_paths({("lan1a", "lan2a"): "relay", ("lan1a", "relay1"): "direct"},
                     timeout=PATHS_BOUND * TIME_FACTOR)
        for n in NODES:
            pods[n] = m.add_pod(m[n], "p")
        ping_retry(pods["lan1a"], pods["lan2a"].addr4, within=HANDSHAKE_BOUND * TIME_FACTOR)
        ping_retry(pods["lan2a"], pods["lan1a"].addr6, within=HANDSHAKE_BOUND * TIME_FACTOR)
        ping_retry(pods["lan1a"], pods["relay1"].addr4, within=HANDSHAKE_BOUND * TIME_FACTOR)
        figure("mesh up under TSan, pods pinging (from start)", "%.2fs" % (time.monotonic() - t0))

    @check("traffic through forwarder and proxies while meshctl and /metrics ask every node")
    def _():
        # A flood ping over the relayed pair keeps the data-plane threads busy while the control
        # socket, the WireGuard worker (`wg show` behind meshctl peers) and the stats readers run.
        flood = pods["lan1a"].netns.popen(
            ["ping", "-q", "-i", "0.01", "-c", "300", "-s", "1000", pods["lan2a"].addr4],
            name="ping")
        try:
            for _round in range(3):
                for n in NODES:
                    m.meshctl(m[n], "status")
                    m.meshctl(m[n], "peers")
                    m.meshctl(m[n], "relays")
                    checks.refusal_counts(m[n], METRICS)  # a GET /metrics
        finally:
            rc = flood.wait(30 * TIME_FACTOR)
        expect(rc == 0, "ping -i 0.01 over the relayed pair: exit %s\n%s" % (rc, flood.log()))

    @check("a live config change (config watcher) is taken with traffic flowing")
    def _():
        for n in NODES:
            m.configs[n]["logLevel"] = "info"
            m.write_config(m[n])
        for n in NODES:
            m.procs[n].wait_log(r"logLevel changed by config", timeout=10 * TIME_FACTOR)
        ping_retry(pods["lan1a"], pods["lan2a"].addr4, within=HANDSHAKE_BOUND * TIME_FACTOR)

    @check("every meshd stops cleanly on SIGTERM (exit 0)")
    def _():
        codes = m.stop(timeout=10 * TIME_FACTOR)
        expect(all(c == 0 for c in codes.values()), "exit codes %s" % codes)

    @check("no ThreadSanitizer report from any meshd")
    def _():
        reps = tsan_reports(m)
        for name, text in reps.items():
            print("==== TSan report of meshd on %s:\n%s" % (name, text[:20000]))
        expect(not reps, "reports from %s (printed above)" % sorted(reps))


def main():
    if not any(a.startswith("--build-dir") for a in sys.argv[1:]):
        sys.argv += ["--build-dir", os.path.join(HERE, "..", "..", "build-tsan")]
    build, rc = checks.scenario_setup()
    if rc is not None:
        return rc
    t_start = time.monotonic()
    # The metrics endpoint on every node (a scraper thread-safety check of the counters).
    overrides = {n: {"config": {"metrics": {"listen": METRICS}}} for n in NODES}
    m = Mesh(build_dir=build, nodes=NODES, overrides=overrides,
             topology_args={"relays": 1, "lans": ["cone", "symmetric"], "nodes_per_lan": 1,
                            "keep_tmp": bool(os.environ.get("MESH_KEEP"))})
    run_and_clean(m, body)
    return report(t_start)


if __name__ == "__main__":
    sys.exit(main())
