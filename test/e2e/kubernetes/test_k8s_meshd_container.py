#!/usr/bin/python3
"""e2e_k8s_meshd_container: meshd as the DaemonSet runs it, in podman, joins a mesh of host-run
meshd and carries pod traffic.

Testbed (test/e2e/topology): relay1 (public), LAN 1 behind a cone NAT (lan1a, lan1b) and LAN 2
behind a symmetric NAT (lan2a). relay1, lan1b and lan2a run meshd on the host (test/e2e/mesh).
lan1a is the Kubernetes node: the manifests are rendered from install/kubernetes with
configure.sh's per-node overlay (lan1a's file = the shared meshd.yaml with the testbed's relays,
interface name and pod CIDRs), and the DaemonSet's two containers run by podman in lan1a's
namespace (--network ns:, hostNetwork) with exactly the rendered command, env ($(NODE_NAME)
expanded), capabilities, read-only root, ConfigMap and Secret volumes (the PSK a read-only 0400
file) and hostPath volumes under a temporary host root (/dev/net/tun: the real one). First
install-cni puts the plugin and conflist into the host root; then meshd runs. Checks: the
readiness probe (meshwire-health) passes; the container and relay1/lan1b see each other
`direct`, lan2a `relay` (through relay1); a pod created on lan1a through the *installed* plugin
and conflist (pod CIDRs from the node.json the containerised meshd wrote into the host root's
/run/meshwire) pings pods on lan1b, relay1 and lan2a (relayed) over IPv4 and IPv6 and is pinged
back from lan1b and lan2a; the probe fails while the WireGuard interface is down and passes again when it is up; `podman stop` ends
meshd with exit 0 and takes the interface (wireguard-go) with it. Everything is removed, also on
failure. About 30-40 s. Needs root, podman, kubectl and the image (fixture k8s_image).
Exit 0 pass, 1 fail, 77 skip."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import yaml

from k8s_lib import FAILS, K8S, Rendered, check, need_image, podman_run_args, verdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mesh"))
from mesh import CLUSTER_CIDRS, Mesh, Pod, peer_paths  # noqa: E402


def podman(*args, timeout=30, check_rc=False):
    p = subprocess.run(["podman"] + list(args), capture_output=True, text=True, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise RuntimeError("podman %s -> %d: %s" % (" ".join(args), p.returncode, p.stderr))
    return p


def wait_for(what, fn, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = fn()
        if ok:
            return True, last
        time.sleep(0.3)
    return False, last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    a = ap.parse_args()
    need_image()
    t0 = time.monotonic()
    cname = "mwt-%d-meshd" % os.getpid()
    ctr = None
    pod = None
    log_path = None
    with Mesh(build_dir=a.build_dir, wg_backend="userspace",
              nodes=["relay1", "lan1a", "lan1b", "lan2a"],
              topology_args={"relays": 1, "lans": ["cone", "symmetric"],
                             "nodes_per_lan": 2}) as m, \
            tempfile.TemporaryDirectory(prefix="mwt-%d-k8se-" % os.getpid()) as tmp:
        knode, relay1, lan1b, lan2a = m["lan1a"], m["relay1"], m["lan1b"], m["lan2a"]
        mine = m.configs["lan1a"]
        # The shared config: the DaemonSet's (paths, PSK location) with this testbed's relays,
        # interface name and bounds; mDNS off like the other mesh tests (the cone LAN would
        # otherwise find lan1b by mDNS as well, which is not what this test is about).
        with open(os.path.join(K8S, "base", "meshd.yaml")) as f:
            shared = yaml.safe_load(f)
        shared.update({"interface": mine["interface"], "wireguard": mine["wireguard"],
                       "listenPort": mine["listenPort"], "relayNodes": mine["relayNodes"],
                       "clusterCIDRs": CLUSTER_CIDRS, "mdns": {"enable": False},
                       "dht": {"enable": False}, "logLevel": "debug"})
        host = os.path.join(tmp, "host")
        try:
            with Rendered(nodes={"lan1a": mine["podCIDRs"]}, config=shared,
                          psk=m.psk + "\n") as r:
                objs = r.render("local")
                vol = os.path.join(tmp, "vol")
                # 1. The init container installs the plugin and conflist into the host root.
                init = podman_run_args(objs, "install-cni", True, host, vol, knode.path,
                                       "lan1a", cname + "-init")
                p = subprocess.run(["podman", "run"] + init, capture_output=True, text=True,
                                   timeout=60)
                print(p.stdout + p.stderr, end="")
                if not check(p.returncode == 0, "install-cni exit %d" % p.returncode):
                    return 1
                # 2. meshd in its container, on lan1a's network.
                args = podman_run_args(objs, "meshd", False, host, vol, knode.path, "lan1a",
                                       cname)
                psk_file = os.path.join(vol, "psk", "psk")
                check(oct(os.stat(psk_file).st_mode & 0o777) == "0o400", "PSK file mode 0400")
                print("$ podman run %s" % " ".join(args))
                log_path = os.path.join(tmp, "meshd-container.log")
                logf = open(log_path, "w")
                ctr = subprocess.Popen(["podman", "run"] + args, stdout=logf,
                                       stderr=subprocess.STDOUT)
            m.start(relay1)
            m.start(lan1b)
            m.start(lan2a)
            m.wait_ready(nodes=[relay1, lan1b, lan2a], timeout=20)

            def probe():
                p = podman("exec", cname, "/usr/bin/meshwire-health")
                return p.returncode == 0, "exit %d %s%s" % (p.returncode, p.stdout, p.stderr)
            ok, last = wait_for("probe", probe, 20)
            if not check(ok, "readiness probe (meshwire-health) passes within 20 s: %s" % last):
                return 1
            print("probe: %s" % last.strip())
            ready_s = time.monotonic() - t0

            # 3. Paths both ways: the host-run nodes and the container see each other direct.
            m.wait_paths({("lan1b", "lan1a"): "direct", ("relay1", "lan1a"): "direct",
                          ("lan2a", "lan1a"): "relay"}, timeout=30)

            def ctr_paths():
                p = podman("exec", cname, "/usr/bin/meshctl", "peers", "--json")
                if p.returncode != 0:
                    return False, p.stderr
                got = peer_paths(json.loads(p.stdout))
                return got == {"lan1b": "direct", "relay1": "direct", "lan2a": "relay"}, got
            ok, last = wait_for("paths", ctr_paths, 30)
            check(ok, "in the container, meshctl peers: lan1b, relay1 direct, lan2a relay: %s"
                  % last)
            paths_s = time.monotonic() - t0

            # 4. A pod on lan1a through the installed plugin and conflist.
            with open(os.path.join(host, "etc/cni/net.d/10-meshwire.conflist")) as f:
                clist = json.load(f)
            conf = {"cniVersion": clist["cniVersion"], "name": clist["name"]}
            conf.update(clist["plugins"][0])
            # The one deviation from a node: the host root is a temp dir, so the plugin is told
            # where meshd's node.json and its IPAM store are (on a node: the defaults).
            conf["nodeFile"] = os.path.join(host, "run/meshwire/node.json")
            conf["dataDir"] = os.path.join(tmp, "ipam")
            plugin = os.path.join(host, "opt/cni/bin/meshwire")
            netns = m.t.add_netns("pod-lan1a-web")
            env = dict(os.environ, CNI_COMMAND="ADD", CNI_CONTAINERID="k8s-lan1a-web",
                       CNI_NETNS=netns.path, CNI_IFNAME="eth0",
                       CNI_PATH=os.path.dirname(plugin))
            p = knode.run([plugin], check=False, input=json.dumps(conf), env=env, timeout=30)
            if not check(p.returncode == 0, "CNI ADD with the installed plugin: %s %s" % (
                    p.stdout, p.stderr)):
                return 1
            pod = Pod(m, knode, "web", netns, "k8s-lan1a-web", conf, json.loads(p.stdout))
            check(pod.addr4 and pod.addr4.startswith(mine["podCIDRs"][0].rsplit(".", 2)[0]),
                  "pod address %s from node.json's pod CIDRs %s" % (pod.addr4,
                                                                    mine["podCIDRs"]))
            q = m.add_pod(lan1b, "db")
            s = m.add_pod(relay1, "db")
            u = m.add_pod(lan2a, "db")
            for target in (q, s, u):
                for addr in (target.addr4, target.addr6):
                    r = pod.ping(addr, count=3, check=False)
                    check(r.returncode == 0, "pod on lan1a (container meshd) -> %s pod %s: %s" % (
                        target.node.name, addr, r.stdout[-200:]))
            for src in (q, u):
                for addr in (pod.addr4, pod.addr6):
                    r = src.ping(addr, count=3, check=False)
                    check(r.returncode == 0, "%s pod -> lan1a pod %s: %s" % (
                        src.node.name, addr, r.stdout[-200:]))
            traffic_s = time.monotonic() - t0

            # 5. The probe means something: the WireGuard interface down -> unhealthy.
            knode.run(["ip", "link", "set", mine["interface"], "down"])
            p = podman("exec", cname, "/usr/bin/meshwire-health")
            check(p.returncode == 1 and "down" in p.stdout,
                  "probe fails while %s is down: %d %s" % (mine["interface"], p.returncode,
                                                           p.stdout))
            knode.run(["ip", "link", "set", mine["interface"], "up"])
            ok, last = wait_for("probe", probe, 10)
            check(ok, "probe passes again with the interface up: %s" % last)

            # 6. podman stop (kubelet's SIGTERM): meshd exits 0, wireguard-go and its
            # interface go with it.
            p = podman("stop", "-t", "10", cname, timeout=30)
            rc = ctr.wait(timeout=30)
            check(rc == 0, "meshd in the container exits 0 on SIGTERM (got %s)" % rc)
            links = knode.run(["ip", "-o", "link", "show"], check=False).stdout
            check(mine["interface"] not in links, "userspace interface gone with the pod")
            print("timeline: meshd ready (probe) %.1f s, paths as expected %.1f s, pod traffic "
                  "checked %.1f s after the start" % (ready_s, paths_s, traffic_s))
        except Exception as e:  # noqa: BLE001 - reported, then cleaned up
            check(False, "exception: %r" % e)
            for n in (relay1, lan1b, lan2a):
                print(m.diagnose(n, log_lines=20))
        finally:
            if pod is not None and not pod.deleted:
                env = dict(os.environ, CNI_COMMAND="DEL", CNI_CONTAINERID=pod.container_id,
                           CNI_NETNS=pod.path, CNI_IFNAME="eth0",
                           CNI_PATH=os.path.join(host, "opt/cni/bin"))
                p = knode.run([os.path.join(host, "opt/cni/bin/meshwire")], check=False,
                              input=json.dumps(pod.conf), env=env, timeout=30)
                check(p.returncode == 0, "CNI DEL of the lan1a pod: %s" % p.stdout)
                pod.deleted = True
            if ctr is not None and ctr.poll() is None:
                podman("rm", "-f", "-t", "2", cname, timeout=30)
                ctr.wait(timeout=30)
            if log_path and (FAILS or os.environ.get("VERBOSE")):
                with open(log_path) as f:
                    print("--- meshd container log (tail)\n" + "".join(f.readlines()[-40:]))
    left = podman("ps", "-a", "-q", "--filter", "name=" + cname).stdout.strip()
    check(not left, "no container left: %s" % left)
    return verdict("e2e_k8s_meshd_container", " (%.1f s)" % (time.monotonic() - t0))


if __name__ == "__main__":
    sys.exit(main())
