#!/usr/bin/env python3
"""meshd killed with SIGKILL and restarted (issue 14 §3) on the testbed (root; Python 3 stdlib;
meshd + wireguard-go + the real CNI plugin). CTest `e2e_meshd_restart`, label e2e.

Topology: relay1 on the public segment, LAN1 behind a cone NAT (lan1a, lan1b), LAN2 behind a
symmetric NAT (lan2a, lan2b). Pods ping every 0.1 s: lan1a -> lan1b (direct) and lan1a -> lan2a
(relayed through relay1). meshd is killed with SIGKILL, left dead DOWN_S seconds and started
again, on
  (a) lan1b   one end of the direct pair: 0 pings lost (checked);
  (b) relay1  the only relay: the relayed pair is down while relay1's meshd is; from the restart
              to its first answered ping <= RESUME_BOUND (1 s, checked): the restarted relay
              serves at once on the role it saved (relay_role_file, log "relay role active"
              reason=restarted), then is dialled back again;
  (c) lan2a   one end of the relayed pair: from the restart to its first answered ping
              <= RESUME_BOUND (1 s, checked);
  (d) lan1b   again, dead LONG_DOWN_S (6 s, beyond the 3.5 s path timeout): 0 pings lost (lan1a
              keeps the direct path on WireGuard's rx and logs "path kept").
Each time, on the killed node (userspace backend): the same wireguard-go pid serves before and
after, there is no second wireguard-go and no other socket than its own, `wg show` peers and
allowed-ips and the routes through the interface are unchanged, the restarted meshd logged
"wireguard-go adopted". The direct pair loses nothing in any of the three. Last, a clean stop
(SIGTERM) of lan1b's meshd still ends its wireguard-go and removes its socket and interface.
Prints the figures and `N passed, N failed`; exit 1 on a failure, 77 when it cannot run here.

Usage: test_meshd_restart.py [--build-dir DIR]
"""

import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import (READY_BOUND, check, expect, figure, print_logs, report,  # noqa: E402
                    run_and_clean, scenario_setup, start_and_ping)

NODES = ["relay1", "lan1a", "lan1b", "lan2a", "lan2b"]
PAIRS = [("lan1a", "lan1b", "direct"), ("lan1a", "lan2a", "relay")]
# meshd dead this long in (a)-(c): below the peers' path timeout (path_timeout_ms, 3.5 s).
DOWN_S = 2.0
# (d): longer than the path timeout. lan1a's probes to lan1b go unanswered, but WireGuard's rx from
# lan1b keeps growing on the direct endpoint, so lan1a keeps the direct path (peer_paths, "path
# kept"). Before that rule lan1a moved the pair to the relay at 3.5 s, which lan1b's dead meshd
# cannot use: with 3 s down the direct pair lost 42 of 90 pings.
LONG_DOWN_S = 6.0
AFTER_S = 4.0  # pings go on this long after the restart
INTERVAL = 0.1
# Issue 14 §3 wants a relayed pair back within 1 s of the restart of one of its nodes' meshd.
# The restarted meshd reads the kept device first: a peer it sent to through a relay proxy socket
# gets its relay session at once, not after the 1 s direct grace (node_core::on_relayed_before).
# Measured 0.14 s (was 1.19 s with the grace). (b): a restarted relay serves at once on its saved
# role; before, it verified its address again and refused the session requests meanwhile, which
# the nodes retried ~1 s later (1.25-1.59 s measured).
RESUME_BOUND = 1.0
WG_RUN_DIR = "/run/wireguard"
PEERS_BOUND = 10.0  # before a kill: every other node's peer on the device (waited for, not checked)


def wireguard_go_pids(node):
    """Pids of the wireguard-go processes serving node's interface (any namespace)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"wireguard-go" and \
                node.wg_ifname.encode() in argv:
            out.append(int(d))
    return sorted(out)


def sockets(node):
    d = node.private_path(WG_RUN_DIR)
    try:
        return sorted(x for x in os.listdir(d) if x.endswith(".sock"))
    except FileNotFoundError:
        return []


def data_path(node):
    """What must not change across the restart: peers with their allowed-ips, and the routes."""
    allowed = node.run(["wg", "show", node.wg_ifname, "allowed-ips"]).stdout
    routes = [node.run(["ip", fam, "route", "show", "dev", node.wg_ifname]).stdout
              for fam in ("-4", "-6")]
    return {"allowed-ips": sorted(allowed.split("\n")), "routes": [sorted(r.split("\n"))
                                                                   for r in routes]}


def adoptions(m, node):
    return len(re.findall(r'msg="wireguard-go adopted"', m.log(node)))


def start_pings(pods, count):
    return {(a, b): pods[a].netns.popen(["ping", "-4", "-n", "-D", "-O", "-c", str(count), "-i",
                                         str(INTERVAL), "-W", "1", pods[b].addr4],
                                        name="ping-restart")
            for a, b, _ in PAIRS}


_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", re.M)


def ping_result(proc, count, t_restart):
    """(lost seqs, seconds from t_restart until the pair answered again after its last loss;
    0 when it was answering at the restart)."""
    try:
        proc.popen.wait(timeout=count * INTERVAL + 30)
    except Exception:  # noqa: BLE001 - a hung ping counts its missing replies as lost
        proc.stop()
    with open(proc.log_path, errors="replace") as f:
        text = f.read()
    replies = {int(s): float(ts) for ts, s in _REPLY.findall(text)}
    lost = sorted(set(range(1, count + 1)) - set(replies))
    if not lost:
        return lost, 0.0
    back = [ts for seq, ts in replies.items() if seq > lost[-1]]
    if not back:
        return lost, None
    return lost, max(0.0, min(back) - t_restart)


def restart_case(m, pods, name, st, down_s=None):
    down_s = DOWN_S if down_s is None else down_s
    node = m[name]
    # The mesh is up once the pinged pairs answer; a loaded host may still be installing the
    # other peers (seen: lan1b got lan2b's peer during case (a), and "changed" failed it).
    deadline = time.monotonic() + PEERS_BOUND
    while time.monotonic() < deadline and len(node.run(
            ["wg", "show", node.wg_ifname, "peers"]).stdout.split()) < len(NODES) - 1:
        time.sleep(0.1)
    before = {"pids": wireguard_go_pids(node), "socks": sockets(node), "dp": data_path(node),
              "adopted": adoptions(m, node)}
    count = int((1.0 + down_s + AFTER_S + 1.0) / INTERVAL)
    procs = start_pings(pods, count)
    time.sleep(1.0)
    m.kill(node)
    time.sleep(down_s)
    during = wireguard_go_pids(node)
    t_restart = time.time()
    m.start(node)
    m.wait_ready(timeout=READY_BOUND, nodes=[node])
    figure("(%s) meshd restarted: ready after" % name, "%.2fs" % (time.time() - t_restart))
    res = {pair: ping_result(p, count, t_restart) for pair, p in procs.items()}
    after = {"pids": wireguard_go_pids(node), "socks": sockets(node), "dp": data_path(node),
             "adopted": adoptions(m, node)}
    for (a, b), (lost, back) in sorted(res.items()):
        figure("(%s) %s -> %s: pings sent / lost" % (name, a, b), "%d / %d" % (count, len(lost)))
        figure("(%s) %s -> %s: from restart to answering" % (name, a, b),
               "never" if back is None else "%.2fs" % back)
    st[name] = st[(name, down_s)] = {"before": before, "during": during, "after": after, "res": res,
                                     "t_restart": t_restart}
    return st[name]


def resumed(m, c, back, lost):
    """The relayed pair lan1a -> lan2a answered within RESUME_BOUND of the restart; if not, what
    its ends and the relay logged about it from the restart on."""
    if back is None or back > RESUME_BOUND:
        t = c["t_restart"]
        print_logs(m, ["relay1", "lan1a", "lan2a"], t - 0.5,
                   t + (back if back is not None else AFTER_S) + 0.5,
                   about=("lan1a", "lan2a", "relay1"))
    expect(back is not None and back <= RESUME_BOUND,
           "relayed pair answered %s after the restart (bound %.1fs; lost %s)" % (
               "never" if back is None else "%.2fs" % back, RESUME_BOUND, lost))


def check_kept(m, name, c):
    b, a = c["before"], c["after"]
    expect(len(b["pids"]) == 1, "wireguard-go before: %s" % b["pids"])
    expect(c["during"] == b["pids"], "wireguard-go while meshd was dead: %s (before %s)" % (
        c["during"], b["pids"]))
    expect(a["pids"] == b["pids"], "wireguard-go after: %s (before %s)" % (a["pids"], b["pids"]))
    expect(a["socks"] == b["socks"] and len(a["socks"]) == 1, "sockets %s -> %s" % (
        b["socks"], a["socks"]))
    expect(a["dp"] == b["dp"], "peers/routes changed:\n%s\n->\n%s" % (b["dp"], a["dp"]))
    # m.log() holds the current process's log (then it has exactly one) or all of them (one more).
    expect(a["adopted"] in (1, b["adopted"] + 1), "'wireguard-go adopted' not logged by %s" % name)


def body(m):
    st = {}
    pods = {}

    @check("meshd on 5 nodes (userspace); lan1a-lan1b direct, lan1a-lan2a relayed; pods ping")
    def _():
        start_and_ping(m, PAIRS, pods, NODES[1:])
        st["ok"] = True

    if "ok" not in st or m.wg_backend != "userspace":
        return

    @check("(a) lan1b's meshd killed 2 s: direct pair loses 0 pings; wireguard-go adopted")
    def _():
        c = restart_case(m, pods, "lan1b", st)
        for pair, (lost, _) in c["res"].items():
            expect(not lost, "%s lost icmp_seq %s" % (pair, lost))
        check_kept(m, "lan1b", c)

    @check("(b) relay1's meshd killed 2 s: relayed pair answers <= %.1f s after the restart; "
           "served on its saved role" % RESUME_BOUND)
    def _():
        c = restart_case(m, pods, "relay1", st)
        lost, back = c["res"][("lan1a", "lan1b")]
        expect(not lost, "direct pair lost icmp_seq %s" % lost)
        lost, back = c["res"][("lan1a", "lan2a")]
        resumed(m, c, back, lost)
        log = m.log(m["relay1"])
        expect(re.search(r'msg="relay role active" node=relay1 reason=restarted', log),
               "relay1 did not serve on its saved role")
        expect(re.search(r'msg="advertiseAddress dialled back again"', log),
               "relay1 was not dialled back again after the restart")
        check_kept(m, "relay1", c)

    @check("(c) lan2a's meshd killed 2 s: relayed pair answers <= %.1f s after the restart" %
           RESUME_BOUND)
    def _():
        c = restart_case(m, pods, "lan2a", st)
        lost, _ = c["res"][("lan1a", "lan1b")]
        expect(not lost, "direct pair lost icmp_seq %s" % lost)
        lost, back = c["res"][("lan1a", "lan2a")]
        resumed(m, c, back, lost)
        check_kept(m, "lan2a", c)

    @check("(d) lan1b's meshd killed %.0f s (> the 3.5 s path timeout): direct pair loses 0 pings"
           % LONG_DOWN_S)
    def _():
        c = restart_case(m, pods, "lan1b", st, down_s=LONG_DOWN_S)
        lost, _ = c["res"][("lan1a", "lan1b")]
        if lost:
            t = c["t_restart"]
            print_logs(m, ["lan1a", "lan1b"], t - LONG_DOWN_S - 0.5, t + AFTER_S,
                       about=("lan1a", "lan1b"), limit=80)
        expect(not lost, "direct pair lost icmp_seq %s" % lost)
        expect(re.search(r'msg="path kept" peer=lan1b path=direct', m.log(m["lan1a"])),
               "lan1a did not log 'path kept' for lan1b")
        check_kept(m, "lan1b", c)

    @check("clean stop (SIGTERM) of lan1b's meshd ends wireguard-go, its socket and interface")
    def _():
        node = m["lan1b"]
        pids = wireguard_go_pids(node)
        expect(len(pids) == 1, pids)
        m.stop(node)
        deadline = time.monotonic() + 3.0
        while wireguard_go_pids(node) and time.monotonic() < deadline:
            time.sleep(0.05)
        expect(not wireguard_go_pids(node), "still running: %s" % wireguard_go_pids(node))
        expect(not sockets(node), "sockets left: %s" % sockets(node))
        r = node.run(["ip", "link", "show", node.wg_ifname], check=False)
        expect(r.returncode != 0, "interface left: %s" % r.stdout)


def main():
    from mesh import Mesh
    build, rc = scenario_setup()
    if rc is not None:
        return rc
    t_start = time.monotonic()
    m = Mesh(build_dir=build, nodes=NODES, wg_backend="userspace",
             topology_args={"relays": 1, "lans": ["cone", "symmetric"], "nodes_per_lan": 2,
                            "keep_tmp": bool(os.environ.get("MESH_KEEP"))})
    run_and_clean(m, body)
    return report(t_start, 56)


if __name__ == "__main__":
    sys.exit(main())
