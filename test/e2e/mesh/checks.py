"""Shared scaffolding of the mesh e2e scenarios (test_mesh, test_failover, test_relays_runtime):
the default mesh's node names, PASS/FAIL checks that run at once and do not stop each other,
figures, the final report, meshctl shortcuts and a retrying pod ping. Python 3 stdlib."""

import os
import re
import shutil
import time

LAN_NODES = ["lan1a", "lan1b", "lan2a", "lan2b"]
RELAYS = ["relay1", "relay2"]
ALL = RELAYS + LAN_NODES
RELAY_PORT = 51821
WG_PORT = 51820

results = []  # (check name, passed)
figures = []  # (what, value), printed again by report()


def check(name):
    """Runs the check at once and records PASS/FAIL (a failure does not stop the others)."""
    def deco(fn):
        t0 = time.monotonic()
        try:
            msg = fn()
            results.append((name, True))
            print("PASS %-58s %5.2fs %s" % (name, time.monotonic() - t0, msg or ""), flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            results.append((name, False))
            print("FAIL %-58s %5.2fs %s: %s" % (name, time.monotonic() - t0,
                                                type(e).__name__, e), flush=True)
        return fn
    return deco


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


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
