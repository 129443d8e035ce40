#!/usr/bin/python3
"""meshd on the Kubernetes API (issue 11 §3/§4), against fake_apiserver.py on the e2e testbed.

Testbed: public hosts api, k1, k2, k3 (test/e2e/topology); the fake API server runs in api's
namespace on api's address with a certificate of a test CA made here by openssl; k1-k3 run meshd
with kubernetes.enable, apiServer https://<api>:6443, caFile, and a tokenFile each. No relayNodes,
no mDNS, no dht.bootstrap: the nodes meet only through what the API tells them.

scenario main (CTest e2e_kube_mesh, about 60 s):
  podCIDRs          omitted from meshd.yaml: node.json and meshctl status carry the Node's
                    spec.podCIDRs
  annotations       meshwire.io/node-id, wireguard-public-key and control-port on each own Node
                    (merge PATCH), equal to meshctl status
  discovery         k1 and k2 see each other with learnedVia "kubernetes", on a direct path, and
                    their pods (CNI with the node.json meshd wrote) reach each other
  node added        k3's Node put in the API and its meshd started: k1 and k2 list k3 (kubernetes)
  410 mid-watch     the server compacts: every open watch gets ERROR 410; each meshd lists again
                    (server counts) and a Node change after it is still seen
  token rotation    the server accepts only a new token (old refused, watches closed); the new
                    token is written to the token files 2 s later: each meshd lists and watches
                    with it, and k3's Node deleted afterwards leaves k1's view (learnedVia without
                    "kubernetes"; the record stays: it comes signed from the mesh)
  requireNode       k2 runs with kubernetes.requireNode: k3 without its Node is dropped there and
                    stays refused while k1 (without the option) keeps it
scenario outage (CTest e2e_kube_outage, about 45 s):
  the API down 35 s: k1's WireGuard peers (keys, endpoints, allowed IPs), its routes on the
  WireGuard interface and its paths are the same after as before, the pods still reach each
  other; the API up again: meshd lists again and a Node added then is seen.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mesh"))
sys.path.insert(0, HERE)

from checks import (check, expect, ping_retry, report, run_and_clean, wait_for,  # noqa: E402
                    PATHS_BOUND, READY_BOUND)
import checks  # noqa: E402
from mesh import Mesh, pod_cidrs  # noqa: E402
import kubetest  # noqa: E402

API_PORT = 6443
NODES = ["k1", "k2", "k3"]
# A LIST after a 410 or a closed watch is immediate; after an error meshd backs off 1 s doubling
# to 15 s (±25 %): at most 18.75 s after the outage, plus slack for a loaded host.
RECOVER_BOUND = 30.0
SEEN_BOUND = 10.0
# 35 s: the backoff (1 s doubling, ±25 %) reaches its 15 s cap after 11-19 s of errors, so the
# outage still covers retries at the cap. KUBE_OUTAGE_S shortens it only to debug the test.
OUTAGE_S = float(os.environ.get("KUBE_OUTAGE_S", "35"))


def learned(m, on, name):
    for p in m.meshctl(m[on], "peers")["peers"]:
        if p["name"] == name:
            return p.get("learnedVia", [])
    return None


def wg_state(m, node):
    """Peers (key, endpoint, allowed IPs) and the routes on the WireGuard interface."""
    dump = node.run(["wg", "show", node.wg_ifname, "dump"]).stdout.strip().splitlines()[1:]
    peers = sorted((f[0], f[2], f[3]) for f in (l.split("\t") for l in dump))
    routes = sorted(node.run(["ip", "-4", "route", "show", "dev", node.wg_ifname]).stdout
                    .splitlines() + node.run(["ip", "-6", "route", "show", "dev",
                                              node.wg_ifname]).stdout.splitlines())
    paths = sorted((p["name"], p["path"]) for p in m.meshctl(node, "peers")["peers"])
    return {"peers": peers, "routes": routes, "paths": paths}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "..", "..", "build"))
    ap.add_argument("--scenario", choices=["main", "outage"], default="main")
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    rc = checks.preflight(build, tools=("ip", "wg", "wireguard-go", "ping", "openssl"))
    if rc is not None:
        return rc
    t_start = time.monotonic()
    m = Mesh(build_dir=build, nodes=NODES,
             topology_args={"relays": ["api"] + NODES, "lans": [],
                            "keep_tmp": bool(os.environ.get("MESH_KEEP"))})
    state = {}

    def body(m):
        api_node = m["api"]
        d = os.path.join(m.t.tmpdir, "k8s")
        kubetest.make_pki(d, [api_node.addr4])
        server = "https://%s:%d" % (api_node.addr4, API_PORT)
        api = kubetest.FakeApi(d, "%s:%d" % (api_node.addr4, API_PORT), "token-1",
                               popen=lambda cmd: api_node.popen(cmd, name="apiserver"))
        state["api"] = api
        try:
            scenario(m, api, server, d)
        finally:
            api.close()

    def scenario(m, api, server, d):
        for i, name in enumerate(NODES, start=1):
            n = m[name]
            tok = kubetest.write(os.path.join(n.dir, "token"), "token-1")
            cfg = m.configs[name]
            cfg.pop("relayNodes", None)
            cfg.pop("podCIDRs", None)
            cfg["kubernetes"] = {"enable": True, "apiServer": server,
                                 "caFile": os.path.join(d, "ca.crt"), "tokenFile": tok}
            if name == "k2":
                cfg["kubernetes"]["requireNode"] = True  # k1 does not: the two are compared
            m.write_config(n)

        def put_node(name, **extra):
            n = m[name]
            i = NODES.index(name) + 1
            obj = kubetest.node_object(name, pod_cidrs(i), internal=[n.addr4, n.addr6])
            obj["metadata"]["labels"].update(extra)
            return api.put(obj)

        put_node("k1")
        put_node("k2")
        m.start(m["k1"])
        m.start(m["k2"])
        m.wait_ready(timeout=READY_BOUND + 20, nodes=[m["k1"], m["k2"]])

        @check("podCIDRs from the Node's spec.podCIDRs (node.json, meshctl status)")
        def _():
            for i, name in enumerate(["k1", "k2"], start=1):
                nf = json.load(open(m.node_file(m[name])))
                expect(nf["podCIDRs"] == pod_cidrs(i), "%s node.json %s" % (name, nf))
                st = m.meshctl(m[name], "status")
                expect(st["node"]["podCIDRs"] == pod_cidrs(i), "%s status %s" % (name, st["node"]))

        @check("annotations published on each own Node (node ID, WireGuard key, port)")
        def _():
            def published():
                for name in ("k1", "k2"):
                    st = m.meshctl(m[name], "status")["node"]
                    ann = api.get(name)["metadata"].get("annotations", {})
                    want = {"meshwire.io/node-id": st["id"],
                            "meshwire.io/wireguard-public-key": st["wgPublicKey"],
                            "meshwire.io/control-port": "51821"}
                    if any(ann.get(k) != v for k, v in want.items()):
                        return False, "%s: %s" % (name, ann)
                return True, "ok"
            wait_for("annotations", published, SEEN_BOUND)
            expect(api.stats()["patches"] >= 2, api.stats())

        @check("k1 and k2 meet through the API: learnedVia kubernetes, direct")
        def _():
            def met():
                for a, b in (("k1", "k2"), ("k2", "k1")):
                    peers = {p["name"]: p for p in m.meshctl(m[a], "peers")["peers"]}
                    p = peers.get(b)
                    if not p or "kubernetes" not in p.get("learnedVia", []) or \
                            p.get("path") != "direct":
                        return False, "%s sees %s" % (a, p)
                return True, "ok"
            _, took = wait_for("k1-k2 direct via kubernetes", met, PATHS_BOUND + 10)
            checks.figure("k1/k2 meet through the API", "%.1fs" % took)

        pods = {}

        @check("pods on k1 and k2 (CNI from meshd's node.json) reach each other")
        def _():
            pods["k1"] = m.add_pod(m["k1"], "p1", cidrs_from="node_file")
            pods["k2"] = m.add_pod(m["k2"], "p2", cidrs_from="node_file")
            ping_retry(pods["k1"], pods["k2"].addr4)
            ping_retry(pods["k2"], pods["k1"].addr6)

        if args.scenario == "outage":
            outage(m, api, put_node, pods)
            return

        @check("a Node added in the API (k3, its meshd started) is seen by k1 and k2")
        def _():
            put_node("k3")
            m.start(m["k3"])
            wait_for("k3 via kubernetes", lambda: all(
                "kubernetes" in (learned(m, a, "k3") or []) for a in ("k1", "k2")),
                READY_BOUND + SEEN_BOUND + 10)

        @check("410 mid-watch: every meshd lists again and still follows changes")
        def _():
            before = api.stats()
            api.call(op="compact")
            wait_for("3 re-lists", lambda: (api.stats()["lists"] >= before["lists"] + 3,
                                            api.stats()), SEEN_BOUND)
            expect(api.stats()["gone"] >= before["gone"] + 3, api.stats())
            for name in NODES:
                log = m.log(m[name])
                expect("410" in log and "listing again" in log, "%s log has no 410 re-list" % name)
            put_node("k2", test="after-410")
            wait_for("k2 label seen", lambda: api.stats()["watches"] >= before["watches"] + 3,
                     SEEN_BOUND)

        @check("token rotation: old token refused, meshd re-reads the file and continues")
        def _():
            before = api.stats()
            api.call(op="rotate", token="token-2")
            time.sleep(2.0)
            for name in NODES:
                kubetest.write(os.path.join(m[name].dir, "token"), "token-2\n")
            wait_for("lists and watches with token-2", lambda: (
                api.stats()["tokens"].get("token-2", 0) >= 6, api.stats()), RECOVER_BOUND)
            expect(api.stats()["unauthorized"] > before["unauthorized"],
                   "the old token was never refused: %s" % api.stats())
            api.delete("k3")
            wait_for("k3 gone from k1's kubernetes view", lambda: (
                "kubernetes" not in (learned(m, "k1", "k3") or []), learned(m, "k1", "k3")),
                SEEN_BOUND)
            expect(learned(m, "k1", "k3") is not None, "k3's record is gone with its Node")

        @check("requireNode (k2): k3 without a Node is refused; k1 (without it) keeps k3")
        def _():
            wait_for("k2 drops k3", lambda: (learned(m, "k2", "k3") is None,
                                             learned(m, "k2", "k3")), SEEN_BOUND)
            expect("nodes without a Kubernetes Node removed" in m.log(m["k2"]),
                   "k2 did not log the removal")
            time.sleep(3.0)  # k3 keeps talking to k2: still refused
            expect(learned(m, "k2", "k3") is None, "k3 came back on k2")
            expect(learned(m, "k1", "k3") is not None, "k1 dropped k3")

    def outage(m, api, put_node, pods):
        k1 = m["k1"]
        before = wg_state(m, k1)

        @check("API down %d s: no WireGuard peer, route or path of k1 touched" % OUTAGE_S)
        def _():
            api.call(op="down")
            time.sleep(OUTAGE_S)
            after = wg_state(m, k1)
            expect(before == after, "before %s\nafter %s" % (before, after))
            expect("kubernetes API: retrying" in m.log(k1), "no retry logged")
            ping_retry(pods["k1"], pods["k2"].addr4)

        @check("API up again: meshd lists again and follows changes")
        def _():
            lists = api.stats()["lists"]
            api.call(op="up")
            wait_for("re-list after the outage", lambda: (api.stats()["lists"] >= lists + 2,
                                                          api.stats()), RECOVER_BOUND)
            put_node("k3")
            m.start(m["k3"])
            wait_for("k3 via kubernetes", lambda: (
                "kubernetes" in (learned(m, "k1", "k3") or []), learned(m, "k1", "k3")),
                READY_BOUND + SEEN_BOUND + 10)

    run_and_clean(m, body)
    return report(t_start)


if __name__ == "__main__":
    sys.exit(main())
