#!/usr/bin/python3
"""k8s_cni_installer: the DaemonSet's init container (install-cni, as rendered from
install/kubernetes) run by podman, as kubelet would run it, against a temporary host root whose
/opt/cni/bin and /etc/cni/net.d already hold another plugin's files. It must install a meshwire
that runs on this host (CNI_COMMAND=VERSION) and the ConfigMap's conflist as
10-meshwire.conflist, touch nothing else, and leave no temporary file; a second run must change
nothing (same inode, same mtime); an outdated plugin is replaced by rename (a reader holding the
old file keeps reading the old bytes); CNI_CONF_NAME names the file; a conflist without meshwire
first is refused (exit 78) before anything is written. Needs root, podman, kubectl and the image
(fixture k8s_image). Exit 0 pass, 1 fail, 77 skip."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from k8s_lib import Rendered, check, find, image_tag, need_image, podman_run_args, verdict


def snap(path):
    st = os.lstat(path)
    with open(path, "rb") as f:
        return (st.st_ino, st.st_mtime_ns, st.st_mode, f.read())


def run_installer(args, env_extra=()):
    cmd = ["podman", "run"] + list(args)
    if env_extra:  # an env override goes before the image
        i = cmd.index(image_tag())
        cmd = cmd[:i] + [x for kv in env_extra for x in ("-e", kv)] + cmd[i:]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    print("$ podman run ... -> exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr), end="")
    return p


def main():
    need_image()
    with Rendered() as r, tempfile.TemporaryDirectory(prefix="mwt-%d-k8si-" % os.getpid()) as t:
        objs = r.render()
        cm = find(objs, "ConfigMap", "meshwire-config")
        host = os.path.join(t, "host")
        bin_dir = os.path.join(host, "opt", "cni", "bin")
        conf_dir = os.path.join(host, "etc", "cni", "net.d")
        os.makedirs(bin_dir)
        os.makedirs(conf_dir)
        # Another CNI's files, as on a node that had one before.
        shutil.copy2("/usr/lib/cni/bridge" if os.path.exists("/usr/lib/cni/bridge")
                     else "/bin/true", os.path.join(bin_dir, "bridge"))
        with open(os.path.join(conf_dir, "05-other.conflist"), "w") as f:
            f.write('{"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "bridge"}]}\n')
        others = {p: snap(p) for p in (os.path.join(bin_dir, "bridge"),
                                       os.path.join(conf_dir, "05-other.conflist"))}
        name = "mwt-%d-install-cni" % os.getpid()
        args = podman_run_args(objs, "install-cni", True, host, os.path.join(t, "vol"), None,
                               "node-a", name)
        plugin = os.path.join(bin_dir, "meshwire")
        conf = os.path.join(conf_dir, "10-meshwire.conflist")

        # 1. First run installs both.
        p = run_installer(args)
        check(p.returncode == 0, "first run exit 0")
        check(p.stdout.count("installed") == 2, "first run installs plugin and conflist")
        check(os.path.exists(plugin) and os.stat(plugin).st_mode & 0o777 == 0o755,
              "plugin installed 0755")
        v = subprocess.run([plugin], env={"CNI_COMMAND": "VERSION"}, input="{}",
                           capture_output=True, text=True, timeout=10)
        ok = v.returncode == 0
        try:
            ver = json.loads(v.stdout)
        except ValueError:
            ver, ok = {}, False
        check(ok and "1.0.0" in ver.get("supportedVersions", []),
              "installed meshwire runs on the host: CNI_COMMAND=VERSION -> %s %s" % (
                  v.stdout.strip(), v.stderr.strip()))
        print("installed plugin VERSION: %s" % v.stdout.strip())
        check(os.path.exists(conf) and os.stat(conf).st_mode & 0o777 == 0o644,
              "conflist installed 0644")
        if os.path.exists(conf):
            with open(conf) as f:
                check(json.load(f) == json.loads(cm["data"]["cni.conflist"]),
                      "conflist = the ConfigMap's cni.conflist")
        check(sorted(os.listdir(bin_dir)) == ["bridge", "meshwire"], "bin dir: %s" %
              os.listdir(bin_dir))
        check(sorted(os.listdir(conf_dir)) == ["05-other.conflist", "10-meshwire.conflist"],
              "conf dir: %s" % os.listdir(conf_dir))
        for path, s in others.items():
            check(snap(path) == s, "%s untouched" % path)

        # 2. A second run changes nothing: not the bytes, not the inode, not the mtime.
        before = {x: snap(x) for x in (plugin, conf)}
        p = run_installer(args)
        check(p.returncode == 0 and p.stdout.count("unchanged") == 2, "second run: unchanged")
        for x, s in before.items():
            check(snap(x) == s, "second run left %s alone (inode, mtime, mode, bytes)" % x)
        for path, s in others.items():
            check(snap(path) == s, "%s untouched by the second run" % path)

        # 3. An outdated plugin is replaced by rename: a reader of the old file (a runtime
        # exec()ing it) keeps the old bytes; the new file is another inode.
        with open(plugin, "wb") as f:
            f.write(b"#!/bin/false old meshwire\n")
        old_ino = os.stat(plugin).st_ino
        reader = open(plugin, "rb")
        p = run_installer(args)
        check(p.returncode == 0 and "installed %s" % "/host/opt/cni/bin/meshwire" in p.stdout,
              "outdated plugin replaced")
        check(reader.read() == b"#!/bin/false old meshwire\n", "the old file's reader unharmed")
        reader.close()
        check(os.stat(plugin).st_ino != old_ino, "replaced by rename (new inode)")
        check(snap(conf) == before[conf], "conflist left alone while the plugin was replaced")

        # 4. CNI_CONF_NAME names the conflist (the old name is not deleted: never delete).
        p = run_installer(args, env_extra=["CNI_CONF_NAME=99-meshwire.conflist"])
        check(p.returncode == 0 and os.path.exists(os.path.join(conf_dir, "99-meshwire.conflist")),
              "CNI_CONF_NAME=99-meshwire.conflist honoured")
        os.unlink(os.path.join(conf_dir, "99-meshwire.conflist"))

        # 5. A conflist without meshwire first: refused before anything is written.
        vol_conf = os.path.join(t, "vol", "config", "cni.conflist")
        with open(vol_conf, "w") as f:
            f.write('{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]}')
        with open(plugin, "wb") as f:
            f.write(b"outdated again\n")
        before = {x: snap(x) for x in (plugin, conf)}
        p = run_installer(args)
        check(p.returncode == 78 and "plugins[0].type" in p.stderr,
              "bad conflist refused with exit 78 naming plugins[0].type")
        for x, s in before.items():
            check(snap(x) == s, "nothing written for a bad conflist: %s" % x)
        check(sorted(os.listdir(bin_dir)) == ["bridge", "meshwire"]
              and sorted(os.listdir(conf_dir)) == ["05-other.conflist", "10-meshwire.conflist"],
              "no temporary files left")
        left = subprocess.run(["podman", "ps", "-a", "--filter", "name=" + name, "-q"],
                              capture_output=True, text=True).stdout.strip()
        check(not left, "no container left (--rm)")
    return verdict("k8s_cni_installer")


if __name__ == "__main__":
    sys.exit(main())
