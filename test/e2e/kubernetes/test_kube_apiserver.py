#!/usr/bin/python3
"""The fake API server speaks the real protocol: the real kubectl (1.32) against it, on loopback.

Checks: `kubectl get nodes -o json` returns the Nodes put in (names, podCIDRs, addresses);
a wrong token is refused (kubectl exits non-zero, "Unauthorized"); a kubeconfig with another CA
is refused by kubectl's own certificate verification; `kubectl get nodes --watch -o json` prints
an event for a Node added while it watches; `kubectl annotate node` changes the stored Node
(PATCH), visible to the next `kubectl get`, and `KEY-` removes it. Then the parts kubectl does not
use, with Python's http.client over the same TLS: a watch with allowWatchBookmarks gets BOOKMARK
events in a chunked stream, and after a compaction an open watch gets an ERROR event whose Status
has code 410, as does a new watch from the old resourceVersion. About 10 s. Exit 77 without
kubectl or openssl.
"""
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kubetest  # noqa: E402

failures = []


def check(name, ok, detail=""):
    print("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail and not ok else ""))
    if not ok:
        failures.append(name)


def main():
    kubectl = shutil.which("kubectl")
    if not kubectl or not shutil.which("openssl"):
        print("SKIP: kubectl or openssl missing")
        return 77
    d = tempfile.mkdtemp(prefix="mw-kubeapi-")
    api = None
    try:
        kubetest.make_pki(d, ["127.0.0.1"])
        port = kubetest.free_port()
        server = "https://127.0.0.1:%d" % port
        api = kubetest.FakeApi(d, "127.0.0.1:%d" % port, "tok-A")
        api.put(kubetest.node_object("n1", ["10.244.1.0/24", "fd00:244:1::/64"],
                                     internal=["192.0.2.1"], external=["198.51.100.1"]))
        api.put(kubetest.node_object("n2", ["10.244.2.0/24"], internal=["192.0.2.2"]))
        kc = kubetest.kubeconfig(os.path.join(d, "kubeconfig"), server,
                                 os.path.join(d, "ca.crt"), token="tok-A")
        env = dict(os.environ, KUBECONFIG=kc, HOME=d, KUBECACHEDIR=os.path.join(d, "cache"))

        def run(*args, timeout=30):
            return subprocess.run([kubectl, "--cache-dir", os.path.join(d, "cache")] + list(args),
                                  env=env, capture_output=True, text=True, timeout=timeout)

        p = run("get", "nodes", "-o", "json")
        ok = p.returncode == 0
        doc = json.loads(p.stdout) if ok else {}
        items = {i["metadata"]["name"]: i for i in doc.get("items", [])}
        check("kubectl get nodes -o json lists both Nodes", ok and sorted(items) == ["n1", "n2"],
              p.stderr + p.stdout[:500])
        check("podCIDRs and addresses round-trip",
              ok and items["n1"]["spec"]["podCIDRs"] == ["10.244.1.0/24", "fd00:244:1::/64"] and
              {"type": "ExternalIP", "address": "198.51.100.1"} in items["n1"]["status"]["addresses"],
              json.dumps(items.get("n1")))

        bad = kubetest.kubeconfig(os.path.join(d, "kubeconfig-bad"), server,
                                  os.path.join(d, "ca.crt"), token="tok-wrong")
        p = subprocess.run([kubectl, "--kubeconfig", bad, "--cache-dir",
                            os.path.join(d, "cache-bad"), "get", "nodes", "-o", "json"],
                           env=dict(env, KUBECONFIG=bad), capture_output=True, text=True,
                           timeout=30)
        check("a wrong token is refused (401)", p.returncode != 0 and
              ("Unauthorized" in p.stderr or "provide credentials" in p.stderr), p.stderr)

        # Another CA: kubectl's own verification refuses the server's certificate.
        other = kubetest.make_pki(os.path.join(d, "other"), ["127.0.0.1"])
        wrong_ca = kubetest.kubeconfig(os.path.join(d, "kubeconfig-ca"), server,
                                       os.path.join(other, "ca.crt"), token="tok-A")
        p = subprocess.run([kubectl, "--kubeconfig", wrong_ca, "--cache-dir",
                            os.path.join(d, "cache-ca"), "get", "nodes", "-o", "json"],
                           env=dict(env, KUBECONFIG=wrong_ca), capture_output=True, text=True,
                           timeout=30)
        check("the server's certificate verifies only with the test CA",
              p.returncode != 0 and "certificate" in p.stderr, p.stderr)

        w = subprocess.Popen([kubectl, "--cache-dir", os.path.join(d, "cache"), "get", "nodes",
                              "--watch", "-o", "json"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(2.0)
            api.put(kubetest.node_object("n3", ["10.244.3.0/24"], internal=["192.0.2.3"]))
            time.sleep(2.0)
        finally:
            w.terminate()
            out, err = w.communicate(timeout=10)
        dec = json.JSONDecoder()
        objs, pos = [], 0
        text = out.strip()
        while pos < len(text):
            o, end = dec.raw_decode(text, pos)
            objs.append(o)
            pos = end
            while pos < len(text) and text[pos].isspace():
                pos += 1
        names = [o.get("metadata", {}).get("name") for o in objs]
        check("kubectl get nodes --watch prints the Node added meanwhile", "n3" in names,
              "names %s; stderr %s" % (names, err[-500:]))
        st = api.stats()
        check("the watch came through ?watch (not a second list)", st["watches"] >= 1, str(st))

        p = run("annotate", "node", "n2", "meshwire.io/test=yes")
        check("kubectl annotate node succeeds", p.returncode == 0 and "annotated" in p.stdout,
              p.stdout + p.stderr)
        stored = api.get("n2")
        check("the annotation is stored by the PATCH",
              stored["metadata"]["annotations"].get("meshwire.io/test") == "yes",
              json.dumps(stored["metadata"]))
        p = run("get", "node", "n2", "-o", "json")
        ok = p.returncode == 0 and json.loads(p.stdout)["metadata"]["annotations"].get(
            "meshwire.io/test") == "yes"
        check("kubectl get node shows the annotation", ok, p.stderr)
        p = run("annotate", "node", "n2", "meshwire.io/test-")
        check("kubectl annotate KEY- removes it", p.returncode == 0 and
              "meshwire.io/test" not in api.get("n2")["metadata"]["annotations"], p.stderr)
        check("PATCH counted", api.stats()["patches"] == 2, str(api.stats()))

        # The raw protocol: bookmarks, and 410 as an ERROR event.
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
        rv = str(api.call(op="stats")["rv"])

        def open_watch(from_rv):
            c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
            c.request("GET", "/api/v1/nodes?watch=1&allowWatchBookmarks=true&resourceVersion=%s"
                      "&timeoutSeconds=30" % from_rv, headers={"Authorization": "Bearer tok-A"})
            return c, c.getresponse()

        c, r = open_watch(rv)
        check("a watch answers 200, chunked", r.status == 200 and
              r.getheader("Transfer-Encoding") == "chunked", str(r.status))
        ev = json.loads(r.readline())
        check("BOOKMARK event with the resourceVersion", ev["type"] == "BOOKMARK" and
              int(ev["object"]["metadata"]["resourceVersion"]) >= int(rv), json.dumps(ev))
        api.call(op="compact")
        ev = json.loads(r.readline())
        check("after a compaction the open watch gets ERROR 410", ev["type"] == "ERROR" and
              ev["object"]["code"] == 410, json.dumps(ev))
        c.close()
        c, r = open_watch(rv)
        ev = json.loads(r.readline())
        check("a watch from the old resourceVersion gets ERROR 410", ev["type"] == "ERROR" and
              ev["object"]["code"] == 410, json.dumps(ev))
        c.close()
    finally:
        if api:
            api.close()
            if failures:
                print("--- apiserver log ---\n" + api.log())
        shutil.rmtree(d, ignore_errors=True)
    print("%d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
