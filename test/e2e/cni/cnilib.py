"""Helpers for meshwire's CNI end-to-end tests and benchmark (Python 3 stdlib only, run as root).

What is here:
  * Cleanup      - a LIFO registry of undo actions that always runs (try/finally, atexit, signals)
  * Netns        - uniquely named network namespaces made with `ip netns add` (prefix mwt-<pid>-)
  * in_netns()   - switch the *calling thread* into a namespace (setns); children spawned from
                   that thread inherit it, so a plugin runs "on the node" without `ip netns exec`
  * Node         - a private 'node' namespace that plays the host: an underlay link with an MTU,
                   a default route, optionally a 'world' namespace behind it
  * invoke()     - run a plugin exactly as a runtime does: CNI_* env + config on stdin; returns
                   exit code, stdout, stderr, parsed JSON, wall time and the child's peak RSS
  * ConfList     - a minimal libcni: ADD in order threading prevResult, DEL in reverse, CHECK,
                   GC, STATUS, runtimeConfig injection for declared capabilities
  * leak checks  - links, routes and IPAM allocation files left behind in a node
"""

import atexit
import contextlib
import copy
import ctypes
import ipaddress
import itertools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

CLONE_NEWNET = 0x40000000
PREFIX = "mwt-%d-" % os.getpid()
_counter = itertools.count(1)
_counter_lock = threading.Lock()


def unique(tag):
    with _counter_lock:
        n = next(_counter)
    return "%s%s%d" % (PREFIX, tag, n)


# --------------------------------------------------------------------------------------------
# cleanup registry


class Cleanup:
    """LIFO undo stack. Actions never raise out of run(); failures are reported on stderr."""

    def __init__(self):
        self._lock = threading.Lock()
        self._actions = []

    def push(self, fn, *args, **kw):
        with self._lock:
            self._actions.append((fn, args, kw))
        return fn

    def run(self):
        while True:
            with self._lock:
                if not self._actions:
                    return
                fn, args, kw = self._actions.pop()
            try:
                fn(*args, **kw)
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                print("cleanup: %s%r failed: %s" % (getattr(fn, "__name__", fn), args, e),
                      file=sys.stderr)


GLOBAL_CLEANUP = Cleanup()
_signals_installed = False


def install_global_cleanup():
    """Run GLOBAL_CLEANUP at exit and on SIGINT/SIGTERM/SIGHUP (then exit 128+sig)."""
    global _signals_installed
    if _signals_installed:
        return
    _signals_installed = True
    atexit.register(GLOBAL_CLEANUP.run)

    def handler(signum, _frame):
        print("\ncaught signal %d: cleaning up" % signum, file=sys.stderr)
        GLOBAL_CLEANUP.run()
        sweep_prefix()
        os._exit(128 + signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


def sweep_prefix(prefix=None):
    """Last resort: delete every namespace whose name starts with this process's prefix."""
    prefix = prefix or PREFIX
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return
    for n in names:
        if n.startswith(prefix):
            subprocess.run(["ip", "netns", "del", n], stderr=subprocess.DEVNULL)


# --------------------------------------------------------------------------------------------
# namespaces

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd, nstype=CLONE_NEWNET):
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


@contextlib.contextmanager
def in_netns(path):
    """Move the calling thread into the network namespace at `path` for the with-block."""
    if path is None:
        yield
        return
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(back)
    finally:
        os.close(target)
        os.close(back)


def run(cmd, check=True, ns=None, input=None, timeout=60):
    """Run a helper command (optionally via `ip netns exec NS`); returns CompletedProcess."""
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns] + list(cmd)
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s -> exit %d: %s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def ipj(ns, *args):
    """`ip -j [-n ns] args...` parsed as JSON (empty output -> [])."""
    cmd = ["ip", "-j"]
    if ns:
        cmd += ["-n", ns]
    p = run(cmd + list(args))
    out = p.stdout.strip()
    return json.loads(out) if out else []


class Netns:
    """A named network namespace under /run/netns, deleted by cleanup."""

    def __init__(self, tag, cleanup, lo_up=True):
        self.name = unique(tag)
        run(["ip", "netns", "add", self.name])
        self.path = "/run/netns/" + self.name
        self._deleted = False
        cleanup.push(self.delete)
        if lo_up:
            run(["ip", "-n", self.name, "link", "set", "lo", "up"])

    def delete(self):
        if not self._deleted:
            self._deleted = True
            run(["ip", "netns", "del", self.name], check=False)

    @property
    def exists(self):
        return os.path.exists(self.path)

    def ip(self, *args, check=True):
        return run(["ip", "-n", self.name] + list(args), check=check)

    def ipj(self, *args):
        return ipj(self.name, *args)

    def exec(self, cmd, check=True, timeout=60, input=None):
        return run(cmd, check=check, ns=self.name, timeout=timeout, input=input)

    def sysctl(self, key):
        return self.exec(["cat", "/proc/sys/" + key.replace(".", "/")]).stdout.strip()

    def popen(self, cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.name] + list(cmd), **kw)


class Node:
    """A private namespace playing the node's host namespace.

    Underlay: link `ul0` with 198.18.0.1/24 + fd00:ffff::1/64 and mtu `mtu`, default routes via
    .254 / ::fe. With world=True the underlay is a veth to a 'world' namespace holding .254/::fe
    (clients outside the node, e.g. for port mappings); otherwise ul0 is one end of a veth pair
    whose other end (ul0peer) also stays in the node.
    With underlay=False the node has only lo (no default route: plugin must fall back to 1408).
    """

    HOST4 = "198.18.0.1"
    HOST6 = "fd00:ffff::1"
    WORLD4 = "198.18.0.254"
    WORLD6 = "fd00:ffff::fe"

    def __init__(self, cleanup, mtu=1400, world=False, underlay=True):
        self.cleanup = cleanup
        self.ns = Netns("node", cleanup)
        self.name = self.ns.name
        self.path = self.ns.path
        self.world = None
        self.mtu = mtu
        if not underlay:
            return
        if world:
            self.world = Netns("world", cleanup)
            run(["ip", "-n", self.name, "link", "add", "ul0", "mtu", str(mtu), "type", "veth",
                 "peer", "name", "ul0", "netns", self.world.name])
            w = self.world
            w.ip("link", "set", "ul0", "mtu", str(mtu))
            w.ip("addr", "add", self.WORLD4 + "/24", "dev", "ul0")
            w.ip("-6", "addr", "add", self.WORLD6 + "/64", "dev", "ul0", "nodad")
            w.ip("link", "set", "ul0", "up")
        else:
            # no dummy module on every kernel: a veth pair with both ends in the node will do
            self.ns.ip("link", "add", "ul0", "mtu", str(mtu), "type", "veth", "peer", "name", "ul0peer")
            self.ns.ip("link", "set", "ul0peer", "up")
        n = self.ns
        n.ip("addr", "add", self.HOST4 + "/24", "dev", "ul0")
        n.ip("-6", "addr", "add", self.HOST6 + "/64", "dev", "ul0", "nodad")
        n.ip("link", "set", "ul0", "up")
        n.ip("route", "add", "default", "via", self.WORLD4, "dev", "ul0")
        n.ip("-6", "route", "add", "default", "via", self.WORLD6, "dev", "ul0")
        if world:
            # the world routes the pod CIDRs back through the node (a real upstream router would)
            self.world.ip("route", "add", "10.0.0.0/8", "via", self.HOST4)
            self.world.ip("-6", "route", "add", "fd00::/16", "via", self.HOST6)

    def pod_ns(self, tag="pod"):
        return Netns(tag, self.cleanup)

    def ipj(self, *args):
        return self.ns.ipj(*args)


def tmpdir(cleanup, tag="data"):
    d = tempfile.mkdtemp(prefix=PREFIX + tag + "-")
    cleanup.push(shutil.rmtree, d, True)
    return d


# --------------------------------------------------------------------------------------------
# plugin invocation


class Result:
    def __init__(self, argv, rc, stdout, stderr, elapsed, maxrss_kb, env, cpu=0.0):
        self.cpu = cpu  # user + system seconds of the child (and the children it reaped)
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.maxrss_kb = maxrss_kb
        self.env = env
        self.json = None
        self.json_error = None
        if stdout.strip():
            try:
                self.json = json.loads(stdout)
            except ValueError as e:
                self.json_error = str(e)

    @property
    def ok(self):
        return self.rc == 0

    @property
    def code(self):
        """CNI error code from the error JSON, or None."""
        if isinstance(self.json, dict) and "code" in self.json:
            return self.json["code"]
        return None

    def describe(self):
        cmd = self.env.get("CNI_COMMAND", "?")
        return "%s %s: exit %s, stdout=%r, stderr=%r" % (
            os.path.basename(self.argv[0]), cmd, self.rc, self.stdout[:2000], self.stderr[-2000:])


def _communicate(p, data, timeout):
    """Write data to stdin, read stdout/stderr until EOF (without reaping the child)."""
    sel = selectors.DefaultSelector()
    out = {p.stdout.fileno(): [], p.stderr.fileno(): []}
    pending = memoryview(data)
    if pending:
        os.set_blocking(p.stdin.fileno(), False)
        sel.register(p.stdin.fileno(), selectors.EVENT_WRITE)
    else:
        p.stdin.close()
    sel.register(p.stdout.fileno(), selectors.EVENT_READ)
    sel.register(p.stderr.fileno(), selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    open_readers = 2
    while open_readers or pending:
        left = deadline - time.monotonic()
        if left <= 0:
            p.kill()
            raise TimeoutError("plugin did not finish within %ss" % timeout)
        for key, _ in sel.select(left):
            fd = key.fd
            if fd in out:
                chunk = os.read(fd, 65536)
                if chunk:
                    out[fd].append(chunk)
                else:
                    sel.unregister(fd)
                    open_readers -= 1
            else:
                try:
                    n = os.write(fd, pending)
                    pending = pending[n:]
                except BrokenPipeError:
                    pending = memoryview(b"")
                if not pending:
                    sel.unregister(fd)
                    p.stdin.close()
    sel.close()
    if not p.stdin.closed:
        p.stdin.close()
    return b"".join(out[p.stdout.fileno()]), b"".join(out[p.stderr.fileno()])


class _Spawned:
    """A child started with posix_spawn (vfork + exec): about 0.7 ms from spawn to reap for
    /bin/true here, against about 4 ms for subprocess.Popen, whose overhead would otherwise be
    counted as plugin time by the benchmark. Popen-like enough for _communicate()."""

    def __init__(self, argv, env):
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for fd in (in_w, out_r, err_r):
            os.set_inheritable(fd, False)
        actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                   (os.POSIX_SPAWN_DUP2, err_w, 2)]
        exe = argv[0] if os.path.sep in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
        try:
            self.pid = os.posix_spawn(exe, argv, env, file_actions=actions)
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        self.stdin = os.fdopen(in_w, "wb", buffering=0)
        self.stdout = os.fdopen(out_r, "rb", buffering=0)
        self.stderr = os.fdopen(err_r, "rb", buffering=0)
        self.returncode = None

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def invoke(plugin, command, conf=None, containerid=None, netns=None, ifname=None,
           cni_path=None, cni_args=None, node=None, stdin=None, env_override=None,
           unset=(), timeout=60, argv=None):
    """Invoke a CNI plugin as a runtime does.

    conf: dict (serialised to stdin) unless `stdin` (raw bytes/str) is given.
    node: a Node/Netns (or path) whose namespace the plugin process runs in.
    env_override: extra/replacement env vars; unset: CNI_* names to leave out entirely.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    cni = {"CNI_COMMAND": command}
    if containerid is not None:
        cni["CNI_CONTAINERID"] = containerid
    if netns is not None:
        cni["CNI_NETNS"] = getattr(netns, "path", netns)
    if ifname is not None:
        cni["CNI_IFNAME"] = ifname
    cni["CNI_PATH"] = cni_path if cni_path is not None else os.path.dirname(os.path.abspath(plugin))
    if cni_args is not None:
        cni["CNI_ARGS"] = cni_args
    env.update(cni)
    if env_override:
        env.update(env_override)
    for k in unset:
        env.pop(k, None)
    if stdin is None:
        stdin = json.dumps(conf if conf is not None else {})
    if isinstance(stdin, str):
        stdin = stdin.encode()
    nspath = getattr(node, "path", node)
    argv = list(argv) if argv else [plugin]  # argv: e.g. a wrapper such as /usr/bin/time
    with in_netns(nspath):
        t0 = time.perf_counter()
        p = _Spawned(argv, env)
    try:
        out, err = _communicate(p, stdin, timeout)
    finally:
        _, status, ru = os.wait4(p.pid, 0)
        elapsed = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        p.stdout.close()
        p.stderr.close()
    return Result([plugin] + argv[1:], p.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                  elapsed, ru.ru_maxrss, env, ru.ru_utime + ru.ru_stime)


# --------------------------------------------------------------------------------------------
# a minimal libcni


def version_ge(a, b):
    def t(v):
        return tuple(int(x) for x in v.split("."))
    return t(a) >= t(b)


class ConfList:
    """libcni semantics for a conflist: {"cniVersion", "name", "plugins": [...]}

    Plugins are looked up in `cni_path` (a list of dirs, also passed as CNI_PATH).
    `capability_args` (e.g. {"portMappings": [...], "bandwidth": {...}}) are passed as
    runtimeConfig to the plugins that declare the capability, as libcni does.
    """

    def __init__(self, conflist, cni_path, node=None, plugin_override=None):
        self.conf = conflist
        self.cni_path = cni_path if isinstance(cni_path, list) else [cni_path]
        self.node = node
        self.override = plugin_override or {}  # type -> binary path
        self.cache = {}  # (containerid, ifname) -> last ADD result
        self.log = []  # every Result, for debugging

    @property
    def version(self):
        return self.conf["cniVersion"]

    def find(self, typ):
        if typ in self.override:
            return self.override[typ]
        for d in self.cni_path:
            p = os.path.join(d, typ)
            if os.access(p, os.X_OK):
                return p
        raise FileNotFoundError("plugin %r not in %s" % (typ, self.cni_path))

    def _plugin_conf(self, plugin, prev, capability_args):
        c = copy.deepcopy(plugin)
        c["name"] = self.conf["name"]
        c["cniVersion"] = self.version
        caps = plugin.get("capabilities") or {}
        rc = {k: v for k, v in (capability_args or {}).items() if caps.get(k)}
        if rc:
            c["runtimeConfig"] = rc
        if prev is not None:
            c["prevResult"] = prev
        return c

    def _call(self, plugin, command, conf, containerid, netns, ifname, cni_args, **kw):
        r = invoke(self.find(plugin["type"]), command, conf, containerid=containerid,
                   netns=netns, ifname=ifname, cni_path=":".join(self.cni_path),
                   cni_args=cni_args, node=self.node, **kw)
        self.log.append(r)
        return r

    def add(self, containerid, netns, ifname="eth0", capability_args=None, cni_args=None):
        """Returns (final Result, failing Result or None)."""
        prev = None
        last = None
        for plugin in self.conf["plugins"]:
            c = self._plugin_conf(plugin, prev, capability_args)
            r = self._call(plugin, "ADD", c, containerid, netns, ifname, cni_args)
            if not r.ok:
                return r, r
            prev = r.json
            last = r
        self.cache[(containerid, ifname)] = (prev, capability_args)
        return last, None

    def delete(self, containerid, netns, ifname="eth0", capability_args=None, cni_args=None):
        """DEL in reverse order; returns the list of Results (stops at first failure, like libcni)."""
        cached, cap = self.cache.get((containerid, ifname), (None, None))
        if capability_args is None:
            capability_args = cap
        prev = cached if version_ge(self.version, "0.4.0") else None
        results = []
        for plugin in reversed(self.conf["plugins"]):
            c = self._plugin_conf(plugin, prev, capability_args)
            r = self._call(plugin, "DEL", c, containerid, netns, ifname, cni_args)
            results.append(r)
            if not r.ok:
                return results
        self.cache.pop((containerid, ifname), None)
        return results

    def check(self, containerid, netns, ifname="eth0", cni_args=None):
        cached, cap = self.cache[(containerid, ifname)]
        results = []
        for plugin in self.conf["plugins"]:
            c = self._plugin_conf(plugin, cached, cap)
            r = self._call(plugin, "CHECK", c, containerid, netns, ifname, cni_args)
            results.append(r)
            if not r.ok:
                return results
        return results

    def gc(self, valid):
        """valid: list of (containerid, ifname)."""
        att = [{"containerID": c, "ifname": i} for c, i in valid]
        results = []
        for plugin in self.conf["plugins"]:
            c = self._plugin_conf(plugin, None, None)
            c["cni.dev/valid-attachments"] = att
            results.append(self._call(plugin, "GC", c, None, None, None, None))
        return results

    def status(self):
        results = []
        for plugin in self.conf["plugins"]:
            c = self._plugin_conf(plugin, None, None)
            results.append(self._call(plugin, "STATUS", c, None, None, None, None))
        return results


# --------------------------------------------------------------------------------------------
# inspection and leak checks


def links(ns, prefix=None):
    """Links in namespace `ns` (name or None for the current one) as ip -j -d dicts."""
    out = ipj(ns, "-d", "link", "show")
    if prefix:
        out = [lk for lk in out if lk["ifname"].startswith(prefix)]
    return out


def routes(ns, family=4, table="all"):
    fam = "-4" if family == 4 else "-6"
    return ipj(ns, fam, "route", "show", "table", table)


def addrs(ns, dev):
    """[(addr, prefixlen, family)] on dev in ns (skip link-local v6)."""
    out = []
    for lk in ipj(ns, "addr", "show", "dev", dev):
        for a in lk.get("addr_info", []):
            if a["family"] == "inet6" and a.get("scope") == "link":
                continue
            out.append((a["local"], a["prefixlen"], a["family"]))
    return out


def route_dsts(ns):
    r = []
    for fam in (4, 6):
        for rt in routes(ns, fam):
            r.append(rt.get("dst"))
    return r


def allocations(datadir, network):
    """Allocation files (IP addresses) in a host-local style store."""
    d = os.path.join(datadir, network)
    if not os.path.isdir(d):
        return {}
    res = {}
    for f in os.listdir(d):
        if f == "lock" or f.startswith("last_reserved_ip"):
            continue
        try:
            ipaddress.ip_address(f)
        except ValueError:
            res[f] = "<not an ip: unexpected file>"
            continue
        with open(os.path.join(d, f), "rb") as fh:
            res[f] = fh.read().decode(errors="replace")
    return res


def leaks(node, datadir=None, network=None, pod_ips=(), link_prefixes=("mw",)):
    """Describe what is left in `node` (links with our prefix, routes to pod IPs, allocations).
    Returns a list of strings, empty when clean."""
    problems = []
    ns = getattr(node, "name", node)
    for lk in links(ns):
        if any(lk["ifname"].startswith(p) for p in link_prefixes):
            problems.append("link %s left (alias %r)" % (lk["ifname"], lk.get("ifalias")))
    ips = set()
    for a in pod_ips:
        ips.add(str(ipaddress.ip_interface(a).ip))
    if ips:
        for dst in route_dsts(ns):
            try:
                ip = str(ipaddress.ip_interface(dst).ip)
            except ValueError:  # "default", "multicast", ...
                continue
            if ip in ips:
                problems.append("route to %s left" % dst)
    if datadir is not None and network is not None:
        for ip, content in allocations(datadir, network).items():
            problems.append("allocation %s left (%r)" % (ip, content))
    return problems


def result_ips(result):
    return [ip["address"] for ip in (result or {}).get("ips", [])]


# --------------------------------------------------------------------------------------------
# a tiny test runner: @test functions, filters, "N passed, N failed" and the exit status


SKIP = 77  # CTest's SKIP_RETURN_CODE


class TestFailure(AssertionError):
    pass


def check(cond, msg, *args):
    if not cond:
        raise TestFailure(msg % args if args else msg)


def eq(got, want, what):
    if got != want:
        raise TestFailure("%s: got %r, want %r" % (what, got, want))


class Registry:
    def __init__(self):
        self.tests = []

    def __call__(self, fn=None, *, labels=()):
        def deco(f):
            f.labels = set(labels)
            self.tests.append(f)
            return f
        return deco(fn) if fn is not None else deco

    def main(self, argv, make_ctx, description):
        import argparse
        import traceback
        ap = argparse.ArgumentParser(description=description)
        ap.add_argument("--plugin", help="path of the meshwire binary")
        ap.add_argument("--cni-dir", default="/usr/lib/cni", help="reference plugins")
        ap.add_argument("-k", action="append", default=[],
                        help="run only tests whose name contains this (repeatable)")
        ap.add_argument("--list", action="store_true")
        ap.add_argument("-v", "--verbose", action="store_true")
        args = ap.parse_args(argv)
        tests = [t for t in self.tests if not args.k or any(k in t.__name__ for k in args.k)]
        if args.list:
            for t in tests:
                print(t.__name__)
            return 0
        if os.geteuid() != 0:
            print("SKIP: these tests need root (network namespaces)", file=sys.stderr)
            return SKIP
        install_global_cleanup()
        ctx = make_ctx(args)
        passed, failed = [], []
        for t in tests:
            c = Cleanup()
            GLOBAL_CLEANUP.push(c.run)
            t0 = time.monotonic()
            print("RUN  %s" % t.__name__, flush=True)
            try:
                t(ctx, c)
                passed.append(t.__name__)
                status = "PASS"
            except Exception as e:  # noqa: BLE001
                failed.append(t.__name__)
                status = "FAIL"
                if isinstance(e, TestFailure) and not args.verbose:
                    print("     %s" % e)
                    tb = traceback.extract_tb(e.__traceback__)
                    frames = [f for f in tb if not f.filename.endswith("cnilib.py")]
                    if frames:
                        print("     at %s:%d" % (os.path.basename(frames[-1].filename),
                                                frames[-1].lineno))
                else:
                    traceback.print_exc(file=sys.stdout)
            finally:
                c.run()
            print("%s %s (%.1fs)" % (status, t.__name__, time.monotonic() - t0), flush=True)
        print()
        for n in failed:
            print("failed: %s" % n)
        print("%d passed, %d failed" % (len(passed), len(failed)))
        return 1 if failed or not tests else 0
