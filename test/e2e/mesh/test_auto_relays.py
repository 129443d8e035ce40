#!/usr/bin/env python3
"""A cluster with no relayNodes on the testbed (root; Python 3 stdlib; meshd + wireguard-go + the
real CNI plugin). CTest `e2e_auto_relays`, label e2e.

Topology (mesh.py's default): relay1, relay2 on the public segment, LAN1 behind a cone NAT (lan1a,
lan1b), LAN2 behind a symmetric NAT (lan2a, lan2b). No node has relayNodes; every node has
`dht.bootstrap: [relay1's v4 and v6 addresses]` and nothing else about the cluster. Checks:

  offer      relay1 and relay2 (public addresses) offer to relay, are dialled back and serve
             (relayRoleState active, the reason names "no relayNodes configured"); the LAN nodes
             (private addresses only) do not offer (state none)
  found      every LAN node lists exactly two relays, up: relay1 (origin bootstrap, one entry
             with both addresses) and relay2 (origin discovered: it is in no file, only in its
             own record)
  paths      within a LAN direct, across LANs relayed through one of the two, relays direct
  pods       pods ping across the LANs (v4, v6) and within a LAN
  failover   the relay lan1a uses for lan2a is killed (SIGKILL): the pods ping again through the
             other, found relay; the outage is printed
then close() leaves nothing. Every deadline is a failure (bounds in checks.py, each with its
reason); a pod ping that misses its deadline prints both nodes' state. Prints `N passed, N
failed`; exit 1 on a failure, 77 when it cannot run here.

Usage: test_auto_relays.py [--build-dir DIR]
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import (run_mesh_scenario, ALL, FAILOVER_BOUND, LAN_NODES, PATHS_BOUND, READY_BOUND,  # noqa: E402
                    RELAYS, ROLE_BOUND, check, expect, figure, lan_of, peers_by_name,
                    ping_retry, relays_of, status,
                    time_to_reply, wait_for, watch_recovery)


def main():
    return run_mesh_scenario(run_mesh, 52)


def run_mesh(m):
    # Both of relay1's addresses: one node, so one relay entry (merged once its PONGs name it).
    seed = [m["relay1"].addr4, m["relay1"].addr6]
    for n in ALL:
        m.configs[n]["relayNodes"] = []
        m.configs[n]["dht"] = {"enable": False, "bootstrap": seed}
        m.write_config(m[n])
    st = {}
    pods = {}

    @check("no relayNodes: public nodes offer, are dialled back and serve")
    def _():
        t0 = time.monotonic()
        m.start()
        m.wait_ready(timeout=READY_BOUND)

        def roles():
            s = {n: status(m, n)["node"] for n in ALL}
            ok = all(s[r]["relayRoleState"] == "active" for r in RELAYS)
            return ok, {n: (v["relayRoleState"], v["relayRoleReason"]) for n, v in s.items()}
        _, dt = wait_for("relay roles", roles, ROLE_BOUND)
        figure("public nodes serving (from start)", "%.2fs" % (time.monotonic() - t0))
        for r in RELAYS:
            node = status(m, r)["node"]
            expect("advertiseAddress reachable" in (node["relayRoleReason"] or ""),
                   "%s: reason %r" % (r, node["relayRoleReason"]))
            expect(any(line for line in m.log(m[r]).splitlines()
                       if "relay role verifying" in line and "no relayNodes configured" in line),
                   "%s: no 'relay role verifying ... no relayNodes configured' log line" % r)
            expect(node["relayVerified"], "%s: nothing dialled back" % r)
        for n in LAN_NODES:
            node = status(m, n)["node"]
            expect(node["relayRoleState"] == "none",
                   "%s (private addresses only) offers: %s (%s)" % (
                       n, node["relayRoleState"], node["relayRoleReason"]))
        st["roles"] = dt
        return "after %.2fs" % dt

    if "roles" not in st:
        return

    @check("found: relay1 (bootstrap) and relay2 (discovered) up on every LAN node")
    def _():
        def found():
            bad = {}
            for n in LAN_NODES:
                rs = m.meshctl(m[n], "relays")["relays"]
                got = sorted((v["name"], v["origin"], v["state"]) for v in rs)
                if got != [("relay1", "bootstrap", "up"), ("relay2", "discovered", "up")]:
                    bad[n] = got
            return not bad, bad
        # relay2 is found in its record, which the LAN nodes get from relay1 with their next
        # HELLO (every 10 s) at the latest, and up on its first PONG: as for PATHS_BOUND.
        _, dt = wait_for("relays found", found, PATHS_BOUND)
        figure("both relays up on every LAN node (after roles)", "%.2fs" % dt)
        for n in LAN_NODES:
            rs = relays_of(m, n)
            for r in RELAYS:
                expect(set(rs[r]["addresses"]) == {m[r].addr4, m[r].addr6},
                       "%s: %s addresses %s" % (n, r, rs[r]["addresses"]))

    @check("paths: within a LAN direct, across LANs relayed, relays direct")
    def _():
        t0 = time.monotonic()
        want = {(a, b): ("relay" if lan_of(a) and lan_of(b) and lan_of(a) != lan_of(b)
                         else "direct") for a in ALL for b in ALL if a != b}
        m.wait_paths(want, timeout=PATHS_BOUND)
        figure("all 30 paths settled", "%.2fs" % (time.monotonic() - t0))
        used = set()
        for a in LAN_NODES:
            for b, p in peers_by_name(m, a).items():
                if p["path"] == "relay":
                    expect(p["relay"] in RELAYS, "%s -> %s via %r" % (a, b, p["relay"]))
                    used.add(p["relay"])
        figure("relays carrying cross-LAN pairs", ",".join(sorted(used)))
        st["paths"] = True

    if "paths" not in st:
        return

    @check("pods: ping across the LANs (v4, v6) and within a LAN")
    def _():
        for n in LAN_NODES:
            pods[n] = m.add_pod(m[n], "p")
        out = []
        for a, b in (("lan1a", "lan2a"), ("lan2b", "lan1b"), ("lan1a", "lan1b")):
            for fam in ("addr4", "addr6"):
                # The pair's first pod traffic: ping_retry's HANDSHAKE_BOUND.
                rtt = ping_retry(pods[a], getattr(pods[b], fam), watch=30)
                out.append("%s->%s v%s %.2fms" % (a, b, fam[-1], rtt))
        figure("pod ping avg RTT", "; ".join(out))
        st["pods"] = True

    if "pods" not in st:
        return

    @check("failover: the relay in use is killed; pods ping through the found other one")
    def _():
        used = peers_by_name(m, "lan1a")["lan2a"]["relay"]
        other = "relay2" if used == "relay1" else "relay1"
        t_kill = time.monotonic()  # the outage counts from here: m.kill waits for the exit
        m.kill(m[used])
        left = FAILOVER_BOUND - (time.monotonic() - t_kill)
        if time_to_reply(pods["lan1a"], pods["lan2a"].addr4, left) is None:
            diag = "\n".join(m.diagnose(m[n]) for n in ("lan1a", "lan2a"))
            raise AssertionError("no pod reply within %g s after %s died; %s\n%s" % (
                FAILOVER_BOUND, used, watch_recovery(pods["lan1a"], pods["lan2a"].addr4), diag))
        outage = time.monotonic() - t_kill
        figure("pod traffic again after %s died (ping -W 0.2 loop)" % used, "%.2fs" % outage)

        def moved():
            a = peers_by_name(m, "lan1a")["lan2a"]
            b = peers_by_name(m, "lan2a")["lan1a"]
            return (a["relay"] == other and b["relay"] == other), (a["relay"], b["relay"])
        # Both ends left the dead relay within FAILOVER_BOUND (the pods answered): meshctl
        # shows it by now.
        wait_for("pair on %s" % other, moved, FAILOVER_BOUND)
        ping_retry(pods["lan2b"], pods["lan1b"].addr6, watch=30)
        return "%s died, pair on %s, pods answered after %.2fs" % (used, other, outage)


if __name__ == "__main__":
    sys.exit(main())
