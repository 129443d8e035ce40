#!/usr/bin/env python3
"""Route authority on the testbed (root; Python 3 stdlib; meshd + wireguard-go + the real CNI
plugin). CTest `e2e_routes`, label e2e. Issue 17, route hijack.

Topology (mesh.py's default): relay1, relay2 public; lan1a, lan1b (cone NAT); lan2a, lan2b
(symmetric NAT). Every node's meshd.yaml has clusterCIDRs 10.244.0.0/16 and fd00:244::/32 (mesh.py)
and lan1a serves metrics. lan2b plays a stolen node: its meshd.yaml has no clusterCIDRs and
nodeCIDRMaskSize 1, so its own meshd accepts podCIDRs that, besides its own pair, claim lan1a's
/24 as two /25s, lan1b's /24 exactly, 8.0.0.0/8, 128.0.0.0/1 (half the underlay) and lan2a's
IPv6 /64 exactly. It starts after the others have met (so the victims' blocks are pinned to them
everywhere). Checks:

  refused    every other node lists lan2b with podCIDRs = its own pair only and the six others in
             refusedCIDRs, each with the reason that node must give (its own block: overlaps_own)
  not routed no other node has a route for a hostile prefix, `wg show allowed-ips` gives lan2b's
             key only its own pair, the victims' keys keep theirs, and `ip route get 8.8.8.8` does
             not leave through the WireGuard interface
  reachable  a pod on lan2a still reaches the victims' pods on lan1a (v4, in the hijacked /25)
             and lan1b (v4), and lan1a's pod reaches lan2a's pod over v6
  counted    lan1a's metrics: meshwire_pod_cidrs_refused_total{reason} = 2 wrong_block_size,
             2 outside_cluster, 2 overlaps_peer; its log has each refusal exactly once
then close() leaves nothing. Prints `N passed, N failed`; exit 1 on a failure, 77 when it cannot
run here.

Usage: test_routes.py [--build-dir DIR]
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import (run_mesh_scenario, PATHS_BOUND, READY_BOUND, check, expect, figure, peers_by_name,  # noqa: E402
                    ping_retry, refusal_counts, wait_for)
from mesh import pod_cidrs  # noqa: E402

METRICS = "127.0.0.1:9464"
THIEF = "lan2b"
OTHERS = ["relay1", "relay2", "lan1a", "lan1b", "lan2a"]
# Mesh numbers (mesh.py pod_cidrs): relay1 1, relay2 2, lan1a 3, lan1b 4, lan2a 5, lan2b 6.
OWN = pod_cidrs(6)
HOSTILE = ["10.244.3.0/25", "10.244.3.128/25", "10.244.4.0/24", "8.0.0.0/8", "128.0.0.0/1",
           "fd00:244:5::/64"]
VICTIM_OF = {"10.244.3.0/25": "lan1a", "10.244.3.128/25": "lan1a", "10.244.4.0/24": "lan1b",
             "fd00:244:5::/64": "lan2a"}
# A record reaches every node through the relays at once (pushed on change) or with the next
# HELLO answer (10 s): the refusal is decided on the next tick.
REFUSED_BOUND = PATHS_BOUND

def expected_reason(observer, cidr):
    if VICTIM_OF.get(cidr) == observer and not cidr.endswith("/25"):
        return "overlaps_own"
    if cidr.endswith("/25"):
        return "wrong_block_size"
    if cidr in ("8.0.0.0/8", "128.0.0.0/1"):
        return "outside_cluster"
    return "overlaps_peer"


def main():
    ov = {THIEF: {"pod_cidrs": OWN + HOSTILE,
                  "config": {"clusterCIDRs": None, "nodeCIDRMaskSize": {"ipv4": 1, "ipv6": 1}}},
          "lan1a": {"config": {"metrics": {"listen": METRICS}}}}
    return run_mesh_scenario(run_mesh, 52, overrides=ov)


def run_mesh(m):
    for n in OTHERS:
        m.start(m[n])
    m.wait_ready(timeout=READY_BOUND, nodes=[m[n] for n in OTHERS])
    m.wait_paths({("lan1a", "lan2a"): "relay", ("lan1a", "lan1b"): "direct",
                  ("lan2a", "relay1"): "direct"}, timeout=PATHS_BOUND)
    m.start(m[THIEF])
    m.wait_ready(timeout=READY_BOUND, nodes=[m[THIEF]])
    t0 = time.monotonic()

    @check("every other node refuses lan2b's six hostile prefixes, each with its reason")
    def _():
        def refused_everywhere():
            got = {}
            for n in OTHERS:
                p = peers_by_name(m, n).get(THIEF)
                got[n] = p and sorted((r["cidr"], r["reason"]) for r in p["refusedCIDRs"])
                if not p or len(p["refusedCIDRs"]) != len(HOSTILE):
                    return False, got
            return True, got
        wait_for("lan2b's refusals on every node", refused_everywhere, REFUSED_BOUND)
        figure("hostile record refused everywhere after", "%.1fs" % (time.monotonic() - t0))
        for n in OTHERS:
            p = peers_by_name(m, n)[THIEF]
            expect(sorted(p["podCIDRs"]) == sorted(OWN), (n, p["podCIDRs"]))
            got = {r["cidr"]: r["reason"] for r in p["refusedCIDRs"]}
            want = {c: expected_reason(n, c) for c in HOSTILE}
            expect(got == want, (n, got, want))

    @check("no hostile prefix routed or in allowed-ips anywhere; victims keep theirs")
    def _():
        # A victim's exact block is routed (to the victim, as allowed-ips below prove); the
        # other hostile prefixes must have no route at all.
        hostile = {c for c in HOSTILE if not (VICTIM_OF.get(c) and not c.endswith("/25"))}

        def one(n):
            node = m[n]
            routes = set()
            for fam in ("-4", "-6"):
                out = node.run(["ip", fam, "route", "show", "dev", node.wg_ifname]).stdout
                routes |= {line.split()[0] for line in out.splitlines() if line.strip()}
            if routes & hostile:
                return False, ("routed", n, sorted(routes & hostile))
            peers = peers_by_name(m, n)
            keys = {p["wgPublicKey"]: name for name, p in peers.items()}
            allowed = {}
            for line in node.run(["wg", "show", node.wg_ifname, "allowed-ips"]).stdout.splitlines():
                parts = line.split()
                if parts:
                    allowed[keys.get(parts[0], parts[0])] = set(parts[1:]) - {"(none)"}
            if allowed.get(THIEF) != set(OWN):
                return False, ("thief's allowed-ips", n, allowed.get(THIEF))
            for victim in ("lan1a", "lan1b", "lan2a"):
                if victim != n and not set(pod_cidrs(m.index(m[victim]))) <= allowed.get(
                        victim, set()):
                    return False, ("victim's allowed-ips", n, victim, allowed.get(victim))
            via = node.run(["ip", "route", "get", "8.8.8.8"], check=False).stdout
            if node.wg_ifname in via:
                return False, ("8.8.8.8 via the tunnel", n, via.strip())
            return True, n

        # The thief's WireGuard peer (its own block only) appears once its path is up: a
        # relayed pair needs its relay sessions first (PATHS_BOUND).
        for n in OTHERS:
            wait_for("%s: nothing hostile routed, the thief's peer has its own block" % n,
                     lambda: one(n), PATHS_BOUND)

    @check("the victims' pods stay reachable (lan2a -> lan1a, lan1b over v4; lan1a -> lan2a v6)")
    def _():
        src = m.add_pod(m["lan2a"], "src")
        a = m.add_pod(m["lan1a"], "victim-a")
        b = m.add_pod(m["lan1b"], "victim-b")
        ping_retry(src, a.addr4)
        ping_retry(src, b.addr4)
        ping_retry(a, src.addr6)

    @check("lan1a counts the refusals by reason and logs each once")
    def _():
        counts = refusal_counts(m["lan1a"])
        figure("lan1a meshwire_pod_cidrs_refused_total", counts)
        expect(counts.get("wrong_block_size") == 2 and counts.get("outside_cluster") == 2 and
               counts.get("overlaps_peer") == 2 and counts.get("overlaps_own") == 0 and
               counts.get("covers_underlay") == 0, counts)
        lines = [line for line in m.log(m["lan1a"]).splitlines()
                 if "pod CIDR refused" in line and "peer=%s" % THIEF in line]
        expect(len(lines) == len(HOSTILE), lines)


if __name__ == "__main__":
    sys.exit(main())
