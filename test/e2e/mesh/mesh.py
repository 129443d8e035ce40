#!/usr/bin/env python3
"""A meshwire mesh on the e2e testbed: meshd on every host of a Topology, pods through the real CNI
plugin, meshctl queries (Python 3 stdlib, root). See README.md in this directory.

    with Mesh(build_dir="build") as m:              # default topology: 2 relays, cone + symmetric
        m.start()
        m.wait_ready(timeout=20)
        m.wait_paths({("lan1a", "lan1b"): "direct", ("lan1a", "lan2a"): "relay"}, timeout=30)
        p = m.add_pod(m["lan1a"], "web")
        q = m.add_pod(m["lan2a"], "db")
        p.ping(q.addr4)
    # pods deleted (CNI DEL), meshd stopped, namespaces gone, also when the block raised

Every mesh node (the relays and the LAN nodes, not routers) i = 1, 2, ... gets the pod CIDRs
10.244.<i>.0/24 and fd00:244:<i>::/64 (inside clusterCIDRs 10.244.0.0/16, fd00:244::/32) and
its own files under node.dir: meshd.yaml, psk (0600),
state/, run/ (node.json, meshd.sock), ipam/ (the CNI plugin's dataDir), meshd.log.

The WireGuard backend meshd is told to use is $MESHWIRE_WG_BACKEND (userspace, the default, or
kernel; Mesh(wg_backend=...) overrides it). wait_ready() also proves that every node really runs
it, so a kernel run that fell back to wireguard-go fails. The kernel backend needs the wireguard
module: the suite runs it in the QEMU guest (test/vm/README.md).
"""

import copy
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "topology"))

from topology import Topology  # noqa: E402

CNI_NETWORK = "meshnet"
CNI_VERSION = "1.0.0"

# The scenarios' time bounds (checks.py, test_*.py) are set for the host. In the QEMU guest of
# test/vm (MESHWIRE_VM=1, where the kernel backend runs) the CPU is emulated (TCG): CPU-bound
# work takes 15-30x longer, each exec 0.1-0.5 s, every meshctl poll of a wait loop about 0.3 s
# instead of 10 ms, while meshd's and WireGuard's protocol timers run in real time. What a bound
# waits for there takes longer by about this factor, so the bounds a scenario sees through its own
# polls are multiplied by it (a missed deadline still fails). MESHWIRE_TIME_FACTOR overrides it
# (e.g. 1 to see the host bounds fail in the guest).
VM_TIME_FACTOR = 3.0


def time_factor():
    """$MESHWIRE_TIME_FACTOR, else VM_TIME_FACTOR in the QEMU guest ($MESHWIRE_VM), else 1."""
    v = os.environ.get("MESHWIRE_TIME_FACTOR", "").strip()
    if v:
        f = float(v)
        if not f >= 1:
            raise ValueError("MESHWIRE_TIME_FACTOR=%r: want a number >= 1" % v)
        return f
    return VM_TIME_FACTOR if os.environ.get("MESHWIRE_VM") == "1" else 1.0


TIME_FACTOR = time_factor()

# In the QEMU guest the scenario's own work (Python, and an exec of meshctl, ip, ping ... for each
# step, 0.1-0.5 s of emulated CPU each) competes with meshd for two emulated CPUs, which meshd's
# steady probing of the relays (every 100 ms, a relay dead after 400 ms of silence) keeps busy
# already. meshd runs at a higher priority there, so that what a scenario sees is meshd's
# real-time behaviour and not the scenario's appetite for CPU.
VM_MESHD_NICE = -10

WG_BACKEND_ENV = "MESHWIRE_WG_BACKEND"
WG_BACKENDS = ("userspace", "kernel")
# What `ip -d link` shows as the kind of a backend's WireGuard interface: wireguard-go makes a tun
# device, the kernel a wireguard link.
_LINK_KIND = {"userspace": "tun", "kernel": "wireguard"}


def wg_backend_default():
    """$MESHWIRE_WG_BACKEND, else "userspace". Not "auto": a test must know what it tests."""
    b = os.environ.get(WG_BACKEND_ENV, "").strip() or "userspace"
    if b not in WG_BACKENDS:
        raise ValueError("%s=%r: want one of %s" % (WG_BACKEND_ENV, b, ", ".join(WG_BACKENDS)))
    return b


# clusterCIDRs of every node's meshd.yaml: the space pod_cidrs() hands out.
CLUSTER_CIDRS = ["10.244.0.0/16", "fd00:244::/32"]


def pod_cidrs(i):
    """The pod CIDR pair of mesh node number i (1-based)."""
    return ["10.244.%d.0/24" % i, "fd00:244:%x::/64" % i]


# ------------------------------------------------------------------------------------------------
# YAML: block style with JSON-quoted scalars (a JSON string is a valid YAML double-quoted scalar),
# so that meshd's errors carry useful line numbers and no quoting rule of YAML can bite.


def to_yaml(value, indent=0):
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = ""
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out += "%s%s:\n%s" % (pad, k, to_yaml(v, indent + 2))
            else:
                out += "%s%s: %s\n" % (pad, k, _scalar(v))
        return out
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        out = ""
        for v in value:
            if isinstance(v, (dict, list)) and v:
                body = to_yaml(v, indent + 2)
                out += "%s- %s" % (pad, body[indent + 2:])  # first line after the dash
            else:
                out += "%s- %s\n" % (pad, _scalar(v))
        return out
    return pad + _scalar(value) + "\n"


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    if v is None:
        return "null"
    return json.dumps(str(v))


def merge(base, extra):
    """Deep merge of config dicts; a None value in `extra` removes the key."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


def peer_paths(doc):
    """{peer node name: path} from `meshctl peers --json`.

    Accepts a list of peer objects or an object with a "peers" list; a peer's name is "nodeName"
    (or "name"/"node"), its path "path". Adjust here if meshctl's stable JSON differs.
    """
    peers = doc.get("peers", []) if isinstance(doc, dict) else (doc or [])
    out = {}
    for p in peers:
        if not isinstance(p, dict):
            continue
        name = p.get("nodeName") or p.get("name") or p.get("node")
        if name:
            out[name] = p.get("path")
    return out


# ------------------------------------------------------------------------------------------------


class Pod:
    """A pod: a namespace owned by the topology, wired by the meshwire CNI plugin into its node."""

    def __init__(self, mesh, node, name, netns, container_id, conf, result):
        self.mesh, self.node, self.name = mesh, node, name
        self.netns = netns  # a topology Node of kind "extra"
        self.container_id, self.conf, self.result = container_id, conf, result
        self.addr4 = self.addr6 = None
        for ip in result.get("ips", []):
            iface = ipaddress.ip_interface(ip["address"])
            if iface.version == 4:
                self.addr4 = str(iface.ip)
            else:
                self.addr6 = str(iface.ip)
        self.deleted = False

    def __repr__(self):
        return "<Pod %s on %s %s %s>" % (self.name, self.node.name, self.addr4, self.addr6)

    @property
    def path(self):
        return self.netns.path

    def run(self, cmd, check=True, timeout=60, input=None):
        """Run `cmd` (list) inside the pod's namespace; CompletedProcess (text)."""
        return self.netns.run(cmd, check=check, timeout=timeout, input=input)

    def ping(self, addr, count=1, timeout=2, check=True):
        """ping from the pod; returns the CompletedProcess (raises on loss when check)."""
        fam = "-6" if ":" in str(addr) else "-4"
        return self.run(["ping", fam, "-n", "-c", str(count), "-i", "0.2", "-W", str(timeout),
                         str(addr)],
                        check=check, timeout=count * (timeout + 1) + 10)

    def delete(self):
        self.mesh.del_pod(self)


class Mesh:
    """meshd on the hosts of a Topology. Context manager; close() is idempotent.

    topology     a Topology, or None to build Topology(**topology_args) (default: relays=2,
                 lans=["cone", "symmetric"], nodes_per_lan=2); a built one is closed by close(),
                 a given one only if close_topology=True (default False: the caller owns it)
    build_dir    the CMake build tree (binaries meshd/meshd, meshctl/meshctl, cni-plugin/meshwire)
    psk          the cluster PSK as text (default: 32 random bytes as 64 hex digits)
    nodes        the names of the mesh nodes (default: every relay and LAN node, in topology order)
    overrides    {node name: {"psk": text, "config": {deep merge into meshd.yaml; None deletes},
                  "pod_cidrs": [...]}} e.g. a node with a wrong PSK or extra config
    wg_backend   "userspace" or "kernel" (default: wg_backend_default(), i.e. $MESHWIRE_WG_BACKEND
                 or userspace): wireguard.backend in every meshd.yaml, checked by wait_ready()
    wrap         {node name: argv prefix} put before meshd's command line when it starts there,
                 e.g. ["env", "LD_PRELOAD=...libfaketime.so.1", "FAKETIME=+5h"] (a command that
                 execs the rest keeps meshd's pid); Mesh.wrap may be changed between starts
    """

    def __init__(self, topology=None, build_dir=None, psk=None, nodes=None, overrides=None,
                 topology_args=None, close_topology=None, wg_backend=None, wrap=None):
        self.build_dir = os.path.abspath(build_dir or os.path.join(HERE, "..", "..", "..",
                                                                   "build"))
        self.meshd_bin = os.path.join(self.build_dir, "meshd", "meshd")
        self.meshctl_bin = os.path.join(self.build_dir, "meshctl", "meshctl")
        self.plugin_bin = os.path.join(self.build_dir, "cni-plugin", "meshwire")
        self.psk = psk or secrets.token_hex(32)
        self.wg_backend = wg_backend or wg_backend_default()
        if self.wg_backend not in WG_BACKENDS:
            raise ValueError("wg_backend %r: want one of %s" % (self.wg_backend, WG_BACKENDS))
        self.overrides = dict(overrides or {})
        self.wrap = {k: list(v) for k, v in (wrap or {}).items()}
        self.nodes = []  # the mesh nodes (topology Nodes), index i+1 = pod CIDR number
        self.configs = {}  # name -> the meshd.yaml dict (edit, then write_config(node))
        self.procs = {}  # name -> the latest meshd Proc
        self.pods = []
        self.backend_seen = {}  # name -> backend_facts() at the last check_backend()
        self._closed = False
        self._owns_topology = topology is None
        if close_topology is not None:
            self._owns_topology = close_topology
        args = {"relays": 2, "lans": ["cone", "symmetric"], "nodes_per_lan": 2}
        if self.wg_backend == "kernel":
            # The per-node /run/wireguard (Topology's default private_dirs) only keeps
            # wireguard-go's UAPI sockets apart; the kernel backend has none. Without it a
            # command in a node is `ip netns exec` alone, not also `sh` and `mount`: in the QEMU
            # guest, where the kernel backend runs, every exec costs 0.1-0.5 s.
            args["private_dirs"] = ()
        args.update(topology_args or {})
        self.t = topology if topology is not None else Topology(**args)
        try:
            unknown = (set(self.overrides) | set(self.wrap)) - {n.name for n in self.t.hosts}
            if nodes is not None:
                unknown |= set(nodes) - {n.name for n in self.t.hosts}
            if unknown:
                raise ValueError("not mesh hosts of the topology: %s" % sorted(unknown))
            # All first, then the configs: each lists every relay node.
            self.nodes = [n for n in self.t.hosts if nodes is None or n.name in nodes]
            for n in self.nodes:
                self._configure(n)
        except BaseException:
            self.close()
            raise

    # -- access ---------------------------------------------------------------------------------

    def __getitem__(self, name):
        return self.t[name]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def relays(self):
        return [n for n in self.nodes if n.kind == "public"]

    def index(self, node):
        """The 1-based mesh number of a node (its pod CIDRs are pod_cidrs(index))."""
        return self.nodes.index(node) + 1

    def config_path(self, node):
        return os.path.join(node.dir, "meshd.yaml")

    def socket_path(self, node):
        return self.configs[node.name]["socket"]

    def node_file(self, node):
        return os.path.join(self.configs[node.name]["runDir"], "node.json")

    def log(self, node):
        p = self.procs.get(node.name)
        return p.log() if p else ""

    # -- configuration --------------------------------------------------------------------------

    def add_node(self, node):
        """Make a topology host a mesh node (also one added at runtime): next pod CIDR pair,
        PSK file and meshd.yaml written. Relay nodes added later are listed only in the configs
        written after them (rewrite the others with write_config to tell them)."""
        if node in self.nodes:
            raise ValueError("%s is already a mesh node" % node.name)
        self.nodes.append(node)
        return self._configure(node)

    def _configure(self, node):
        ov = self.overrides.get(node.name, {})
        psk_path = os.path.join(node.dir, "psk")
        fd = os.open(psk_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(ov.get("psk", self.psk) + "\n")
        os.chmod(psk_path, 0o600)  # also when the file existed with other bits
        run_dir = os.path.join(node.dir, "run")
        os.makedirs(os.path.join(node.dir, "ipam"), exist_ok=True)
        cfg = {
            "nodeName": node.name,
            "podCIDRs": ov.get("pod_cidrs", pod_cidrs(self.index(node))),
            # The route authority's bounds (every pod_cidrs(i) lies inside, /24 and /64).
            "clusterCIDRs": CLUSTER_CIDRS,
            "interface": node.wg_ifname,
            "wireguard": {"backend": self.wg_backend, "listenPort": 51820},
            "listenPort": 51821,
            "psk": {"path": psk_path},
            "relayNodes": self.relay_nodes(),
            "stateDir": os.path.join(node.dir, "state"),
            "runDir": run_dir,
            "socket": os.path.join(run_dir, "meshd.sock"),
            "mdns": {"enable": False},
            "dht": {"enable": False},
            "logLevel": "debug",
        }
        self.configs[node.name] = merge(cfg, ov.get("config", {}))
        self.write_config(node)
        return node

    def relay_nodes(self):
        """relayNodes as in meshd.yaml: every relay mesh node with its v4 and v6 address."""
        return [{"nodeName": n.name, "advertiseAddress": [n.addr4, n.addr6]}
                for n in self.t.relays if n in self.nodes]

    def write_config(self, node):
        """(Re)writes <node.dir>/meshd.yaml from self.configs[node.name]."""
        path = self.config_path(node)
        with open(path + ".tmp", "w") as f:
            f.write("# written by test/e2e/mesh/mesh.py for %s\n" % node.name)
            f.write(to_yaml(self.configs[node.name]))
        os.replace(path + ".tmp", path)
        return path

    def check_config(self, node):
        """`meshd --check-config` in the node: CompletedProcess (not raised on failure)."""
        return node.run([self.meshd_bin, "--check-config", "--config", self.config_path(node)],
                        check=False, timeout=30)

    # -- meshd ----------------------------------------------------------------------------------

    def _targets(self, node):
        return self.nodes if node is None else [node]

    def start(self, node=None):
        """Start meshd on one node or on every mesh node; returns the Proc (or the list)."""
        procs = []
        for n in self._targets(node):
            p = self.procs.get(n.name)
            if p is not None and p.alive():
                raise RuntimeError("meshd already runs on %s (pid %d)" % (n.name, p.pid))
            cmd = self.wrap.get(n.name, []) + [self.meshd_bin, "--config", self.config_path(n)]
            if os.environ.get("MESHWIRE_VM") == "1":
                cmd = ["nice", "-n", str(VM_MESHD_NICE)] + cmd  # nice execs meshd: same pid
            self.procs[n.name] = n.popen(cmd, name="meshd")
            procs.append(self.procs[n.name])
        return procs[0] if node is not None else procs

    def stop(self, node=None, timeout=3.0):
        """SIGTERM (SIGKILL after timeout); returns the exit code (or {name: code})."""
        codes = {n.name: self.procs[n.name].stop(timeout)
                 for n in self._targets(node) if n.name in self.procs}
        return codes.get(node.name) if node is not None else codes

    def kill(self, node):
        """SIGKILL meshd on a node (a crash); returns the exit code."""
        p = self.procs.get(node.name)
        return p.kill() if p else None

    def signal(self, node, sig=signal.SIGHUP):
        self.procs[node.name].signal(sig)

    def _meshctl_cmd(self, node, args, timeout):
        # meshd must answer within `timeout` (times TIME_FACTOR: in the QEMU guest a busy meshd
        # answers in seconds, not milliseconds); meshctl says so itself when it does not.
        return [self.meshctl_bin, "--socket", self.socket_path(node),
                "--timeout", "%g" % (timeout * TIME_FACTOR)] + [str(a) for a in args]

    def _meshctl_run(self, cmd, timeout):
        # meshctl only talks to meshd's unix socket, a file path that every network namespace
        # reaches: it runs directly, not through `ip netns exec` (1 exec instead of up to 4).
        # The subprocess timeout is a backstop behind meshctl's own --timeout.
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout * TIME_FACTOR + 10)

    def meshctl(self, node, *args, json=True, check=True, timeout=5):
        """meshctl against node's meshd (its socket), which must answer within `timeout` s
        (times TIME_FACTOR): parsed JSON (json=True) or the stdout text."""
        cmd = self._meshctl_cmd(node, args, timeout)
        if json:
            cmd.append("--json")
        p = self._meshctl_run(cmd, timeout)
        if p.returncode != 0:
            if check:
                raise RuntimeError("[%s] %s -> exit %d\nstdout: %s\nstderr: %s" % (
                    node.name, " ".join(cmd[1:]), p.returncode, p.stdout, p.stderr))
            return None
        return _json_loads(p.stdout, cmd) if json else p.stdout

    def wait_ready(self, timeout=20.0, nodes=None):
        """Wait until `meshctl status` answers on every (given) mesh node, then check_backend()
        on each; raises AssertionError naming the nodes that did not answer (with meshctl's last
        answer and the meshd log tails) or that run another WireGuard backend."""
        pending = list(nodes if nodes is not None else self.nodes)
        ready = list(pending)
        last = {}
        answers = {}  # name -> the status that answered
        deadline = time.monotonic() + timeout
        while pending:
            for n in list(pending):
                p = self.procs.get(n.name)
                if p is None:
                    raise AssertionError("meshd was never started on %s" % n.name)
                cmd = self._meshctl_cmd(n, ["status", "--json"], 5)
                try:
                    r = self._meshctl_run(cmd, 5)
                    last[n.name] = "exit %d: %s%s" % (r.returncode, r.stdout, r.stderr)
                    ok = r.returncode == 0
                except (OSError, subprocess.TimeoutExpired) as e:
                    last[n.name], ok = str(e), False
                if ok:
                    answers[n.name] = _json_loads(r.stdout, cmd)
                    pending.remove(n)
                elif not p.alive():
                    deadline = 0  # it will not get better
            if pending and time.monotonic() > deadline:
                raise AssertionError("meshd not ready within %.1fs on %s:\n%s" % (
                    timeout, ", ".join(n.name for n in pending),
                    "\n".join(self._describe(n, last.get(n.name)) for n in pending)))
            if pending:
                time.sleep(0.1 * TIME_FACTOR)  # each poll is an exec: spare the guest's CPU
        wrong = [w for w in (self.check_backend(n, answers[n.name]) for n in ready) if w]
        if wrong:
            raise AssertionError("meshd does not run the WireGuard backend in its config:\n"
                                 + "\n".join(wrong))

    def wg_backend_of(self, node):
        """The backend in node's meshd.yaml (Mesh.wg_backend unless an override changed it)."""
        return self.configs[node.name].get("wireguard", {}).get("backend", self.wg_backend)

    def backend_facts(self, node, status=None):
        """What shows which WireGuard backend a node's meshd runs: {"meshctl": node.backend of
        `meshctl status` (or of `status`, an answer already at hand), "link": the kind of
        node.wg_ifname in `ip -d link` ("wireguard" for the kernel's, "tun" for wireguard-go's),
        "wireguard-go": pids of wireguard-go processes in the node's namespace, "uapi": whether
        the node's wireguard-go UAPI socket exists}."""
        facts = {}
        try:
            facts["meshctl"] = (status or self.meshctl(node, "status"))["node"]["backend"]
        except Exception as e:  # noqa: BLE001 - reported as the fact
            facts["meshctl"] = "error: %s" % e
        links = node.ipj("-d", "link", "show")
        facts["link"] = next((l.get("linkinfo", {}).get("info_kind", "?") for l in links
                              if l.get("ifname") == node.wg_ifname), None)
        facts["wireguard-go"] = [p for p in node.pids() if _comm(p) == "wireguard-go"]
        sock_dirs = [node.private_path(d) for d in node.topo.private_dirs
                     if d.rstrip("/") == "/run/wireguard"] or ["/run/wireguard"]
        facts["uapi"] = any(os.path.exists(os.path.join(d, node.wg_ifname + ".sock"))
                            for d in sock_dirs)
        return facts

    def check_backend(self, node, status=None):
        """None when node's meshd runs the backend its config names; else what is wrong (the
        facts it saw are kept in backend_seen[node.name]). The kernel backend: meshctl says
        kernel, the interface is a wireguard link, no wireguard-go and no UAPI socket (a silent
        fallback to wireguard-go fails here). userspace: meshctl says userspace, the interface
        is wireguard-go's tun device and wireguard-go runs."""
        want = self.wg_backend_of(node)
        f = self.backend_seen[node.name] = self.backend_facts(node, status)
        ok = f["meshctl"] == want and f["link"] == _LINK_KIND.get(want)
        if want == "kernel":
            ok = ok and not f["wireguard-go"] and not f["uapi"]
        else:
            ok = ok and bool(f["wireguard-go"])
        if ok:
            return None
        return "%s: want %s backend, see %s\n%s" % (node.name, want, json.dumps(f, sort_keys=True),
                                                   _tail(self.log(node), 20))

    def paths(self, node):
        """{peer name: path} as `meshctl peers --json` on `node` shows it."""
        return peer_paths(self.meshctl(node, "peers"))

    def wait_paths(self, expected, timeout=30.0):
        """expected: {(a, b): "direct" | "relay"} with node names or Nodes; polls `meshctl peers`
        on a until b shows that path, for every pair. Raises AssertionError with the last observed
        tables and the tails of both meshd logs."""
        want = {(_name(a), _name(b)): v for (a, b), v in expected.items()}
        tables = {}
        deadline = time.monotonic() + timeout
        while True:
            bad = []
            for a in sorted({a for a, _ in want}):
                try:
                    tables[a] = self.paths(self.t[a])
                except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                    tables[a] = "error: %s" % e
            for (a, b), v in want.items():
                got = tables[a].get(b) if isinstance(tables[a], dict) else None
                if got != v:
                    bad.append((a, b, v, got))
            if not bad:
                return tables
            if time.monotonic() > deadline:
                msg = ["paths not as expected within %.1fs:" % timeout]
                for a, b, v, got in bad:
                    msg.append("  %s -> %s: want %s, got %s" % (a, b, v, got))
                msg.append("last observed tables: " + json.dumps(tables, indent=1, sort_keys=True))
                for name in sorted({x for a, b, _, _ in bad for x in (a, b)}):
                    msg.append(self._describe(self.t[name]))
                raise AssertionError("\n".join(msg))
            time.sleep(0.2 * TIME_FACTOR)  # each poll is an exec per node: spare the guest's CPU

    def _describe(self, node, last_answer=None):
        p = self.procs.get(node.name)
        state = ("not started" if p is None else "running (pid %d)" % p.pid if p.alive()
                 else "exited %s" % p.popen.returncode)
        out = "--- %s: meshd %s" % (node.name, state)
        if last_answer:
            out += "; last meshctl: %s" % last_answer.strip()
        return out + "\n" + _tail(self.log(node))

    def diagnose(self, node, log_lines=60):
        """Everything worth seeing when traffic does not flow through `node`: meshd's state and
        `meshctl peers`, `wg show`, the WireGuard link and the routes, and the meshd log tail."""
        out = ["--- %s" % node.name]
        p = self.procs.get(node.name)
        out.append("meshd: %s" % ("not started" if p is None else "running (pid %d)" % p.pid
                                  if p.alive() else "exited %s" % p.popen.returncode))
        if p is not None and p.alive():
            try:
                out.append(self.meshctl(node, "peers", json=False, check=False))
            except Exception as e:  # the diagnosis must not hide the failure being diagnosed
                out.append("meshctl peers: %s" % e)
        for cmd in (["wg", "show", node.wg_ifname], ["ip", "-br", "link", "show", node.wg_ifname],
                    ["ip", "route"], ["ip", "-6", "route"]):
            r = node.run(cmd, check=False, timeout=10)
            out.append("$ %s\n%s%s" % (" ".join(cmd), r.stdout, r.stderr))
        out.append(_tail(self.log(node), log_lines))
        return "\n".join(out)

    # -- pods -----------------------------------------------------------------------------------

    def net_conf(self, node, cidrs_from="conf", **extra):
        """The CNI network configuration used for pods on `node`. cidrs_from="conf": the node's
        pod CIDRs in "podCIDRs"; "node_file": none, the plugin reads meshd's node.json (nodeFile
        pointing into the node's runDir) as on a real node."""
        conf = {"cniVersion": CNI_VERSION, "name": CNI_NETWORK, "type": "meshwire",
                "dataDir": os.path.join(node.dir, "ipam"), "nodeFile": self.node_file(node)}
        if cidrs_from == "conf":
            conf["podCIDRs"] = self.configs[node.name]["podCIDRs"]
        elif cidrs_from != "node_file":
            raise ValueError("cidrs_from is conf or node_file, not %r" % cidrs_from)
        conf.update(extra)
        return conf

    def cni(self, node, command, netns_path, container_id, conf, ifname="eth0", check=True):
        """Runs the meshwire plugin in `node`'s namespace as a runtime would; (rc, parsed stdout,
        stderr). Raises on a non-zero exit when check."""
        env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=container_id,
                   CNI_NETNS=netns_path, CNI_IFNAME=ifname,
                   CNI_PATH=os.path.dirname(self.plugin_bin))
        p = node.run([self.plugin_bin], check=False, timeout=30, input=json.dumps(conf), env=env)
        out = None
        if p.stdout.strip():
            try:
                out = json.loads(p.stdout)
            except ValueError:
                out = p.stdout
        if check and p.returncode != 0:
            raise RuntimeError("CNI %s on %s for %s -> exit %d\nstdout: %s\nstderr: %s" % (
                command, node.name, container_id, p.returncode, p.stdout, p.stderr))
        return p.returncode, out, p.stderr

    def add_pod(self, node, name, cidrs_from="conf", **conf_extra):
        """A pod on `node`: a namespace (owned by the topology, named pod-<node>-<name>) wired by
        CNI ADD in the node's namespace. Returns a Pod (addr4/addr6 from the CNI result)."""
        tag = "pod-%s-%s" % (node.name, name)
        netns = self.t.add_netns(tag)
        cid = "mesh-%s-%s" % (node.name, name)
        conf = self.net_conf(node, cidrs_from, **conf_extra)
        try:
            _, result, _ = self.cni(node, "ADD", netns.path, cid, conf)
        except BaseException:
            self.cni(node, "DEL", netns.path, cid, conf, check=False)  # roll back what it did
            raise
        if not isinstance(result, dict):
            raise RuntimeError("CNI ADD on %s returned no JSON result: %r" % (node.name, result))
        pod = Pod(self, node, name, netns, cid, conf, result)
        self.pods.append(pod)
        return pod

    def del_pod(self, pod, check=True):
        """CNI DEL (idempotent); the namespace itself stays until the topology closes."""
        if pod.deleted:
            return
        self.cni(pod.node, "DEL", pod.path, pod.container_id, pod.conf, check=check)
        pod.deleted = True

    # -- teardown -------------------------------------------------------------------------------

    def close(self):
        """CNI DEL for every pod, meshd stopped everywhere (TERM, then KILL), then the topology
        closed when this Mesh owns it. Goes on past failures and re-raises the first one."""
        if self._closed:
            return
        self._closed = True
        first = None
        for pod in reversed(self.pods):
            try:
                self.del_pod(pod)
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                first = first or e
                print("mesh: DEL of %s failed: %s" % (pod.name, e), file=sys.stderr)
        for name, p in self.procs.items():
            try:
                p.stop(3.0 * TIME_FACTOR)
            except Exception as e:  # noqa: BLE001
                first = first or e
                print("mesh: stopping meshd on %s failed: %s" % (name, e), file=sys.stderr)
        if self._owns_topology:
            self.t.close()
        if first is not None:
            raise first

    def leftovers(self):
        """What is left of the mesh and its topology (empty after close() of an owned one)."""
        left = [("meshd", "%s:%d" % (n, p.pid)) for n, p in self.procs.items() if p.alive()]
        return left + self.t.leftovers()


def _name(x):
    return x if isinstance(x, str) else x.name


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def _json_loads(text, cmd):
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError("%s: not JSON (%s): %r" % (" ".join(cmd), e, text[:500])) from None


__all__ = ["Mesh", "Pod", "pod_cidrs", "CLUSTER_CIDRS", "peer_paths", "to_yaml", "merge",
           "CNI_NETWORK", "WG_BACKENDS", "WG_BACKEND_ENV", "wg_backend_default", "TIME_FACTOR",
           "time_factor"]
if __name__ == "__main__":
    print(__doc__)
    sys.exit(0)
