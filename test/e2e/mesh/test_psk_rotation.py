#!/usr/bin/env python3
"""Cluster key (PSK) rotation without downtime (issue 14 §2) on the testbed (root; Python 3
stdlib; meshd + wireguard-go + the real CNI plugin). CTest `e2e_psk_rotation`, label e2e.

Topology: relay1 on the public segment, LAN1 behind a cone NAT (lan1a, lan1b), LAN2 behind a
symmetric NAT (lan2a, lan2b). Pod pairs pinging every 0.2 s through every step: lan1a -> lan1b
(direct, same LAN) and lan1a -> lan2a (relayed through relay1). The roll, as the README says,
by editing each running node's meshd.yaml (no restart):
  step 1  every node: the new key in psk.acceptPaths
  step 2  node by node (all but lan2b): psk.path the new key, the old one in psk.acceptPaths
  step 3  every node: psk.acceptPaths emptied; lan2b, left behind, now holds only the old key
Checks: 0 pings lost in each step; the pairs keep their paths; every node logs "cluster keys
changed" for each edit within KEY_BOUND (time printed); after step 3 relay1 and lan2a refuse
lan2b's datagrams as sealed with the retired key (the log line, meshctl status
control.retiredKey). What lan2b's pods still reach is printed, not checked: its WireGuard
sessions were set up before and a key change does not touch them (revokedNodes cuts a node
off; see the README). Prints the figures and `N passed, N failed`; exit 1 on a failure, 77 when
it cannot run here.

Usage: test_psk_rotation.py [--build-dir DIR]
"""

import os
import re
import secrets
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import (check, expect, figure, start_and_ping, report, run_and_clean,  # noqa: E402
                    scenario_setup, status, wait_for)

NODES = ["relay1", "lan1a", "lan1b", "lan2a", "lan2b"]
ROLLED = ["relay1", "lan1a", "lan1b", "lan2a"]  # lan2b is left behind at step 2
PAIRS = [("lan1a", "lan1b", "direct"), ("lan1a", "lan2a", "relay")]
# The PSK files are re-read at every config poll (2 s); one poll may just have passed, and the
# test's own log polling adds a little: 2 s + slack for the loaded host.
KEY_BOUND = 4.0
# lan2b's datagrams reach relay1 with its relay probes (every 1 s) and lan2a with its LAN pair's
# keepalive probes; the first one after step 3 is refused and logged.
REFUSED_BOUND = 8.0
STEP_S = 7.0  # pings run this long per step (5 per second)


def write_key(node, name, text):
    path = os.path.join(node.dir, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


def key_changes(m, n):
    return len(re.findall(r'msg="cluster keys changed"', m.log(m[n])))


def start_pings(pods, count):
    """One `ping -c count -i 0.2` per pair, in its pod (the topology's Proc, output in its log);
    Procs by pair."""
    return {(a, b): pods[a].netns.popen(["ping", "-4", "-n", "-c", str(count), "-i", "0.2",
                                         "-W", "2", pods[b].addr4], name="ping-roll")
            for a, b, _ in PAIRS}


def finish_pings(procs):
    """{pair: (sent, received)} once every ping exited."""
    out = {}
    for pair, p in procs.items():
        try:
            p.popen.wait(timeout=STEP_S + 30)
        except subprocess.TimeoutExpired:
            p.stop()
        with open(p.log_path, errors="replace") as f:
            text = f.read()
        mo = re.search(r"(\d+) packets transmitted, (\d+) received", text)
        out[pair] = (int(mo.group(1)), int(mo.group(2))) if mo else (0, 0)
    return out


def edit_and_time(m, edits):
    """Applies edits [(node, fn(cfg))] in order (0.3 s apart: node by node), then waits until
    each edited node logged one more "cluster keys changed"; the slowest time, in seconds."""
    before = {n: key_changes(m, n) for n, _ in edits}
    t_edit = {}
    for n, fn in edits:
        fn(m.configs[n])
        m.write_config(m[n])
        t_edit[n] = time.monotonic()
        time.sleep(0.3)
    took = {}
    deadline = time.monotonic() + KEY_BOUND + 1.0
    while len(took) < len(edits) and time.monotonic() < deadline:
        for n, _ in edits:
            if n not in took and key_changes(m, n) > before[n]:
                took[n] = time.monotonic() - t_edit[n]
        time.sleep(0.05)
    missing = [n for n, _ in edits if n not in took]
    expect(not missing, "no 'cluster keys changed' logged by %s" % missing)
    slowest = max(took.values()) if took else 0.0
    expect(slowest <= KEY_BOUND, "a key change took %.2fs (bound %.1fs): %s" % (
        slowest, KEY_BOUND, took))
    return slowest


PODS = {}  # run_roll's pods, for restart_after_roll


def run_roll(m, roll=True):
    st = {}
    pods = PODS
    old_path = {n: m.configs[n]["psk"]["path"] for n in NODES}
    new_key = secrets.token_hex(32)
    new_path = {n: write_key(m[n], "psk.new", new_key) for n in NODES}

    @check("meshd starts on 5 nodes; lan1a-lan1b direct, lan1a-lan2a relayed; pods ping")
    def _():
        start_and_ping(m, PAIRS, pods, NODES[1:],
                       more_pings=[("lan2b", "lan1a", "relay"), ("lan2b", "lan2a", "direct")])
        s = status(m, "lan1a")["clusterKeys"]
        expect(s["accept"] == [] and s["seal"], s)
        st["old_fp"] = s["seal"]
        st["ok"] = True

    if "ok" not in st or not roll:
        return

    def step(name, edits, after=None):
        @check("%s: 0 pod pings lost, pairs keep their paths" % name)
        def _():
            count = int(STEP_S * 5)
            procs = start_pings(pods, count)
            try:
                time.sleep(1.0)
                took = edit_and_time(m, edits)
                figure("%s: key change in effect (slowest node)" % name, "%.2fs" % took)
                if after:
                    after()
            finally:
                res = finish_pings(procs)
            for (a, b), (sent, got) in sorted(res.items()):
                figure("%s: pings %s -> %s sent / lost" % (name, a, b), "%d / %d" % (
                    sent, sent - got))
                expect(sent == count and got == sent, "%s -> %s: %d sent, %d received" % (
                    a, b, sent, got))
            got_paths = {(a, b): m.paths(m[a]).get(b) for a, b, _ in PAIRS}
            expect(all(got_paths[(a, b)] == p for a, b, p in PAIRS), got_paths)

    def accept(paths):
        return lambda cfg: cfg["psk"].update({"acceptPaths": paths})

    # Step 1: every node accepts the new key (lan2b too).
    step("step 1 (accept the new key everywhere)",
         [(n, accept([new_path[n]])) for n in NODES])

    @check("after step 1: every node seals with the old key and accepts the new one")
    def _():
        for n in NODES:
            s = status(m, n)["clusterKeys"]
            expect(s["seal"] == st["old_fp"] and len(s["accept"]) == 1, (n, s))
        st["new_fp"] = status(m, "lan1a")["clusterKeys"]["accept"][0]

    # Step 2: node by node, the new key seals and the old one is accepted (lan2b forgotten).
    def swap(n):
        return lambda cfg: cfg["psk"].update({"path": new_path[n], "acceptPaths": [old_path[n]]})

    def opened_accept():
        figure("step 2: relay1 control datagrams opened seal / accept", "%s / %s" % (
            status(m, "relay1")["control"]["openedSeal"],
            status(m, "relay1")["control"]["openedAccept"]))
    step("step 2 (seal with the new key, node by node)", [(n, swap(n)) for n in ROLLED],
         after=opened_accept)

    # Step 3: the old key dropped; lan2b holds only the old key.
    edits = [(n, accept([])) for n in ROLLED] + [("lan2b", accept([]))]
    step("step 3 (drop the old key everywhere)", edits)

    @check("after step 3: lan2b, left on the old key, is refused by others (log + counter)")
    def _():
        lan2b_addrs = {m["lan2b"].addr4, m.t.router_of(m["lan2b"]).addr4}

        def refused():
            got = {}
            for n in ("relay1", "lan2a"):
                c = status(m, n)["control"].get("retiredKey", 0)
                lines = [ln for ln in m.log(m[n]).splitlines()
                         if "sealed with a retired cluster key" in ln]
                from_lan2b = [ln for ln in lines if any(a in ln for a in lan2b_addrs)]
                got[n] = (c, len(lines), len(from_lan2b))
            return all(c > 0 and k > 0 for c, _, k in got.values()), got
        got, dt = wait_for("relay1 and lan2a refuse lan2b", refused, REFUSED_BOUND)
        figure("lan2b refused as retired (relay1, lan2a: counter, log lines, naming lan2b)",
               "%s after %.2fs" % (got, dt))
        line = [ln for ln in m.log(m["relay1"]).splitlines()
                if "sealed with a retired cluster key" in ln][0]
        figure("relay1's log line", line[line.find("msg="):][:240])
        expect(st.get("old_fp") and st["old_fp"] in line, "fingerprint of the old key in %s" % line)
        for n in ROLLED:
            s = status(m, n)["clusterKeys"]
            expect(s["seal"] == st["new_fp"] and s["accept"] == [] and s["retired"] == st["old_fp"],
                   (n, s))
        # What lan2b's pods still reach: WireGuard sessions set up before the roll are not a
        # key's to end (a figure; revokedNodes is what cuts a node off).
        r = pods["lan2b"].ping(pods["lan1a"].addr4, count=3, timeout=1, check=False)
        mo = re.search(r"(\d+) received", r.stdout)
        figure("lan2b pod -> lan1a pod after step 3 (existing WireGuard session)",
               "%s of 3 answered" % (mo.group(1) if mo else "?"))


def restart_after_roll(m, pods):
    """MESH_PSK_RESTART=1 (not part of the CTest run): lan2a's meshd restarted after the roll
    (it then derives relayed-pair probe keys from the new key, its peers still from the one they
    started with: the known limit in docs/architecture.md), and the relayed pair's pings
    measured; MESH_PSK_RESTART=baseline: the same restart without a roll. Figures, not checks."""
    before = {n: probe_counters(m, n) for n in ("lan1a", "lan2a")}
    m.stop(m["lan2a"])
    m.start(m["lan2a"])
    t0 = time.monotonic()
    procs = start_pings({"lan1a": pods["lan1a"], "lan2a": pods["lan2a"], "lan1b": pods["lan1b"]},
                        int(STEP_S * 5) * 3)
    res = finish_pings(procs)
    with open(procs[("lan1a", "lan2a")].log_path, errors="replace") as f:
        seqs = {int(x) for x in re.findall(r"icmp_seq=(\d+)", f.read())}
    lost = sorted(set(range(1, int(STEP_S * 5) * 3 + 1)) - seqs)
    figure("lan2a restarted: lan1a->lan2a lost icmp_seq", lost)
    figure("lan2a restarted: pings over the next %.0fs (sent / lost)" % (
        time.monotonic() - t0), {"%s->%s" % k: "%d / %d" % (a, a - b) for k, (a, b) in res.items()})
    figure("lan2a restarted: lan1a's path to lan2a", m.paths(m["lan1a"]).get("lan2a"))
    figure("lan2a restarted: probe frames dropped / relay failovers, before -> after",
           {n: "%s -> %s" % (before[n], probe_counters(m, n)) for n in ("lan1a", "lan2a")})


def probe_counters(m, n):
    fetch = ("import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
             "'http://127.0.0.1:9464/metrics',timeout=5).read().decode())")
    r = m[n].run([sys.executable, "-c", fetch], check=False, timeout=15)
    out = []
    for name in ("meshwire_probe_frames_dropped_total", "meshwire_relay_failovers_total"):
        mo = re.search(r"^%s\s+(\S+)$" % name, r.stdout, re.M)
        out.append(mo.group(1) if mo else "?")
    return "/".join(out)


def main():
    from mesh import Mesh
    build, rc = scenario_setup()
    if rc is not None:
        return rc
    t_start = time.monotonic()
    restart = os.environ.get("MESH_PSK_RESTART") in ("1", "baseline")
    ov = {n: {"config": {"metrics": {"listen": "127.0.0.1:9464"}}} for n in ("lan1a", "lan2a")}
    m = Mesh(build_dir=build, nodes=NODES, overrides=ov if restart else None,
             topology_args={"relays": 1, "lans": ["cone", "symmetric"], "nodes_per_lan": 2,
                            "keep_tmp": bool(os.environ.get("MESH_KEEP"))})
    def body(m):
        run_roll(m, roll=os.environ.get("MESH_PSK_RESTART") != "baseline")
        if os.environ.get("MESH_PSK_RESTART") in ("1", "baseline") and PODS:
            restart_after_roll(m, PODS)
    run_and_clean(m, body)
    return report(t_start, 60)


if __name__ == "__main__":
    sys.exit(main())
