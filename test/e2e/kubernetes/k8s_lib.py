#!/usr/bin/python3
"""What the Kubernetes tests share (Debian's /usr/bin/python3: it has python3-yaml): render
install/kubernetes (a copy, with a fresh PSK and per-node configs from configure.sh) with the real
`kubectl kustomize`, and turn a rendered DaemonSet container into the `podman run` that runs it
the way kubelet would: its command and args with $(VAR) expanded, env (spec.nodeName given),
securityContext (capabilities, read-only root, no privilege escalation, user), and its volumes:
ConfigMap and Secret volumes as directories holding the rendered objects' data (the Secret's
files with its defaultMode), hostPath volumes under a temporary host root (device files: the real
device), hostNetwork as --network ns:<a testbed namespace>."""

import base64
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
K8S = os.path.join(REPO, "install", "kubernetes")
IMAGE_SH = os.path.join(REPO, "install", "image.sh")
SKIP = 77


FAILS = []  # what check() found wrong, in the order found


def check(cond, what):
    """A test's assertion that does not stop it: each failure is printed and counted, so one run
    reports all of them (verdict() turns them into the exit status)."""
    if not cond:
        FAILS.append(what)
        print("FAIL: %s" % what)
    return cond


def verdict(name, passed=""):
    """The test's last line and exit status: the failure count and 1, else PASS (+ `passed`)
    and 0."""
    if FAILS:
        print("%s: %d failure(s)" % (name, len(FAILS)))
        return 1
    print("%s: PASS%s" % (name, passed))
    return 0


def skip(why):
    print("SKIP: %s" % why)
    sys.exit(SKIP)


def need_tools(*tools):
    for t in tools:
        if shutil.which(t) is None:
            skip("%s not installed" % t)


def need_root():
    if os.geteuid() != 0:
        skip("needs root (podman, network namespaces)")


def image_tag():
    """The tag install/image.sh builds (and the manifests must reference)."""
    return subprocess.run(["bash", IMAGE_SH, "--print-tag"], check=True, capture_output=True,
                          text=True).stdout.strip()


def image_present(tag):
    return subprocess.run(["podman", "image", "exists", tag]).returncode == 0


def need_image():
    """Root, podman, kubectl and the image the k8s_image test builds (these tests' fixture):
    returns its tag. A missing image is a failure (exit 1), not a skip: the fixture makes it."""
    need_root()
    need_tools("podman", "kubectl")
    tag = image_tag()
    if not image_present(tag):
        print("FAIL: image %s missing (the k8s_image test builds it: install/image.sh)" % tag)
        sys.exit(1)
    return tag


def new_psk():
    return base64.b64encode(secrets.token_bytes(32)).decode() + "\n"


class Rendered:
    """A copy of install/kubernetes in a temp dir, rendered. nodes: {name: [cidr, ...]} makes
    configure.sh write local/ (the per-node overlay) from `config` (a dict or None for
    base/meshd.yaml). Context manager: the copy is removed on exit."""

    def __init__(self, nodes=None, config=None, psk=None):
        self.dir = tempfile.mkdtemp(prefix="mwt-%d-k8s-" % os.getpid())
        try:
            self._make(nodes, config, psk)
        except BaseException:
            self.close()
            raise

    def _make(self, nodes, config, psk):
        self.root = os.path.join(self.dir, "kubernetes")
        shutil.copytree(K8S, self.root, ignore=shutil.ignore_patterns("psk", "local"))
        self.psk = psk or new_psk()
        with open(os.path.join(self.root, "base", "psk"), "w") as f:
            f.write(self.psk)
        if nodes is not None:
            args = ["bash", os.path.join(self.root, "configure.sh"), "--nodes", "-"]
            if config is not None:
                path = os.path.join(self.dir, "shared.yaml")
                with open(path, "w") as f:
                    yaml.safe_dump(config, f, sort_keys=False)
                args += ["--config", path]
            lines = "".join("%s %s\n" % (n, " ".join(c)) for n, c in nodes.items())
            p = subprocess.run(args, input=lines, capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError("configure.sh failed: %s%s" % (p.stdout, p.stderr))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def render(self, overlay=""):
        """The objects `kubectl kustomize <copy>/<overlay>` renders."""
        p = subprocess.run(["kubectl", "kustomize", os.path.join(self.root, overlay)],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("kubectl kustomize %s failed: %s" % (overlay or ".", p.stderr))
        return [o for o in yaml.safe_load_all(p.stdout) if o]


def find(objs, kind, name=None):
    """The one object of that kind (and name prefix, for hashed generator names)."""
    got = [o for o in objs if o["kind"] == kind
           and (name is None or o["metadata"]["name"].startswith(name))]
    if len(got) != 1:
        raise AssertionError("want one %s %s, found %d" % (kind, name or "", len(got)))
    return got[0]


def expand(value, env):
    """Kubernetes' $(VAR) expansion (unknown references stay as they are, $$ escapes)."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, value)


def container_env(container, node_name):
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            env[e["name"]] = node_name
        else:
            raise AssertionError("env %s: a source this harness does not provide" % e["name"])
    return env


def podman_run_args(objs, container_name, init, host_root, volume_root, netns_path, node_name,
                    name):
    """`podman run` arguments (without "podman run") for the DaemonSet's container or init
    container `container_name` (hostNetwork: in netns_path; None: no network, for a container
    that needs none). ConfigMap/Secret volumes are materialised under volume_root;
    hostPath volumes under host_root (missing directories created; CharDevice: the real one)."""
    ds = find(objs, "DaemonSet", "meshwire")
    pod = ds["spec"]["template"]["spec"]
    pool = pod["initContainers"] if init else pod["containers"]
    c = next(x for x in pool if x["name"] == container_name)
    env = container_env(c, node_name)
    args = ["--rm", "--name", name, "--pull", "never", "--init=false"]
    if pod.get("hostNetwork") and netns_path:
        args += ["--network", "ns:" + netns_path]
    else:
        args += ["--network", "none"]
    sc = c.get("securityContext", {})
    caps = sc.get("capabilities", {})
    if "ALL" in caps.get("drop", []):
        args += ["--cap-drop", "ALL"]
    for cap in caps.get("add", []):
        args += ["--cap-add", cap]
    if sc.get("readOnlyRootFilesystem"):
        # kubelet mounts no tmpfs on /run, /tmp: neither does this.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if "runAsUser" in sc:
        args += ["--user", str(sc["runAsUser"])]
    for k, v in env.items():
        args += ["-e", "%s=%s" % (k, v)]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        ro = ":ro" if m.get("readOnly") else ""
        if "configMap" in v or "secret" in v:
            src = _materialise(objs, v, volume_root, m["name"])
        elif "hostPath" in v:
            hp = v["hostPath"]
            if hp.get("type") == "CharDevice":
                src = hp["path"]
            else:
                src = os.path.join(host_root, hp["path"].lstrip("/"))
                os.makedirs(src, exist_ok=True)
        else:
            raise AssertionError("volume %s: a kind this harness does not provide" % m["name"])
        args += ["-v", "%s:%s%s" % (src, m["mountPath"], ro)]
    args.append(c["image"])
    args += [expand(a, env) for a in c.get("command", []) + c.get("args", [])]
    return args


def _materialise(objs, volume, root, vol):
    """A ConfigMap or Secret volume as kubelet mounts it: a directory holding the object's data,
    one file a key (a Secret's base64-decoded), each with the volume's defaultMode."""
    if "secret" in volume:
        ref = volume["secret"]
        data = {k: base64.b64decode(b64) for k, b64 in
                find(objs, "Secret", ref["secretName"]).get("data", {}).items()}
    else:
        ref = volume["configMap"]
        data = find(objs, "ConfigMap", ref["name"]).get("data", {})
    d = os.path.join(root, vol)
    os.makedirs(d, exist_ok=True)
    for k, content in data.items():
        p = os.path.join(d, k)
        with open(p, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        os.chmod(p, ref.get("defaultMode", 0o644))
    return d
