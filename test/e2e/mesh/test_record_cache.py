#!/usr/bin/env python3
"""The on-disk record cache on the testbed (root; Python 3 stdlib; meshd + wireguard-go + the real
CNI plugin). CTest `e2e_record_cache`, label e2e.

Topology (mesh.py's default): relay1, relay2 on the public segment (relayNodes), LAN1 behind a
cone NAT (lan1a, lan1b), LAN2 behind a symmetric NAT (lan2a, lan2b). Checks, on one mesh:

  written    lan1a writes <stateDir>/records.cache with every other node's record within
             CACHE_WRITE_BOUND of the mesh settling (meshctl status recordCache)
  restart    lan1a cut off from everything outside its LAN (nftables in its namespace: its
             control and relay datagrams, port 51821, to any address outside LAN1 are dropped, so
             no relay answers), then its meshd restarted (wireguard-go and its interface go with
             it): within CACHE_RESTORE_BOUND of the start its WireGuard device (wg show dump) has
             a peer for each of the 5 other nodes and the pod routes of the remote nodes are on
             its interface; `meshctl peers --json` lists every peer with "cache" in learnedVia;
             status says the cache was loaded; its LAN neighbour's pod answers (LAN autonomy)
  kept       5 s later (relays still unreachable) the peers and routes are all still there
  back       the block removed: lan1a's pod reaches lan2a's pod again within BACK_BOUND
  corrupt    lan1b stopped, its records.cache overwritten with garbage, started: it comes up
             (READY_BOUND), logs a warning, the file is kept aside as records.cache.corrupt,
             status says "set aside"; it gets its peers from the relays as usual (no "cache" in
             learnedVia) and writes a new, valid cache
then close() leaves nothing. Every deadline is a failure. Prints the measured times and
`N passed, N failed`; exit 1 on a failure, 77 when it cannot run here.

Usage: test_record_cache.py [--build-dir DIR]
"""

import ipaddress
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import (run_mesh_scenario, ALL, HANDSHAKE_BOUND, LAN_NODES, PATHS_BOUND, READY_BOUND,  # noqa: E402
                    RELAY_PORT, check, expect, figure, lan_of, ping_retry, status, wait_for)
from mesh import TIME_FACTOR  # noqa: E402

# meshd checks the store for changes every 2 s and writes at most every 5 s after the previous
# write (its first write 5 s after its start): the mesh settled, the file follows within 7 s;
# slack for the loaded host.
CACHE_WRITE_BOUND = 12.0 * TIME_FACTOR
# The cache is read before meshd answers its socket, the records go to the core at once and the
# data plane is applied on the first pass (one UAPI call to a freshly started wireguard-go). No
# protocol timer is involved: about 1 s with wireguard-go's start measured; "within a few
# seconds" is the requirement (issue 10 §3), with slack for the loaded host.
CACHE_RESTORE_BOUND = 5.0 * TIME_FACTOR
# The relays answer again within their 1 s probe interval; the relay session is bound within its
# 1 s REQUEST retry; WireGuard's endpoint for lan2a moves from the cache's guess to the proxy
# socket, and a handshake initiation sent meanwhile to the guess delays the next by
# REKEY_TIMEOUT (dataplane_planner.hpp): 1 + 1 + HANDSHAKE_BOUND + slack.
BACK_BOUND = 10.0 * TIME_FACTOR


def peers_of(m, n):
    return {p["name"]: p for p in m.meshctl(m[n], "peers")["peers"]}


def wg_dump(node):
    """{public key: (endpoint, allowed ips)} of node's WireGuard device ({} if it is not up)."""
    out = node.run(["wg", "show", node.wg_ifname, "dump"], check=False).stdout
    peers = {}
    for ln in out.splitlines()[1:]:
        f = ln.split("\t")
        if len(f) >= 4:
            peers[f[0]] = (f[2], f[3])
    return peers


def wg_routes(node):
    out = node.run(["ip", "-4", "route", "show", "dev", node.wg_ifname], check=False).stdout
    out += node.run(["ip", "-6", "route", "show", "dev", node.wg_ifname], check=False).stdout
    return out


def pod_net4(m, name):
    return m.configs[name]["podCIDRs"][0]


def main():
    return run_mesh_scenario(run_mesh, 56)


def run_mesh(m):
    st = {}
    pods = {}

    @check("meshd starts on 6 nodes; cross-LAN pairs relayed")
    def _():
        m.start()
        m.wait_ready(timeout=READY_BOUND)
        want = {(a, b): ("relay" if lan_of(a) and lan_of(b) and lan_of(a) != lan_of(b)
                         else "direct") for a in ALL for b in ALL if a != b}
        m.wait_paths(want, timeout=PATHS_BOUND)
        for n in LAN_NODES:
            pods[n] = m.add_pod(m[n], "p")
        ping_retry(pods["lan1a"], pods["lan2a"].addr4)
        st["ok"] = True

    @check("lan1a writes its record cache with every other node's record")
    def _():
        expect(st.get("ok"), "the mesh did not form")

        def written():
            rc = status(m, "lan1a").get("recordCache") or {}
            return rc.get("writes", 0) >= 1 and rc.get("recordsWritten", 0) >= 5, rc
        rc, dt = wait_for("lan1a's cache written with 5 records", written, CACHE_WRITE_BOUND)
        figure("lan1a: cache written (5 records) after", "%.2fs (from the mesh settling)" % dt)
        path = os.path.join(m.configs["lan1a"]["stateDir"], "records.cache")
        expect(os.path.isfile(path), "no %s" % path)
        mode = os.stat(path).st_mode & 0o777
        expect(mode == 0o600, "mode %o" % mode)
        figure("lan1a: records.cache size", "%d bytes" % os.path.getsize(path))
        st["keys"] = {name: p["wgPublicKey"] for name, p in peers_of(m, "lan1a").items()}
        expect(len(st["keys"]) == 5, st["keys"])
        st["written"] = True

    @check("lan1a restarted with no relay reachable: WireGuard peers and pod routes from the cache")
    def _():
        expect(st.get("written"), "no cache written")
        n = m["lan1a"]
        lan4 = ipaddress.ip_interface(n.addr4 + "/24").network
        lan6 = ipaddress.ip_interface(n.addr6 + "/64").network
        m.stop(n)
        # Everything outside LAN1 unreachable for lan1a's meshd: the relays (control and relayed
        # WireGuard, both on port 51821) and the other LAN's nodes.
        n.nft("table inet mwtest_nouplink {\n chain out {\n"
              "  type filter hook output priority 0; policy accept;\n"
              "  ip daddr != %s udp dport %d drop\n"
              "  ip6 daddr != %s udp dport %d drop\n }\n}\n" % (lan4, RELAY_PORT, lan6,
                                                                 RELAY_PORT))
        st["blocked"] = True
        t0 = time.monotonic()
        m.start(n)
        remote = [x for x in LAN_NODES if x != "lan1a"]

        def restored():
            dump = wg_dump(n)
            missing = [name for name, k in st["keys"].items() if k not in dump]
            routes = wg_routes(n)
            no_route = [x for x in remote if pod_net4(m, x) not in routes]
            return not missing and not no_route, {"missing peers": missing,
                                                  "missing routes": no_route}
        _, dt = wait_for("lan1a's peers and routes back", restored, CACHE_RESTORE_BOUND,
                         interval=0.1)
        figure("lan1a: 5 WireGuard peers and 3 pod routes back after", "%.2fs (from the start, "
               "relays unreachable)" % (time.monotonic() - t0))
        dump = wg_dump(n)
        figure("lan1a: WireGuard endpoints from the cache", ", ".join(
            "%s=%s" % (name, dump[k][0]) for name, k in sorted(st["keys"].items())))
        m.wait_ready(timeout=READY_BOUND, nodes=[n])
        peers = peers_of(m, "lan1a")
        no_cache = {name: p.get("learnedVia") for name, p in peers.items()
                    if "cache" not in (p.get("learnedVia") or [])}
        expect(len(peers) == 5, "meshctl peers lists %s" % sorted(peers))
        expect(not no_cache, "peers without \"cache\" in learnedVia: %s" % no_cache)
        figure("lan1a: learnedVia after the restart", ", ".join(
            "%s=%s" % (name, ",".join(p["learnedVia"])) for name, p in sorted(peers.items())))
        rc = status(m, "lan1a")["recordCache"]
        expect(rc["load"] == "loaded" and rc["loaded"] == 5, rc)
        figure("lan1a: cache loaded", "%d records, %d expired, %s s since written (%s)" % (
            rc["loaded"], rc["expired"], rc["elapsedSeconds"], rc["elapsedClock"]))
        # LAN autonomy: the LAN neighbour is reached directly, without any relay.
        rtt = ping_retry(pods["lan1a"], pods["lan1b"].addr4)
        figure("lan1a -> lan1b pod with no relay reachable", "%.2fms" % rtt)
        st["restored"] = True

    @check("lan1a, relays still unreachable: nothing torn down 5 s later")
    def _():
        expect(st.get("restored"), "not restored")
        n = m["lan1a"]
        time.sleep(5)
        dump = wg_dump(n)
        missing = [name for name, k in st["keys"].items() if k not in dump]
        expect(not missing, "WireGuard peers gone: %s" % missing)
        routes = wg_routes(n)
        gone = [x for x in LAN_NODES if x != "lan1a" and pod_net4(m, x) not in routes]
        expect(not gone, "pod routes gone: %s\n%s" % (gone, routes))
        paths = {name: p["path"] for name, p in peers_of(m, "lan1a").items()}
        figure("lan1a: paths with no relay reachable", paths)
        expect(paths.get("lan1b") == "direct", paths)

    @check("uplink back: lan1a's pod reaches lan2a's pod again")
    def _():
        expect(st.get("blocked"), "never blocked")
        n = m["lan1a"]
        n.run(["nft", "delete", "table", "inet", "mwtest_nouplink"], check=False)
        st["blocked"] = False
        t0 = time.monotonic()
        rtt = ping_retry(pods["lan1a"], pods["lan2a"].addr4, within=BACK_BOUND)
        figure("lan1a -> lan2a pod after the block went", "%.2fs (%.2fms)" % (
            time.monotonic() - t0, rtt))

    @check("a corrupt cache file: warned, kept aside, lan1b starts and joins without it")
    def _():
        n = m["lan1b"]
        path = os.path.join(m.configs["lan1b"]["stateDir"], "records.cache")
        m.stop(n)
        with open(path, "wb") as f:
            f.write(b"MWRC\x00\x01" + os.urandom(300))
        t0 = time.monotonic()
        m.start(n)
        m.wait_ready(timeout=READY_BOUND, nodes=[n])
        figure("lan1b with a corrupt cache: ready after", "%.2fs" % (time.monotonic() - t0))
        expect(os.path.isfile(path + ".corrupt"), "no %s.corrupt" % path)
        lines = [ln for ln in m.log(n).splitlines() if "record cache not used" in ln]
        expect(lines and "level=warn" in lines[-1], "no warning in lan1b's log")
        figure("lan1b: log line", lines[-1][:240] if lines else "-")
        rc = status(m, "lan1b")["recordCache"]
        expect(rc["load"] == "set aside" and rc["loadError"], rc)

        def joined():
            peers = peers_of(m, "lan1b")
            return len(peers) == 5, sorted(peers)
        _, dt = wait_for("lan1b knows its 5 peers again", joined, PATHS_BOUND)
        figure("lan1b: 5 peers (from the relays) after", "%.2fs" % dt)
        via = {name: p.get("learnedVia") for name, p in peers_of(m, "lan1b").items()}
        expect(all("cache" not in (v or []) for v in via.values()), via)

        def rewritten():
            r = status(m, "lan1b")["recordCache"]
            return r["writes"] >= 1 and r["recordsWritten"] >= 5, r
        wait_for("lan1b writes a new cache", rewritten, CACHE_WRITE_BOUND)
        with open(path, "rb") as f:
            head = f.read(6)
        expect(head == b"MWRC\x00\x01", "new cache starts with %r" % head)
        def relayed():
            p = peers_of(m, "lan1b").get("lan2b") or {}
            return p.get("path") == "relay", p.get("path")
        wait_for("lan1b -> lan2b relayed", relayed, PATHS_BOUND)
        ping_retry(pods["lan1b"], pods["lan2b"].addr4, within=HANDSHAKE_BOUND)

    @check("every meshd still runs")
    def _():
        if st.get("blocked"):
            m["lan1a"].run(["nft", "delete", "table", "inet", "mwtest_nouplink"], check=False)
        dead = [x.name for x in m.nodes if not m.procs[x.name].alive()]
        expect(not dead, "exited: %s" % dead)


if __name__ == "__main__":
    sys.exit(main())
