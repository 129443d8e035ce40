"""Shared scaffolding of the mesh e2e scenarios (test_mesh, test_failover, test_relays_runtime):
the default mesh's node names, PASS/FAIL checks that run at once and do not stop each other,
figures, the final report, meshctl shortcuts and a retrying pod ping. Python 3 stdlib."""

import argparse
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "topology"))

from pass_fail import check, expect, results  # noqa: E402,F401 - re-exported to the scenarios

LAN_NODES = ["lan1a", "lan1b", "lan2a", "lan2b"]
RELAYS = ["relay1", "relay2"]
ALL = RELAYS + LAN_NODES
RELAY_PORT = 51821
WG_PORT = 51820

figures = []  # (what, value), printed again by report()


def figure(what, value):
    figures.append((what, value))
    print("FIGURE %s: %s" % (what, value), flush=True)


def report(t_start, width=48):
    """Prints the figures, the run time and `N passed, N failed`; returns the exit code."""
    print("--- figures")
    for what, value in figures:
        print("  %-*s %s" % (width, what, value))
    print("total run time %.1fs" % (time.monotonic() - t_start))
    failed = sum(1 for _, ok in results if not ok)
    print("%d passed, %d failed" % (len(results) - failed, failed))
    return 1 if failed else 0


def lan_of(name):
    return name[:4] if name.startswith("lan") else None


def peers_by_name(m, node_name):
    return {p["name"]: p for p in m.meshctl(m[node_name], "peers")["peers"]}


def status(m, node_name):
    return m.meshctl(m[node_name], "status")


def relays_of(m, node_name):
    return {r["name"]: r for r in m.meshctl(m[node_name], "relays")["relays"]}


def wait_for(what, fn, timeout, interval=0.25):
    """Polls fn() until it returns a true value; returns (value, seconds). Raises with fn's last
    answer (or exception) on timeout. fn may return (ok, detail) to have the detail reported."""
    t0 = time.monotonic()
    last = None
    while True:
        try:
            got = fn()
            if isinstance(got, tuple):
                ok, last = got
            else:
                ok, last = got, got
            if ok:
                return last, time.monotonic() - t0
        except Exception as e:  # noqa: BLE001 - keep polling, report the last one
            last = "%s: %s" % (type(e).__name__, e)
        if time.monotonic() - t0 > timeout:
            raise AssertionError("%s: not within %.0fs; last: %s" % (what, timeout, last))
        time.sleep(interval)


def first_reply(pod, addr, limit, what):
    """Pings addr (v4) from pod with 0.2 s timeouts until one answers; returns the seconds that
    took (the outage as the pod sees it). Raises after `limit` s, naming `what`."""
    t0 = time.monotonic()
    cmd = ["ping", "-4", "-n", "-c", "1", "-W", "0.2", addr]
    while pod.run(cmd, check=False, timeout=5).returncode != 0:
        expect(time.monotonic() - t0 < limit, "no pod reply %d s %s" % (limit, what))
    return time.monotonic() - t0


_RTT = re.compile(r"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms")


def ping_retry(pod, addr, within=5.0, expect_ok=True, diagnose=True):
    """ping -c 3 from a pod, retried until `within` s passed (the first packets may wait for a
    WireGuard handshake). Returns the average RTT in ms. With expect_ok=False: asserts that no
    reply comes during `within` s. A failure carries both nodes' state when `diagnose`."""
    fam = "-6" if ":" in addr else "-4"
    cmd = ["ping", fam, "-n", "-c", "3", "-i", "0.2", "-W", "1", addr]
    deadline = time.monotonic() + within
    tries = 0
    while True:
        tries += 1
        r = pod.run(cmd, check=False, timeout=15)
        if r.returncode == 0:
            if not expect_ok:
                raise AssertionError("%s -> %s answered (it must not):\n%s" % (
                    pod.name, addr, r.stdout))
            mo = _RTT.search(r.stdout)
            return float(mo.group(1)) if mo else float("nan")
        if time.monotonic() > deadline:
            if not expect_ok:
                return None
            state = ""
            if diagnose:
                m = pod.mesh
                owners = [p.node for p in m.pods if addr in (p.addr4, p.addr6)]
                state = "\n" + "\n".join(m.diagnose(n) for n in [pod.node] + owners)
            raise AssertionError("pod %s on %s -> %s: no reply within %.0fs (%d tries):\n%s%s%s" % (
                pod.name, pod.node.name, addr, within, tries, r.stdout, r.stderr, state))
        time.sleep(0.2)


def preflight(build, tools=("ip", "nft", "wg", "wireguard-go", "ping")):
    """None when the scenario can run; else its exit code: 77 (skip: not root, a tool missing)
    or 1 (a binary not built in `build`), after saying why."""
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces)")
        return 77
    for tool in tools:
        if not shutil.which(tool):
            print("skipped: needs %s" % tool)
            return 77
    for b in ("meshd/meshd", "meshctl/meshctl", "cni-plugin/meshwire"):
        if not os.access(os.path.join(build, b), os.X_OK):
            print("FAIL: %s not built in %s" % (b, build))
            return 1
    return None


def run_and_clean(m, body, what="cleanup: close() leaves nothing"):
    """body(m), then m.close() (also when body raised), then a check that the mesh left no
    namespace, link, process or (unless kept on purpose) temporary directory."""
    try:
        body(m)
    finally:
        try:
            m.close()
        except Exception as e:  # noqa: BLE001 - reported; the check below still runs
            print("close() raised: %s" % e)

    @check(what)
    def _():
        left = m.leftovers()
        expect(not left, "left: %s" % left)
        expect(m.t.keep_tmp or not os.path.exists(m.t.tmpdir), m.t.tmpdir)


def scenario_setup(tools=("ip", "nft", "wg", "wireguard-go", "ping")):
    """A scenario's command line (--build-dir, default the repository's build/) and preflight:
    (absolute build dir, None) when it can run, else (None, exit code)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "..", "..", "..", "build"))
    build = os.path.abspath(ap.parse_args().build_dir)
    return build, preflight(build, tools)
