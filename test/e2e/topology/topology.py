#!/usr/bin/env python3
"""meshwire end-to-end testbed: a small Internet in network namespaces (Python 3 stdlib, root).

    with Topology(lans=["cone", "symmetric"], delay_ms={"relay2": 30}) as t:
        a, r1 = t["lan1a"], t["relay1"]
        echo = r1.popen([sys.executable, NETTOOLS, "udp-echo", "--port", "7000"], name="echo")
        print(a.run(["ping", "-c1", r1.addr4]).stdout)

What is built (every namespace is named <prefix><role>, prefix = "mwt<pid>-"):

    internet      bridge br0 = the public segment, 203.0.113.1/24 + 2001:db8::1/64 (the
                  "upstream gateway" of public nodes; it forwards nothing, but IPv6 to the
                  prefixes of fw6 LANs when there are any)
    relay1..N     public nodes: eth0 203.0.113.1N/24, 2001:db8::1N/64, default via .1 / ::1
    natK          NAT router of LAN K: wan0 203.0.113.10K + 2001:db8::10K on the public segment,
                  bridge lan0 192.168.1K.1/24 + fd0K::1/64 inside; nftables masquerade for v4 AND
                  v6 (cone: plain masquerade; symmetric: masquerade random), stateful firewall
                  (nothing unsolicited gets in from wan0). Two more kinds (Topology._nat_rules):
                  plain (masquerade, no firewall: the router's own stack meets unsolicited
                  packets) and fw6 (IPv4 as cone; IPv6 routed, global 2001:db8:10K::/64 inside,
                  no NAT66, the same firewall; the internet namespace then forwards IPv6 to it)
    lanKa, lanKb  LAN nodes: eth0 192.168.1K.10/.11 + fd0K::10/::11 (fw6: 2001:db8:10K::10/::11),
                  default via the router
    dly-<node>    (optional) a user-space delay bridge spliced into the uplink of a public node
                  (between eth0 and br0) or of a NAT router natK (between wan0 and br0: the whole
                  LAN's WAN uplink; traffic inside the LAN does not cross it); see delayer.py:
                  adds delay_ms one-way, in each direction, to every frame, drops loss_pct %

No interface is ever created in the caller's namespace: veth pairs are created directly inside the
test namespaces (`ip -n A link add ... peer ... netns B`), so the only change to the root namespace
is the set of named namespaces under /run/netns. nft tables live in the router namespaces and
vanish with them.

Cleanup: Topology.close() (context manager, atexit, SIGINT/SIGTERM/SIGHUP handlers) stops every
process it started (process group TERM, then KILL), kills whatever else still runs in its
namespaces or names its temp dir or WireGuard interfaces, deletes the namespaces, the WireGuard
sockets (the shared /run/wireguard and the per-node private copies) and the temp dir;
Topology.leftovers() looks for all of these where they really are. Only a SIGKILLed run leaves
debris: `topology.py --cleanup-stale` removes everything of runs whose process is gone
(namespaces, processes, temp dirs with the per-node dirs, wireguard sockets), see cleanup_stale().
"""

import argparse
import atexit
import ctypes
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DELAYER = os.path.join(HERE, "delayer.py")
NETTOOLS = os.path.join(HERE, "nettools.py")

PID = os.getpid()
PREFIX = "mwt%d-" % PID
# Names that carry the pid of the test process that made them (see cleanup_stale()):
#   mwt<pid>-...   this testbed's namespaces and temp dirs (mwt<pid>-<n>-... for a 2nd topology)
#   mwt<pid>n<i>   this testbed's WireGuard interface names, so wireguard-go sockets and args
#   mwt-<pid>-...  the CNI tests' (test/e2e/cni/cnilib.py) and meshd_cli's namespaces and temp dirs
STALE_RE = re.compile(r"^mwt(?:(\d+)[-n]|-(\d+)-)")
# The same inside a command line argument: a path component or a whole word.
STALE_ARG_RE = re.compile(r"(?:^|/)mwt-?(\d+)-|(?<![\w-])mwt(\d+)n\d+(?!\w)")
NETNS_DIR = "/run/netns"
WG_RUN_DIR = "/run/wireguard"

PUBLIC4 = ipaddress.ip_network("203.0.113.0/24")
PUBLIC6 = ipaddress.ip_network("2001:db8::/64")


def lan_net4(k):
    return ipaddress.ip_network("192.168.%d.0/24" % (10 + k))


def lan_net6(k, routed=False):
    """LAN K's IPv6 prefix: ULA behind NAT66, or (a "fw6" LAN) a global prefix the router routes
    (2001:db8:10K::/64, reached from the public segment through the internet namespace)."""
    if routed:
        return ipaddress.ip_network("2001:db8:%d::/64" % (100 + k))
    return ipaddress.ip_network("fd%02x::/64" % k)


NAT_KINDS = ("cone", "symmetric", "plain", "fw6")


# ------------------------------------------------------------------------------------------------
# small helpers


def sh(cmd, check=True, timeout=60, input=None):
    """Run a command in the caller's namespace (only `ip netns ...`/`ip -n ...` are used so)."""
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s -> exit %d\n%s%s" % (" ".join(map(str, cmd)), p.returncode,
                                                     p.stdout, p.stderr))
    return p


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def netns_list():
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_pids(ns):
    p = sh(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []


def kill_netns_processes(ns, grace=1.0):
    """TERM then KILL every process whose network namespace is `ns`."""
    pids = netns_pids(ns)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if pid_alive(p) and not _is_zombie(p)]
            time.sleep(0.02)
        if not pids:
            return


def _is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def delete_netns(ns):
    kill_netns_processes(ns)
    sh(["ip", "netns", "del", ns], check=False)


def ns_id(path):
    """(st_dev, st_ino) of a network namespace file (/run/netns/X, /proc/PID/ns/net), or None.
    The kernel reuses the inode number of a freed namespace: confirm with ns_cookie()."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_libc = ctypes.CDLL(None, use_errno=True)
SO_NETNS_COOKIE = 71  # Linux >= 5.14


def ns_cookie(path):
    """The network namespace's cookie (64 bits, never reused while the system runs, unlike its
    inode number), read from a socket made in it by a helper thread; None if it cannot be read."""
    out = []

    def run():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if _libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET: only this thread moves
                return
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as so:
                out.append(struct.unpack("Q", so.getsockopt(socket.SOL_SOCKET,
                                                            SO_NETNS_COOKIE, 8))[0])
        except OSError:
            pass
        finally:
            os.close(fd)

    t = threading.Thread(target=run)  # the thread and its namespace end together
    t.start()
    t.join()
    return out[0] if out else None


def processes():
    """Every live process as (pid, net namespace id, argv); kernel threads and zombies (empty
    cmdline) are left out."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        pid = int(e)
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv:
            out.append((pid, ns_id("/proc/%d/ns/net" % pid), argv))
    return out


def _self_and_ancestors():
    """Our pid and our parents' (never to be killed: the shell or ctest that runs us may well
    mention a test's name or directory)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open("/proc/%d/stat" % pid) as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def kill_pids(pids, grace=1.0):
    """TERM, then KILL after `grace` s, the given processes; returns those still alive."""
    pids = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while True:
            pids = [p for p in pids if pid_alive(p) and not _is_zombie(p)]
            if not pids or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if not pids:
            break
    return pids


def describe_proc(pid, argv):
    return "%d %s" % (pid, " ".join(argv)[:200])


# ------------------------------------------------------------------------------------------------
# global cleanup: every live Topology is closed at exit and on SIGINT/SIGTERM/SIGHUP

_live = []
_node_index = 0  # wg_ifname numbers, unique in the process
_live_lock = threading.Lock()
_handlers_installed = False


def _close_all():
    while True:
        with _live_lock:
            if not _live:
                return
            t = _live[-1]
        t.close()


def _install_handlers():
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_close_all)
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, _frame):
        print("\ntopology: caught signal %d, cleaning up" % signum, file=sys.stderr)
        _close_all()
        os._exit(128 + signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


# ------------------------------------------------------------------------------------------------
# processes


class Proc:
    """A long-running process started in a node (own process group; output in a log file)."""

    def __init__(self, node, name, cmd, popen, log_path):
        self.node, self.name, self.cmd, self.popen, self.log_path = node, name, cmd, popen, log_path

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        """Signal the process group (children too); a no-op once the process has been reaped,
        so a recycled pid can never be hit."""
        if self.popen.returncode is not None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout=3.0):
        """SIGTERM the process group, SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self):
        """SIGKILL the process group at once (a crash); returns the exit code."""
        self.signal(signal.SIGKILL)
        try:
            return self.popen.wait(5)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout=None):
        return self.popen.wait(timeout)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10.0):
        """Wait until the log matches regex `pattern`; returns the match or raises TimeoutError."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if not self.alive():
                raise RuntimeError("%s on %s exited (%s) before %r; log:\n%s" % (
                    self.name, self.node.name, self.popen.returncode, pattern, self.log()))
            if time.monotonic() > deadline:
                raise TimeoutError("%s on %s: no %r within %.1fs; log:\n%s" % (
                    self.name, self.node.name, pattern, timeout, self.log()))
            time.sleep(0.02)


# ------------------------------------------------------------------------------------------------
# nodes


class Node:
    """One network namespace playing a host.

    name       short role name ("relay1", "lan1", "lan1a", "internet", ...)
    ns         namespace name (prefix + name); path: /run/netns/<ns> (CNI_NETNS-style path)
    kind       "internet" | "public" | "router" | "lan" | "delay" | "extra"
    uplink     the interface that connects it to the rest ("eth0" for hosts, "wan0" for routers)
    addr4/6    its address on its uplink (routers: the public one; lan_addr4/6 the LAN side)
    wg_ifname  a WireGuard interface name unique on this machine (mwt<pid>n<i>, <= 15 chars)
    dir        a private directory for configs, state and logs (inside the topology temp dir)
    """

    def __init__(self, topo, name, kind, index):
        self.topo, self.name, self.kind = topo, name, kind
        self.ns = topo.prefix + name
        self.path = os.path.join(NETNS_DIR, self.ns)
        self.uplink = None
        self.addr4 = self.addr6 = None
        self.lan_addr4 = self.lan_addr6 = None
        self.lan = None  # LAN number for routers and LAN nodes
        self.nat = None  # routers: one of NAT_KINDS
        self.delayer = None  # public nodes and routers with a delay bridge: the Delayer
        self.ns_id = self.ns_cookie = None  # the namespace's identity, set once it exists
        self.wg_ifname = "mwt%dn%d" % (topo.pid, index)
        assert len(self.wg_ifname) <= 15
        self.dir = os.path.join(topo.tmpdir, name)
        self.run_dir = os.path.join(self.dir, "run")
        os.makedirs(self.run_dir, exist_ok=True)
        for d in topo.private_dirs:
            os.makedirs(self.private_path(d), exist_ok=True)
        self._procs = []

    def __repr__(self):
        return "<Node %s %s %s/%s>" % (self.name, self.kind, self.addr4, self.addr6)

    def private_path(self, d):
        """Where this node's private copy of directory `d` (e.g. /run/wireguard) lives."""
        return os.path.join(self.run_dir, d.strip("/").replace("/", "_"))

    # -- commands -------------------------------------------------------------------------------

    def _wrap(self, cmd):
        """`ip netns exec` + per-node private bind mounts (see Topology(private_dirs=...))."""
        cmd = [str(c) for c in cmd]
        binds = []
        for d in self.topo.private_dirs:
            src = self.private_path(d)
            binds.append("mount --bind %s %s" % (shlex.quote(src), shlex.quote(d)))
        if not binds:
            return ["ip", "netns", "exec", self.ns] + cmd
        script = " && ".join(binds) + ' && exec "$@"'
        return ["ip", "netns", "exec", self.ns, "sh", "-c", script, "sh"] + cmd

    def run(self, cmd, check=True, timeout=60, input=None, env=None):
        """Run `cmd` (list) in the node and wait: subprocess.CompletedProcess (text output)."""
        full = self._wrap(cmd)
        p = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout,
                           env=env)
        if check and p.returncode != 0:
            raise RuntimeError("[%s] %s -> exit %d\nstdout: %s\nstderr: %s" % (
                self.name, " ".join(map(str, cmd)), p.returncode, p.stdout, p.stderr))
        return p

    def popen(self, cmd, name=None, env=None, cwd=None):
        """Start a long-running `cmd` in the node, stdout+stderr to <dir>/<name>.log.

        The process gets its own process group; the topology stops it at close(). Returns a Proc.
        """
        name = name or os.path.basename(str(cmd[0]))
        log_path = os.path.join(self.dir, "%s.log" % name)
        n = 1
        while os.path.exists(log_path):
            n += 1
            log_path = os.path.join(self.dir, "%s.%d.log" % (name, n))
        with open(log_path, "wb") as log:
            p = subprocess.Popen(self._wrap(cmd), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                 cwd=cwd)
        proc = Proc(self, name, list(cmd), p, log_path)
        self._procs.append(proc)
        return proc

    def procs(self):
        return list(self._procs)

    def kill_all(self, sig=signal.SIGKILL):
        """Kill every process in this namespace (started by popen or not)."""
        for pr in self._procs:
            pr.signal(sig)
        for pid in netns_pids(self.ns):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        for pr in self._procs:
            try:
                pr.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def pids(self):
        return netns_pids(self.ns)

    def ip(self, *args, check=True):
        return sh(["ip", "-n", self.ns] + [str(a) for a in args], check=check)

    def ipj(self, *args):
        out = sh(["ip", "-j", "-n", self.ns] + [str(a) for a in args]).stdout.strip()
        return json.loads(out) if out else []

    def sysctl(self, key, value=None):
        path = "/proc/sys/" + key.replace(".", "/")
        if value is None:
            return self.run(["cat", path]).stdout.strip()
        self.run(["sh", "-c", "echo %s > %s" % (shlex.quote(str(value)), path)])
        return str(value)

    def nft(self, script):
        return self.run(["nft", "-f", "-"], input=script)

    # -- addresses and links --------------------------------------------------------------------

    def addrs(self, ifname=None, family=None):
        """Global addresses [(ifname, "addr")] (family 4/6 filter)."""
        out = []
        for link in self.ipj("addr", "show"):
            if ifname and link["ifname"] != ifname:
                continue
            for a in link.get("addr_info", []):
                if a.get("scope") != "global":
                    continue
                fam = 4 if a["family"] == "inet" else 6
                if family and fam != family:
                    continue
                out.append((link["ifname"], a["local"]))
        return out

    def link_down(self, ifname=None):
        """Take a link down (default: the uplink): a relay loses all connectivity at once."""
        self.ip("link", "set", "dev", ifname or self.uplink, "down")

    def link_up(self, ifname=None):
        """Bring it back; addresses stay, routes are restored (they are re-added if flushed)."""
        ifname = ifname or self.uplink
        self.ip("link", "set", "dev", ifname, "up")
        if ifname == self.uplink:
            self._restore_routes()

    def _restore_routes(self):
        gw4, gw6 = self._gateways()
        if gw4:
            self.ip("route", "replace", "default", "via", gw4, "dev", self.uplink)
        if gw6:
            self.ip("-6", "route", "replace", "default", "via", gw6, "dev", self.uplink)

    def _gateways(self):
        if self.kind in ("public", "router"):
            return str(PUBLIC4[1]), str(PUBLIC6[1])
        if self.kind == "lan":
            routed = self.topo.router_of(self.lan).nat == "fw6"
            return str(lan_net4(self.lan)[1]), str(lan_net6(self.lan, routed)[1])
        return None, None

    def set_delay(self, ms, loss=None):
        """Change this node's uplink delay (a public node or a NAT router; needs
        delay_ms={name: ...} at build time)."""
        if not self.delayer:
            raise RuntimeError("%s has no delay bridge (pass delay_ms={%r: 0} to Topology)" % (
                self.name, self.name))
        self.delayer.set(ms, loss)


class Delayer:
    """A user-space delay bridge (delayer.py) between a node's uplink and the public bridge."""

    def __init__(self, node, dnode, ms, loss):
        self.node, self.dnode = node, dnode
        self.ctl = os.path.join(dnode.dir, "delay.ctl")
        self.ms, self.loss, self.seq = ms, loss, 0
        self._write()
        self.proc = dnode.popen([sys.executable, DELAYER, "--a", "dn0", "--b", "up0",
                                 "--ctl", self.ctl], name="delayer")
        self.proc.wait_log(r"delayer: ready", timeout=10)

    def _write(self):
        tmp = self.ctl + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"delay_ms": self.ms, "loss_pct": self.loss, "seq": self.seq}, f)
        os.replace(tmp, self.ctl)

    def set(self, ms, loss=None):
        self.ms = ms
        if loss is not None:
            self.loss = loss
        self.seq += 1
        self._write()
        self.proc.signal(signal.SIGHUP)
        self.proc.wait_log(r"delayer: seq=%d " % self.seq, timeout=5)


# ------------------------------------------------------------------------------------------------
# the topology


class Topology:
    """Build the testbed; use as a context manager (or call close()).

    relays       number of public relay nodes (relay1..relayN), or a list of names
    lans         one entry per LAN: "cone", "symmetric", "plain" or "fw6" (its router's kind,
                 Topology._nat_rules)
    nodes_per_lan  hosts per LAN (lanKa, lanKb, ...)
    delay_ms     {public node or NAT router name (relayN, natK): one-way ms} -> a delay bridge on
                 that node's uplink (a router's: the LAN's WAN uplink, so every LAN node's traffic
                 to the outside crosses it, LAN-internal traffic does not); 0 is fine: the delay
                 can be changed later with node.set_delay
    loss_pct     {same names: percent} random frame loss on the same bridge (each direction)
    private_dirs directories that each node sees privately (a per-node dir is bind-mounted over
                 them in node.run/popen); default /run/wireguard so that `wg show` in a node lists
                 only that node's wireguard-go interfaces
    """

    def __init__(self, relays=2, lans=("cone", "symmetric"), nodes_per_lan=2, delay_ms=None,
                 loss_pct=None, private_dirs=(WG_RUN_DIR,), keep_tmp=False):
        if os.geteuid() != 0:
            raise PermissionError("the topology needs root")
        _install_handlers()
        # The pid of the process that builds it (not the one that imported this module: a
        # forked child's testbed must not look stale when its parent exits).
        self.pid = os.getpid()
        self.prefix = "mwt%d-" % self.pid
        self._seq = getattr(Topology, "_count", 0)
        Topology._count = self._seq + 1
        if self._seq:  # several topologies in one process: keep prefixes distinct
            self.prefix = "mwt%d-%d-" % (self.pid, self._seq)
        self.tmpdir = tempfile.mkdtemp(prefix="mwt%d-" % self.pid)
        self.keep_tmp = keep_tmp
        self.private_dirs = tuple(private_dirs or ())
        for d in self.private_dirs:
            os.makedirs(d, exist_ok=True)  # the mount point must exist
        self.nodes = {}
        self._closed = False
        self._lock = threading.RLock()
        with _live_lock:
            _live.append(self)
        delay_ms = dict(delay_ms or {})
        loss_pct = dict(loss_pct or {})
        relay_names = (["relay%d" % i for i in range(1, relays + 1)]
                       if isinstance(relays, int) else list(relays))
        try:
            self._build(relay_names, list(lans), nodes_per_lan, delay_ms, loss_pct)
        except BaseException:
            self.close()
            raise

    # -- mapping access -------------------------------------------------------------------------

    def __getitem__(self, name):
        return self.nodes[name]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def relays(self):
        return [n for n in self.nodes.values() if n.kind == "public"]

    @property
    def routers(self):
        return [n for n in self.nodes.values() if n.kind == "router"]

    def lan_nodes(self, k=None):
        return [n for n in self.nodes.values() if n.kind == "lan" and (k is None or n.lan == k)]

    def router_of(self, node):
        """The NAT router of a LAN node (or of LAN number `node`)."""
        return self.nodes["nat%d" % (node if isinstance(node, int) else node.lan)]

    @property
    def hosts(self):
        """The nodes that would run meshd: public nodes and LAN nodes."""
        return [n for n in self.nodes.values() if n.kind in ("public", "lan")]

    # -- building -------------------------------------------------------------------------------

    def _new_node(self, name, kind):
        if name in self.nodes:
            raise ValueError("duplicate node name %r" % name)
        global _node_index
        with _live_lock:
            _node_index += 1
            index = _node_index
        n = Node(self, name, kind, index)
        sh(["ip", "netns", "add", n.ns])
        self.nodes[name] = n
        # to find its processes even after the name is gone (ns_id a quick filter, the cookie
        # the proof: a freed namespace's inode number may be another test's namespace next)
        n.ns_id, n.ns_cookie = ns_id(n.path), ns_cookie(n.path)
        n.ip("link", "set", "lo", "up")
        # static addresses survive link down/up, as configured hosts keep them
        n.sysctl("net.ipv6.conf.all.keep_addr_on_down", 1)
        return n

    def add_netns(self, tag):
        """An extra empty namespace (e.g. a pod) owned and cleaned up by this topology."""
        return self._new_node(tag, "extra")

    def _veth(self, a, a_if, b, b_if):
        """A veth pair with one end in each namespace; nothing touches the caller's namespace."""
        a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.ns)

    def _build(self, relay_names, lans, per_lan, delay_ms, loss_pct):
        unknown = set(delay_ms) | set(loss_pct)
        unknown -= set(relay_names) | {"nat%d" % k for k in range(1, len(lans) + 1)}
        if unknown:
            raise ValueError("delay/loss only on public nodes and NAT routers, not %s" %
                             sorted(unknown))
        inet = self._new_node("internet", "internet")
        self.internet = inet
        self._port = 0
        self._lan_count = {}
        inet.ip("link", "add", "br0", "type", "bridge", "stp_state", "0")
        inet.ip("addr", "add", "%s/24" % PUBLIC4[1], "dev", "br0")
        inet.ip("addr", "add", "%s/64" % PUBLIC6[1], "dev", "br0", "nodad")
        inet.ip("link", "set", "br0", "up")
        for name in relay_names:
            self.add_public(name, delay_ms.get(name), loss_pct.get(name))
        for i, kind in enumerate(lans, 1):
            k = self.add_lan(kind, delay_ms.get("nat%d" % i), loss_pct.get("nat%d" % i))
            for _ in range(per_lan):
                self.add_lan_node(k)

    def _attach(self, node, ifname, host, delay_ms=None, loss_pct=None):
        """Plug `node` into the public bridge (through a delay bridge if delay/loss is given)."""
        inet = self.internet
        self._port += 1
        pname = "p%d" % self._port
        d = None
        if delay_ms is not None or loss_pct is not None:
            d = self._new_node("dly-" + node.name, "delay")
            self._veth(node, ifname, d, "dn0")
            self._veth(d, "up0", inet, pname)
            for i in ("dn0", "up0"):
                d.sysctl("net.ipv6.conf.%s.disable_ipv6" % i, 1)
                d.ip("link", "set", i, "up")
        else:
            self._veth(node, ifname, inet, pname)
        inet.ip("link", "set", pname, "master", "br0")
        inet.ip("link", "set", pname, "up")
        node.uplink = ifname
        node.addr4 = str(PUBLIC4[host])
        node.addr6 = str(PUBLIC6[int(str(host), 16)])  # 203.0.113.11 <-> 2001:db8::11
        node.ip("addr", "add", "%s/24" % node.addr4, "dev", ifname)
        node.ip("addr", "add", "%s/64" % node.addr6, "dev", ifname, "nodad")
        node.ip("link", "set", ifname, "up")
        node._restore_routes()
        if d is not None:
            node.delayer = Delayer(node, d, float(delay_ms or 0), float(loss_pct or 0))

    def add_public(self, name=None, delay_ms=None, loss_pct=None):
        """A public node (relay candidate) on the public segment, also while the testbed runs:
        203.0.113.(10+i) / 2001:db8::(10+i) for the i-th public node."""
        i = len(self.relays) + 1
        if i > 89:
            raise ValueError("at most 89 public nodes")
        n = self._new_node(name or "relay%d" % i, "public")
        self._attach(n, "eth0", 10 + i, delay_ms, loss_pct)
        return n

    def add_lan(self, kind="cone", delay_ms=None, loss_pct=None):
        """A LAN behind a new NAT router natK; returns K (add hosts with add_lan_node(K)).
        delay_ms/loss_pct: a delay bridge on its WAN uplink (between wan0 and the public bridge)."""
        if kind not in NAT_KINDS:
            raise ValueError("NAT kind must be one of %s, not %r" % (", ".join(NAT_KINDS), kind))
        k = len(self.routers) + 1
        if k > 99:
            raise ValueError("at most 99 LANs")
        rt = self._new_node("nat%d" % k, "router")
        rt.lan, rt.nat = k, kind
        self._lan_count[k] = 0
        self._attach(rt, "wan0", 100 + k, delay_ms, loss_pct)
        n4, n6 = lan_net4(k), lan_net6(k, kind == "fw6")
        rt.lan_addr4, rt.lan_addr6 = str(n4[1]), str(n6[1])
        if kind == "fw6":
            self._route_public6(n6, rt.addr6)
        rt.ip("link", "add", "lan0", "type", "bridge", "stp_state", "0")
        rt.ip("addr", "add", "%s/24" % n4[1], "dev", "lan0")
        rt.ip("addr", "add", "%s/64" % n6[1], "dev", "lan0", "nodad")
        rt.ip("link", "set", "lan0", "up")
        rt.sysctl("net.ipv4.ip_forward", 1)
        rt.sysctl("net.ipv6.conf.all.forwarding", 1)
        rt.nft(self._nat_rules(kind))
        return k

    def add_lan_node(self, k, name=None):
        """Another host on LAN k (also while the LAN's uplink is down): lanKa, lanKb, ...
        with 192.168.1K.(10+j) / fd0K::(10+j)."""
        rt = self.router_of(k)
        j = self._lan_count[k]
        if j >= 26:
            raise ValueError("at most 26 nodes per LAN")
        self._lan_count[k] = j + 1
        n4, n6 = lan_net4(k), lan_net6(k, rt.nat == "fw6")
        h = self._new_node(name or "lan%d%s" % (k, chr(ord("a") + j)), "lan")
        h.lan = k
        pname = "h%d" % j
        self._veth(h, "eth0", rt, pname)
        rt.ip("link", "set", pname, "master", "lan0")
        rt.ip("link", "set", pname, "up")
        h.uplink = "eth0"
        h.addr4, h.addr6 = str(n4[10 + j]), str(n6[int(str(10 + j), 16)])
        h.lan_addr4, h.lan_addr6 = h.addr4, h.addr6
        h.ip("addr", "add", "%s/24" % h.addr4, "dev", "eth0")
        h.ip("addr", "add", "%s/64" % h.addr6, "dev", "eth0", "nodad")
        h.ip("link", "set", "eth0", "up")
        h._restore_routes()
        return h

    def _route_public6(self, prefix, via):
        """Routes a LAN's global IPv6 prefix from the public segment: the internet namespace (every
        public node's and router's IPv6 gateway) forwards it to the LAN's router. It forwarded
        nothing before; now it forwards IPv6 to these prefixes only (a blackhole default drops the
        rest silently, as before)."""
        inet = self.internet
        if not getattr(self, "_inet_routes6", False):
            inet.sysctl("net.ipv6.conf.all.forwarding", 1)
            inet.ip("-6", "route", "add", "blackhole", "default")
            self._inet_routes6 = True
        inet.ip("-6", "route", "add", str(prefix), "via", via, "dev", "br0")

    @staticmethod
    def _nat_rules(kind):
        """nftables of a LAN router by kind:
        cone       masquerade (v4 and v6; Linux keeps the source port when it can and maps one
                   source to one port towards every destination) and a stateful WAN firewall:
                   nothing unsolicited gets in (a home router; what lets a simultaneous open work)
        symmetric  masquerade random (a port per destination), the same firewall
        plain      masquerade, no firewall: unsolicited packets to the router's address reach its
                   own stack (which answers a closed UDP port with ICMP port unreachable, and
                   whose conntrack entry for that packet then owns the tuple)
        fw6        IPv4 as cone; IPv6 routed with global addresses (no NAT66) behind the same
                   stateful firewall"""
        masq = {"cone": "masquerade", "symmetric": "masquerade random", "plain": "masquerade",
                "fw6": "meta nfproto ipv4 masquerade"}[kind]
        firewall = "" if kind == "plain" else """
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "wan0" ct state established,related accept
        iifname "wan0" ct status dnat accept
        iifname "wan0" drop
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan0" ct state established,related accept
        iifname "wan0" meta l4proto { icmp, ipv6-icmp } accept
        iifname "wan0" drop
    }"""
        return """
table inet mwnat {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" %s
    }%s
}
""" % (masq, firewall)

    def expose(self, node, proto, port, public_port=None):
        """Port-forward router:public_port -> node:port (v4 only), e.g. a LAN node made a relay."""
        rt = self.router_of(node)
        rt.nft("add rule inet mwnat prerouting iifname \"wan0\" meta nfproto ipv4 %s dport %d "
               "dnat ip to %s:%d\n" % (proto, public_port or port, node.addr4, port))

    # -- teardown -------------------------------------------------------------------------------

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                nodes = list(self.nodes.values())
                for n in nodes:  # our processes first (process groups), politely
                    for pr in n._procs:
                        if pr.alive():
                            pr.signal(signal.SIGTERM)
                deadline = time.monotonic() + 2.0
                for n in nodes:
                    for pr in n._procs:
                        try:
                            pr.popen.wait(max(0.0, deadline - time.monotonic()))
                        except subprocess.TimeoutExpired:
                            pr.kill()
                for n in reversed(nodes):  # then anything else left in the namespaces
                    if os.path.exists(n.path):
                        delete_netns(n.ns)
                for ns in self._own_stray():  # anything with our prefix we lost track of
                    delete_netns(ns)
                # whatever still runs in a namespace of ours (its name already gone) or names
                # our temp dir or interfaces
                kill_pids(pid for pid, _ in self.processes())
                for f in self.wg_sockets():  # those of killed wireguard-go processes
                    _unlink(f)
            finally:
                if not self.keep_tmp:
                    shutil.rmtree(self.tmpdir, ignore_errors=True)
                with _live_lock:
                    if self in _live:
                        _live.remove(self)

    def _own_stray(self):
        """Namespaces with this topology's prefix (not those of a later one: mwt<pid>-<n>-...)."""
        out = []
        for ns in netns_list():
            if not ns.startswith(self.prefix):
                continue
            if self._seq == 0 and re.match(r"\d+-", ns[len(self.prefix):]):
                continue
            out.append(ns)
        return out

    def wg_sockets(self):
        """The WireGuard UAPI sockets of this topology where wireguard-go really puts them: every
        socket in a node's private /run/wireguard (node.run/popen bind-mount it there, so meshd's
        and wireguard-go's sockets land in <tmpdir>/<node>/run/run_wireguard), and our interface
        names in the shared /run/wireguard (a wireguard-go started without the private dir)."""
        out = []
        for n in self.nodes.values():
            f = os.path.join(WG_RUN_DIR, n.wg_ifname + ".sock")
            if os.path.exists(f):
                out.append(f)
            if WG_RUN_DIR in self.private_dirs:
                d = n.private_path(WG_RUN_DIR)
                try:
                    out += [os.path.join(d, x) for x in sorted(os.listdir(d))
                            if x.endswith(".sock")]
                except FileNotFoundError:
                    pass
        return out

    def processes(self):
        """[(pid, description)] of every process that belongs to this topology: in one of its
        namespaces (also one whose name was deleted while the process kept it alive), or naming
        its temp dir or one of its WireGuard interfaces (meshd --config <tmpdir>/..., wireguard-go
        mwt<pid>n<i>) wherever it runs. Never the calling process or its ancestors."""
        ids = {n.ns_id: n.ns_cookie for n in self.nodes.values() if n.ns_id}
        names = [n.wg_ifname for n in self.nodes.values()]
        rx = re.compile(r"(?<![\w-])(?:%s)(?!\w)" % "|".join(map(re.escape, names))) \
            if names else None
        mine = _self_and_ancestors()
        tmp = self.tmpdir.rstrip("/") + "/"
        out = []
        for pid, nid, argv in processes():
            if pid in mine:
                continue
            if (any(a == self.tmpdir or tmp in a for a in argv)
                    or (rx and any(rx.search(a) for a in argv))
                    or (nid in ids and ns_cookie("/proc/%d/ns/net" % pid) == ids[nid])):
                out.append((pid, describe_proc(pid, argv)))
        return out

    def leftovers(self):
        """What of this topology still exists (must be empty after close()): namespaces, processes
        (those started with popen and any other in its namespaces or naming its temp dir or
        interfaces), WireGuard sockets (shared and per-node dirs) and the temp dir."""
        left = [("netns", ns) for ns in self._own_stray()]
        seen = set()
        for n in self.nodes.values():
            for pr in n._procs:
                if pid_alive(pr.pid) and not _is_zombie(pr.pid):
                    left.append(("process", "%s:%d %s" % (n.name, pr.pid, pr.name)))
                    seen.add(pr.pid)
        left += [("process", d) for pid, d in self.processes() if pid not in seen]
        left += [("wg-socket", f) for f in self.wg_sockets()]
        if os.path.exists(self.tmpdir) and not self.keep_tmp:
            left.append(("tmpdir", self.tmpdir))
        return left

    def describe(self):
        lines = []
        for n in self.nodes.values():
            if n.kind in ("internet", "delay", "extra"):
                continue
            extra = ""
            if n.kind == "router":
                extra = " NAT=%s lan=%s,%s" % (n.nat, n.lan_addr4, n.lan_addr6)
            if n.delayer:
                extra += " delay=%gms" % n.delayer.ms
            lines.append("%-8s %-7s ns=%-22s %-15s %-18s wg=%s%s" % (
                n.name, n.kind, n.ns, n.addr4, n.addr6, n.wg_ifname, extra))
        return "\n".join(lines)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------------------------------
# stale cleanup


def _stale_pid(name):
    """The pid in a stale-able name (STALE_RE), or None."""
    m = STALE_RE.match(name)
    return int(m.group(1) or m.group(2)) if m else None


def _dead_run(pid):
    """A run is stale only when its process is gone; our own pid and live pids are never stale
    (a recycled pid keeps a dead run's debris until the next sweep: the safe direction)."""
    return pid is not None and pid != os.getpid() and not pid_alive(pid)


def _stale_procs():
    """Processes of dead runs that live outside a named namespace: [(pid, argv, in_root_ns)]."""
    mine = _self_and_ancestors()
    root = ns_id("/proc/self/ns/net")
    out = []
    for pid, nid, argv in processes():
        if pid in mine:
            continue
        runs = set()
        for a in argv:
            for m in STALE_ARG_RE.finditer(a):
                runs.add(int(m.group(1) or m.group(2)))
        if any(_dead_run(r) for r in runs):
            out.append((pid, argv, nid == root))
    return out


def stale_items():
    """What dead runs left: [(kind, what)] for kind in netns, process, dir, socket. Processes in
    our own (root) namespace that merely name a dead run (an editor on a kept log) are listed as
    "ignored": only processes in a test namespace are the testbed's."""
    items, in_ns = [], {}
    for ns in netns_list():
        if _dead_run(_stale_pid(ns)):
            items.append(("netns", ns))
            for pid in netns_pids(ns):
                in_ns[pid] = ns
    procs = _stale_procs()
    argvs = {pid: argv for pid, argv, _ in procs}
    items += [("process", describe_proc(pid, argvs.get(pid, ["(in %s)" % ns])))
              for pid, ns in sorted(in_ns.items())]
    for pid, argv, in_root in procs:
        if pid not in in_ns:
            items.append(("ignored" if in_root else "process", describe_proc(pid, argv)))
    for tmp in sorted({tempfile.gettempdir(), "/tmp"}):
        try:
            names = os.listdir(tmp)
        except FileNotFoundError:
            continue
        for d in names:
            path = os.path.join(tmp, d)
            if _dead_run(_stale_pid(d)) and os.path.isdir(path) and not os.path.islink(path):
                items.append(("dir", path))
    try:
        socks = os.listdir(WG_RUN_DIR)
    except FileNotFoundError:
        socks = []
    for f in socks:
        if _dead_run(_stale_pid(f)):
            items.append(("socket", os.path.join(WG_RUN_DIR, f)))
    return items


def cleanup_stale(verbose=True, dry_run=False):
    """Remove everything testbed runs whose process is gone left behind (a SIGKILLed test, e.g.
    a ctest timeout): processes in their namespaces or naming their temp dirs or interfaces
    (meshd, wireguard-go, delayers; TERM then KILL), their namespaces (mwt<pid>-*, and the CNI
    tests' and meshd_cli's mwt-<pid>-*), their temp dirs (with the per-node dirs and private
    /run/wireguard sockets inside) and their sockets in the shared /run/wireguard. Live runs are
    never touched. Returns (removed, still_there)."""
    found = stale_items()
    if verbose:
        for kind, what in found:
            print("%s %s %s" % ("stale" if dry_run else "removing", kind, what))
    if dry_run:
        return found, []
    for ns in [w for k, w in found if k == "netns"]:
        delete_netns(ns)
    kill_pids(pid for pid, _, in_root in _stale_procs() if not in_root)
    for kind, what in found:
        if kind == "dir":
            shutil.rmtree(what, ignore_errors=True)
        elif kind == "socket":
            _unlink(what)
    still = [x for x in stale_items() if x[0] != "ignored"]
    removed = [x for x in found if x not in still and x[0] != "ignored"]
    if verbose:
        for kind, what in still:
            print("NOT REMOVED: %s %s" % (kind, what))
        for kind, what in found:
            if kind == "ignored":
                print("left alone (root namespace, not a testbed process): %s" % what)
        print("cleanup-stale: %d removed, %d not removed" % (len(removed), len(still)))
    return removed, still


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cleanup-stale", action="store_true",
                    help="remove leftovers (namespaces, processes, temp dirs, wireguard sockets) "
                         "of test runs whose process is gone; exit 1 if some remain")
    ap.add_argument("--dry-run", action="store_true",
                    help="with --cleanup-stale: only list what would be removed")
    ap.add_argument("--up", action="store_true",
                    help="build the default topology, print it, wait for Ctrl-C, clean up")
    ap.add_argument("--lans", default="cone,symmetric")
    ap.add_argument("--delay", action="append", default=[], metavar="NODE=MS",
                    help="one-way delay on a public node's or NAT router's (natK) uplink")
    a = ap.parse_args(argv)
    if a.cleanup_stale:
        if os.geteuid() != 0:
            # Only root runs the e2e tests, so only root can have left namespaces behind.
            print("cleanup-stale: not root, nothing a test run can leave is removable; skipped")
            return 77
        _, still = cleanup_stale(dry_run=a.dry_run)
        return 1 if still else 0
    if a.up:
        delays = {k: float(v) for k, v in (d.split("=", 1) for d in a.delay)}
        with Topology(lans=a.lans.split(","), delay_ms=delays) as t:
            print(t.describe())
            print("run commands with: ip netns exec <ns> ...   (Ctrl-C to tear down)")
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
        return 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
