#!/usr/bin/python3
"""k8s_image: `install/image.sh` builds the image with podman from this build, offline, under the
tag the manifests reference; every program in it runs (meshctl --help, wg --version,
wireguard-go --version, meshd --version, meshwire-install --version, meshwire-health --help, the
plugin's CNI VERSION); it holds nothing else to run (no shell); a second build of the same inputs
is the same image (and leaves no dangling one). Prints the size. The image stays: it is what the
other Kubernetes tests run (fixture k8s_image) and exactly what a user's image.sh builds.
Needs root and podman. Exit 0 pass, 1 fail, 77 skip."""

import argparse
import json
import os
import re
import subprocess
import sys

from k8s_lib import IMAGE_SH, check, image_tag, need_root, need_tools, verdict


def build(build_dir):
    p = subprocess.run(["bash", IMAGE_SH, "--build-dir", build_dir], capture_output=True,
                       text=True, timeout=300)
    print(p.stdout + p.stderr, end="")
    check(p.returncode == 0, "install/image.sh exit %d" % p.returncode)
    return p


def image_id(tag):
    p = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", tag],
                       capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def dangling():
    return set(subprocess.run(["podman", "images", "-q", "--filter", "dangling=true"],
                              capture_output=True, text=True).stdout.split())


def run_in(tag, argv, env=(), input=None):
    cmd = ["podman", "run", "--rm", "--network", "none", "--pull", "never"]
    for kv in env:
        cmd += ["-e", kv]
    p = subprocess.run(cmd + [tag] + argv, capture_output=True, text=True, timeout=60,
                       input=input)
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    a = ap.parse_args()
    need_root()
    need_tools("podman")
    tag = image_tag()
    dangling_before = dangling()
    p = build(os.path.abspath(a.build_dir))
    m = re.search(r"built (\S+) \(\w+\), (\d+) KiB", p.stdout)
    check(m is not None and m.group(1) == tag, "image.sh reports the tag %s" % tag)
    first = image_id(tag)
    check(first is not None, "image %s exists" % tag)
    if m:
        print("image %s: %s KiB (%.1f MiB)" % (tag, m.group(2), int(m.group(2)) / 1024))

    for argv, want in ((["/usr/bin/meshctl", "--help"], "status"),
                       (["/usr/bin/wg", "--version"], "wireguard-tools"),
                       (["/usr/bin/wireguard-go", "--version"], "wireguard-go"),
                       (["/usr/bin/meshd", "--version"], "meshd"),
                       (["/usr/bin/meshwire-install", "--version"], "meshwire-install"),
                       (["/usr/bin/meshwire-health", "--help"], "meshwire-health")):
        r = run_in(tag, argv)
        check(r.returncode == 0 and want in r.stdout + r.stderr,
              "%s in the image: exit %d %s%s" % (" ".join(argv), r.returncode, r.stdout[:200],
                                                 r.stderr[:200]))
    r = run_in(tag, ["/usr/bin/meshwire"], env=["CNI_COMMAND=VERSION"], input="{}")
    try:
        ok = r.returncode == 0 and "1.0.0" in json.loads(r.stdout)["supportedVersions"]
    except (ValueError, KeyError):
        ok = False
    check(ok, "meshwire CNI VERSION in the image: %s %s" % (r.stdout, r.stderr))
    r = run_in(tag, ["/bin/sh", "-c", "true"])
    check(r.returncode != 0, "no shell in the image")
    r = subprocess.run(["podman", "image", "inspect", "--format",
                        "{{index .Labels \"org.opencontainers.image.version\"}}", tag],
                       capture_output=True, text=True)
    check(r.stdout.strip() == tag.rsplit(":", 1)[1], "version label %s" % r.stdout.strip())

    # Same inputs, same image; nothing dangling left by the rebuild.
    build(os.path.abspath(a.build_dir))
    check(image_id(tag) == first, "a rebuild is the same image (%s, %s)" % (first,
                                                                          image_id(tag)))
    check(dangling() <= dangling_before, "no dangling image left: %s" % (dangling() -
                                                                        dangling_before))
    return verdict("k8s_image")


if __name__ == "__main__":
    sys.exit(main())
