"""Shared by the Kubernetes tests: a test CA and server certificate made with openssl, the fake
API server (fake_apiserver.py) as a process with its control socket, kubeconfigs, Node objects.
Python stdlib only; /usr/bin/python3 runs the server."""
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "fake_apiserver.py")
PYTHON = "/usr/bin/python3"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_pki(d, ips, names=("localhost",)):
    """A CA (ca.crt), a server certificate for `ips`/`names` (server.crt/key) and a client
    certificate (client.crt/key) signed by it, in directory d. Returns d."""
    os.makedirs(d, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=meshwire-test-ca",
            cwd=d)
    san = ",".join(["IP:%s" % ip for ip in ips] + ["DNS:%s" % n for n in names])
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % san)
    with open(os.path.join(d, "client.cnf"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for who, ext in (("server", "ext.cnf"), ("client", "client.cnf")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", who + ".key", "-out", who + ".csr", "-subj", "/CN=" + who, cwd=d)
        openssl("x509", "-req", "-in", who + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", who + ".crt", "-days", "2", "-extfile", ext, cwd=d)
    return d


def write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def kubeconfig(path, server, ca_file, token=None, token_file=None, cert=None, key=None):
    """A kubeconfig with one cluster/user/context (CA inline as certificate-authority-data)."""
    user = {}
    if token:
        user["token"] = token
    if token_file:
        user["tokenFile"] = token_file
    if cert:
        user["client-certificate"] = cert
        user["client-key"] = key
    ca = base64.b64encode(open(ca_file, "rb").read()).decode()
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
           "clusters": [{"name": "test", "cluster": {"server": server,
                                                    "certificate-authority-data": ca}}],
           "users": [{"name": "test", "user": user}],
           "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}
    return write(path, json.dumps(cfg, indent=1))  # JSON is YAML


def node_object(name, pod_cidrs=(), internal=(), external=(), annotations=None):
    addrs = [{"type": "InternalIP", "address": a} for a in internal]
    addrs += [{"type": "ExternalIP", "address": a} for a in external]
    addrs.append({"type": "Hostname", "address": name})
    spec = {}
    if pod_cidrs:
        spec = {"podCIDR": pod_cidrs[0], "podCIDRs": list(pod_cidrs)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                         "annotations": dict(annotations or {})},
            "spec": spec,
            "status": {"addresses": addrs,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


class FakeApi:
    """fake_apiserver.py as a process (`popen`: a function starting a command, e.g. a topology
    node's popen, else subprocess in this namespace), driven through its control socket."""

    def __init__(self, d, listen, token, popen=None, bookmark_seconds=2.0):
        self.dir = d
        self.control_path = os.path.join(d, "api.sock")
        self.token_file = write(os.path.join(d, "server-token"), token)
        cmd = [PYTHON, SERVER, "--listen", listen, "--cert", os.path.join(d, "server.crt"),
               "--key", os.path.join(d, "server.key"), "--token-file", self.token_file,
               "--control", self.control_path, "--bookmark-seconds", str(bookmark_seconds)]
        self.log_path = os.path.join(d, "apiserver.log")
        if popen is not None:
            self.proc = popen(cmd)
        else:
            self._log = open(self.log_path, "w")
            self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not os.path.exists(self.control_path):
            if time.monotonic() > deadline:
                raise RuntimeError("fake apiserver did not start:\n" + self.log())
            time.sleep(0.05)

    def log(self):
        if hasattr(self.proc, "log"):
            return self.proc.log()[-4000:]
        try:
            return open(self.log_path).read()[-4000:]
        except OSError:
            return ""

    def call(self, **req):
        try:
            return self._call(req)
        except socket.timeout:
            # Its threads' stacks into its log (faulthandler), then the log with the error.
            try:
                os.kill(self.proc.pid, signal.SIGUSR1)
                time.sleep(0.5)
            except (OSError, AttributeError):
                pass
            raise RuntimeError("fake apiserver: no answer to %s within 10 s; its log:\n%s"
                               % (req.get("op"), self.log()))

    def _call(self, req):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(self.control_path)
            s.sendall((json.dumps(req) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        finally:
            s.close()
        ans = json.loads(buf)
        if not ans.get("ok"):
            raise RuntimeError("fake apiserver %s: %s" % (req, ans))
        return ans

    def put(self, node):
        return self.call(op="put", node=node)["node"]

    def delete(self, name):
        return self.call(op="delete", name=name)

    def get(self, name):
        return self.call(op="get", name=name)["node"]

    def stats(self):
        return self.call(op="stats")["stats"]

    def close(self):
        p = self.proc
        if p is None:
            return
        self.proc = None
        try:
            if hasattr(p, "stop"):
                p.stop()
            else:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        finally:
            if hasattr(self, "_log"):
                self._log.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
