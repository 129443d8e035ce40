#!/usr/bin/env python3
"""LAN autonomy by mDNS alone (issue 10 §4, first bullet), on the e2e testbed: three nodes on one
LAN with no relayNodes, no dht.bootstrap and no Kubernetes start together, find each other by
mDNS, go direct, and their pods ping each other. The deadline: every pair direct within 3 s of
the start (times MESHWIRE_TIME_FACTOR in the QEMU guest); a miss is a failure. Prints the figure.

Exit 0 pass, 1 fail, 77 skip (not root).
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mesh"))
sys.path.insert(0, os.path.join(HERE, "..", "topology"))

DEADLINE_S = 3.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "..", "..", "build"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces)")
        return 77
    from mesh import Mesh, TIME_FACTOR  # noqa: E402

    names = ["lan1a", "lan1b", "lan1c"]
    mdns_on = {"config": {"mdns": {"enable": True}, "dht": {"bootstrap": []}}}
    with Mesh(build_dir=a.build_dir, topology_args={"relays": 0, "lans": ["cone"],
                                                     "nodes_per_lan": 3},
              overrides={n: mdns_on for n in names}) as m:
        for n in names:
            cfg = m.configs[n]
            assert not cfg.get("relayNodes") and not cfg.get("dht", {}).get("bootstrap"), cfg
        t0 = time.monotonic()
        m.start()
        want = {(x, y): "direct" for x in names for y in names if x != y}
        try:
            m.wait_paths(want, timeout=DEADLINE_S * TIME_FACTOR)
        except AssertionError as e:
            print("FAIL  every pair direct within %.1f s of the start:\n%s" % (
                DEADLINE_S * TIME_FACTOR, e))
            return 1
        took = time.monotonic() - t0
        print("ok    3 nodes, no relays, no bootstrap: every pair direct %.2f s after the start"
              % took)
        # Paths may be direct before every announcement went out (a node learns the third one's
        # record from the second by HELLO): mDNS must still find both peers, within 5 s.
        for n in names:
            deadline = time.monotonic() + 5 * TIME_FACTOR
            while True:
                md = m.meshctl(m[n], "status")["mdns"]
                if md["peersFound"] >= 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            print("      %s mdns: %s" % (n, md))
            if md["peersFound"] < 2:
                print("FAIL  %s found %d peers by mDNS" % (n, md["peersFound"]))
                for x in names:
                    print("\n".join("      %s: %s" % (x, line)
                                     for line in m.procs[x].log().splitlines() if "mdns" in line))
                return 1
        pods = {n: m.add_pod(m[n], "p") for n in names}
        for x in names:
            for y in names:
                if x != y:
                    pods[x].ping(pods[y].addr4)
                    pods[x].ping(pods[y].addr6)
        print("ok    pods ping each other over v4 and v6 (%.2f s after the start)"
              % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
