#!/usr/bin/env python3
"""A stalled WireGuard device does not stall meshd's core (root; Python 3 stdlib; meshd +
wireguard-go + the real CNI plugin). CTest `e2e_wg_stall`, label e2e.

meshd talks to wireguard-go over its UAPI socket, and a request to a process that does not answer
blocks until its 30 s timeout. Such calls run on meshd's WireGuard thread, not on the thread that
drives the core's 100 ms relay probes and answers meshctl. On the default mesh, lan1a's
wireguard-go is stopped (SIGSTOP) for 3 s while meshd's 2 s device poll asks it for its state:

  blocked    `wg show` on lan1a's interface does not answer while it is stopped (the stop is real)
  core       meshd answers `meshctl status` throughout, each answer within 1 s (was: no answer
             until wireguard-go came back), and logs no "woken late" stall for the window
  relays     lan1a's relays stay up and its relayed pair keeps its path
  after      once continued, meshctl peers shows the device's state again (the read finished)
then close() leaves nothing. Prints `N passed, N failed`; exit 1 on a failure, 77 when it cannot
run here.

Usage: test_wg_stall.py [--build-dir DIR]
"""

import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import (run_mesh_scenario, check, expect, figure, relays_of)  # noqa: E402


STOP_S = 3.0


def wireguard_go_pid(ifname):
    """The wireguard-go process serving `ifname` (meshd's child, `wireguard-go -f IFNAME`)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"wireguard-go" and ifname.encode() in argv:
            return int(pid)
    return None


def stall_lines(m, node):
    return [line for line in m.log(node).splitlines() if "woken late" in line]


def main():
    return run_mesh_scenario(run_mesh, 52)


def run_mesh(m):
    a = m["lan1a"]
    m.start()
    m.wait_ready(timeout=20)
    m.wait_paths({("lan1a", "lan2a"): "relay", ("lan1a", "lan1b"): "direct"}, timeout=40)
    # Past the start-up (its first wakeups may be late on a loaded machine).
    time.sleep(2.0)
    pid = wireguard_go_pid(a.wg_ifname)
    stalls_before = len(stall_lines(m, a))
    latencies = []
    wg_answered = []

    @check("wireguard-go stopped: wg show blocks, meshd answers meshctl within 1 s throughout")
    def _():
        expect(pid is not None, "no wireguard-go for %s" % a.wg_ifname)
        if pid is None:
            return
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            # The stop is real: a UAPI read does not answer.
            try:
                a.run(["timeout", "1", "wg", "show", a.wg_ifname], check=True, timeout=5)
                wg_answered.append(True)
            except (RuntimeError, subprocess.SubprocessError):  # node.run raises RuntimeError
                wg_answered.append(False)
            while time.monotonic() - t0 < STOP_S:
                t1 = time.monotonic()
                st = m.meshctl(a, "status", check=False, timeout=10)
                latencies.append((time.monotonic() - t1, st is not None))
                time.sleep(0.2)
        finally:
            os.kill(pid, signal.SIGCONT)
        expect(wg_answered == [False], "wg show answered a stopped wireguard-go")
        worst = max(t for t, _ in latencies) if latencies else None
        figure("meshctl status answers during the stop", len(latencies))
        figure("slowest meshctl status during the stop", "%.3fs" % worst if latencies else "-")
        expect(latencies and all(ok for _, ok in latencies), "meshctl status failed: %s"
               % latencies)
        expect(latencies and worst < 1.0, "meshctl status took %.2fs" % (worst or 0))

    @check("no core stall, relays up and the relayed pair kept across the stop")
    def _():
        time.sleep(1.0)
        new = stall_lines(m, a)[stalls_before:]
        expect(not new, "meshd logged stalls: %s" % new)
        rel = relays_of(m, "lan1a")
        expect(all(r["state"] == "up" for r in rel.values()),
               {n: r["state"] for n, r in rel.items()})
        expect(m.paths(a).get("lan2a") == "relay", m.paths(a))

    @check("after SIGCONT meshctl peers shows the device's state again")
    def _():
        deadline = time.monotonic() + 10
        peers = []
        while time.monotonic() < deadline:
            peers = m.meshctl(a, "peers")["peers"]
            if any(p.get("lastHandshake") for p in peers):
                break
            time.sleep(0.5)
        expect(any(p.get("lastHandshake") for p in peers),
               [(p["name"], p.get("lastHandshake")) for p in peers])


if __name__ == "__main__":
    sys.exit(main())
