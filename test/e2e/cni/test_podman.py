#!/usr/bin/env python3
"""podman end to end: two containers on a meshwire network ping each other; stopping them
releases their addresses.

Uses Debian's podman 4.3 with the CNI backend and runc, as configured by install/deps.sh in
/etc/containers/containers.conf: that file is read, and only the CNI plugin and config
directories are pointed at private temporary ones (CONTAINERS_CONF). Storage (--root, --runroot,
vfs) is private too, and the containers run from a busybox rootfs built here from
busybox-static's /bin/busybox (`podman run --rootfs`; no registry needed).

Unlike test_cni.py, podman wires containers into this machine's real root namespace: host veths,
host routes and IP forwarding live there for the duration of the test. The pod CIDR is private
to this run (10.250.<n>.0/24, fd00:250:0:<n>::/64), and everything is removed at exit, forwarding
sysctls included.

    python3 test/e2e/cni/test_podman.py --plugin build/cni-plugin/meshwire
"""

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnilib as L  # noqa: E402
from cnilib import check, eq  # noqa: E402

test = L.Registry()
SYSTEM_CONF = "/etc/containers/containers.conf"
FORWARDING = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"]


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError("cannot write %r as TOML" % (v,))


def toml_dump(doc):
    """Enough TOML for containers.conf: top-level tables of scalars and arrays (one level of
    sub-tables, e.g. [engine.runtimes])."""
    out = []
    for section, body in doc.items():
        if not isinstance(body, dict):
            raise TypeError("top-level key %s is not a table" % section)
        out.append("[%s]" % section)
        subs = []
        for k, v in body.items():
            if isinstance(v, dict):
                subs.append((k, v))
            else:
                out.append("%s = %s" % (k, toml_value(v)))
        for k, v in subs:
            out.append("[%s.%s]" % (section, k))
            for kk, vv in v.items():
                out.append("%s = %s" % (json.dumps(kk), toml_value(vv)))
        out.append("")
    return "\n".join(out)


class Podman:
    def __init__(self, ctx, c):
        self.c = c
        pid = os.getpid()
        self.tag = L.PREFIX.rstrip("-")
        self.tmp = L.tmpdir(c, "podman")
        c.push(self._umount_below, self.tmp)  # runs before the rmtree pushed by tmpdir()
        self.bindir = os.path.join(self.tmp, "cni-bin")
        self.netdir = os.path.join(self.tmp, "net.d")
        self.data = os.path.join(self.tmp, "ipam")
        os.makedirs(self.bindir)
        os.makedirs(self.netdir)
        # the plugin under test plus the reference plugins, in a private plugin directory
        shutil.copy2(ctx.plugin, os.path.join(self.bindir, "meshwire"))
        for p in os.listdir(ctx.cni_dir):
            if p != "meshwire":
                os.symlink(os.path.join(ctx.cni_dir, p), os.path.join(self.bindir, p))
        # containers.conf: the system one (install/deps.sh), private CNI directories
        with open(SYSTEM_CONF, "rb") as f:
            self.sysconf = tomllib.load(f)
        conf = json.loads(json.dumps(self.sysconf))
        conf.setdefault("network", {})
        conf["network"]["cni_plugin_dirs"] = [self.bindir]
        conf["network"]["network_config_dir"] = self.netdir
        self.conf_path = os.path.join(self.tmp, "containers.conf")
        with open(self.conf_path, "w") as f:
            f.write(toml_dump(conf))
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf_path, TMPDIR=os.path.join(self.tmp, "t"))
        os.makedirs(self.env["TMPDIR"])
        self.base = ["podman", "--root", os.path.join(self.tmp, "root"),
                     "--runroot", os.path.join(self.tmp, "runroot"),
                     "--storage-driver", "vfs", "--network-config-dir", self.netdir,
                     "--tmpdir", os.path.join(self.tmp, "libpod-tmp")]
        n = free_slash24(pid)
        self.v4 = "10.250.%d.0/24" % n
        self.v6 = "fd00:250:0:%x::/64" % n
        self.net = self.tag + "-net"
        self.containers = []
        # forwarding sysctls of the real root namespace: restored at the end
        self.saved = {}
        for k in FORWARDING:
            with open("/proc/sys/" + k) as f:
                self.saved[k] = f.read().strip()
        c.push(self._restore_sysctls)

    def _restore_sysctls(self):
        for k, v in self.saved.items():
            with open("/proc/sys/" + k, "w") as f:
                f.write(v)

    @staticmethod
    def _umount_below(path):
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for m in sorted((m for m in mounts if m.startswith(path + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)

    def __call__(self, *args, check=True, timeout=120):
        p = subprocess.run(self.base + list(args), env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise L.TestFailure("podman %s -> exit %d: %s%s" % (" ".join(args), p.returncode,
                                                               p.stdout[-1500:], p.stderr[-1500:]))
        return p

    def write_network(self, cni_version="1.0.0"):
        conflist = {"cniVersion": cni_version, "name": self.net, "plugins": [
            {"type": "meshwire", "podCIDRs": [self.v4, self.v6], "dataDir": self.data,
             "nodeFile": os.path.join(self.tmp, "none.json"),
             "logFile": os.path.join(self.tmp, "meshwire.log"), "logLevel": "debug"},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}
        with open(os.path.join(self.netdir, self.net + ".conflist"), "w") as f:
            json.dump(conflist, f, indent=1)
        self.c.push(self, "network", "rm", "-f", self.net, check=False)

    def rootfs(self, name):
        """A minimal busybox root filesystem."""
        root = os.path.join(self.tmp, "rootfs-" + name)
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "run", "root"):
            os.makedirs(os.path.join(root, d))
        shutil.copy2("/bin/busybox", os.path.join(root, "bin", "busybox"))
        applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                                 check=True).stdout.split()
        for a in applets:
            if a != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", a))
        with open(os.path.join(root, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        with open(os.path.join(root, "etc", "group"), "w") as f:
            f.write("root:x:0:\n")
        return root

    def run_container(self, name):
        full = "%s-%s" % (self.tag, name)
        self.containers.append(full)
        self.c.push(self, "rm", "-f", "-t", "0", full, check=False)
        self("run", "-d", "--name", full, "--network", self.net, "--cap-add", "NET_RAW",
             "--rootfs", self.rootfs(name), "/bin/sleep", "600")
        return full

    def inspect(self, name):
        return json.loads(self("inspect", name).stdout)[0]


def free_slash24(seed):
    """n such that no route in the root namespace lies inside 10.250.n.0/24 (another run's pods)."""
    used = set()
    for dst in L.route_dsts(None):
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if net.version == 4 and net.prefixlen >= 24:
            used.add(net.supernet(new_prefix=24))
    for k in range(seed, seed + 250):
        n = k % 250 + 1
        if ipaddress.ip_network("10.250.%d.0/24" % n) not in used:
            return n
    raise L.TestFailure("every 10.250.n.0/24 is in use in the root namespace")


def root_ns_leaks(pm, ips):
    """What of ours is left in the real root namespace."""
    problems = []
    prefix = "meshwire/%s/" % pm.net
    for lk in L.links(None):
        if (lk.get("ifalias") or "").startswith(prefix):
            problems.append("link %s (%s)" % (lk["ifname"], lk["ifalias"]))
    wanted = {str(ipaddress.ip_address(a)) for a in ips}
    for dst in L.route_dsts(None):
        try:
            if str(ipaddress.ip_interface(dst).ip) in wanted:
                problems.append("route to %s" % dst)
        except ValueError:
            pass
    for ip, owner in L.allocations(pm.data, pm.net).items():
        problems.append("allocation %s (%r)" % (ip, owner))
    return problems


@test
def podman_two_containers_ping_and_release(ctx, c):
    pm = Podman(ctx, c)
    info = json.loads(pm("info", "--format", "json").stdout)
    eq(info["host"].get("networkBackend"), "cni", "podman network backend (containers.conf)")
    eq(os.path.basename(info["host"]["ociRuntime"]["name"]), "runc", "podman OCI runtime")
    pm.write_network()
    nets = json.loads(pm("network", "ls", "--format", "json").stdout)
    check(any(n.get("name") == pm.net for n in nets), "podman does not list %s: %s", pm.net, nets)

    seen = []

    def report_leaks():  # runs after the containers' cleanup (LIFO), also when the test failed
        left = root_ns_leaks(pm, seen)
        if left:
            print("     WARNING: left in the root namespace after cleanup: %s" % left)

    c.push(report_leaks)
    names = [pm.run_container("c1"), pm.run_container("c2")]
    info = {}
    for n in names:
        ins = pm.inspect(n)
        net = ins["NetworkSettings"]["Networks"].get(pm.net)
        check(net, "%s is not on %s: %s", n, pm.net, ins["NetworkSettings"]["Networks"])
        v4, v6 = net.get("IPAddress"), net.get("GlobalIPv6Address")
        check(v4 and ipaddress.ip_address(v4) in ipaddress.ip_network(pm.v4),
              "%s v4 %r not from %s", n, v4, pm.v4)
        check(v6 and ipaddress.ip_address(v6) in ipaddress.ip_network(pm.v6),
              "%s v6 %r not from %s", n, v6, pm.v6)
        info[n] = (ins["Id"], v4, v6)
        seen.extend(a for a in (v4, v6) if a)
    ips = [a for _, v4, v6 in info.values() for a in (v4, v6)]

    # the allocations belong to the containers, in the host-local layout
    allocs = L.allocations(pm.data, pm.net)
    for n, (cid, v4, v6) in info.items():
        for a in (v4, v6):
            eq(allocs.get(a), "%s\r\neth0" % cid, "allocation file of %s (%s)" % (a, n))
    # host veths in the root namespace carry the alias
    aliases = {lk.get("ifalias") for lk in L.links(None, "mw")}
    for n, (cid, _, _) in info.items():
        check("meshwire/%s/%s/eth0" % (pm.net, cid) in aliases, "no host veth for %s", n)

    (c1, (_, a1, a1_6)), (c2, (_, a2, a2_6)) = list(info.items())
    print("     %s: %s %s, %s: %s %s" % (c1, a1, a1_6, c2, a2, a2_6))
    for src, dst in ((c1, a2), (c2, a1), (c1, a2_6), (c2, a1_6)):
        ok = False
        for _ in range(10):
            p = pm("exec", src, "ping", "-c", "1", "-W", "1", dst, check=False)
            if p.returncode == 0:
                ok = True
                break
            time.sleep(0.3)
        check(ok, "podman exec %s ping %s failed: %s%s", src, dst, p.stdout[-400:], p.stderr[-400:])
        print("     %s -> %s: %s" % (src, dst, [x for x in p.stdout.splitlines() if "bytes from" in x][:1]))

    pm("stop", "-t", "0", *names)
    left = root_ns_leaks(pm, ips)
    check(not left, "after podman stop: %s", left)
    pm("rm", "-f", *names)
    left = root_ns_leaks(pm, ips)
    check(not left, "after podman rm: %s", left)


class Ctx:
    def __init__(self, args):
        plugin = args.plugin or os.path.join(os.path.dirname(__file__), "../../../build/cni-plugin/meshwire")
        self.plugin = os.path.abspath(plugin)
        self.cni_dir = args.cni_dir
        if not os.access(self.plugin, os.X_OK):
            raise SystemExit("plugin %s not found (use --plugin)" % self.plugin)
        for tool in ("podman", "runc", "/bin/busybox"):
            if not shutil.which(tool):
                print("SKIP: %s is not installed (install/deps.sh)" % tool, file=sys.stderr)
                sys.exit(L.SKIP)
        if not os.path.exists(SYSTEM_CONF):
            print("SKIP: %s missing (run install/deps.sh)" % SYSTEM_CONF, file=sys.stderr)
            sys.exit(L.SKIP)


if __name__ == "__main__":
    sys.exit(test.main(sys.argv[1:], Ctx, __doc__))
