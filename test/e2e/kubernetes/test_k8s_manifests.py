#!/usr/bin/python3
"""k8s_manifests: install/kubernetes renders with the real `kubectl kustomize` (the default, the
per-node overlay configure.sh writes, examples/relays and examples/kubernetes-mode), and the
rendered objects are what docs/architecture.md says: least-privilege RBAC (verbs exactly), the
DaemonSet's tolerations, hostNetwork, priority, capabilities, probes, volumes and rollout, the PSK
Secret mounted read-only with mode 0400, the image tag the one install/image.sh builds, and every
per-node meshd config accepted by today's `meshd --check-config`. No root, no cluster.

    test_k8s_manifests.py --build-dir build
Exit 0 pass, 1 fail, 77 skip (no kubectl)."""

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile

import yaml

from k8s_lib import Rendered, check, container_env, expand, find, image_tag, need_tools, verdict


def noncomment_lines(text):
    return [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]


def meshd_check_config(meshd, text, psk, tmp, name):
    """`meshd --check-config` on a rendered config, its psk.path/stateDir/runDir moved to tmp."""
    cfg = yaml.safe_load(text)
    psk_path = os.path.join(tmp, "psk-" + name)
    fd = os.open(psk_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    with os.fdopen(fd, "w") as f:
        f.write(psk)
    cfg["psk"]["path"] = psk_path
    cfg["stateDir"] = os.path.join(tmp, "state-" + name)
    cfg["runDir"] = os.path.join(tmp, "run-" + name)
    cfg["socket"] = os.path.join(tmp, "run-" + name, "meshd.sock")
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    p = subprocess.run([meshd, "--check-config", "--config", path], capture_output=True,
                       text=True, env=dict(os.environ, NODE_NAME=name.split(".")[0]))
    check(p.returncode == 0, "meshd --check-config %s: exit %d: %s" % (name, p.returncode,
                                                                       p.stderr.strip()))
    return cfg


def check_base(objs, psk, tag):
    kinds = sorted((o["kind"], o["metadata"]["name"].split("-psk-")[0]) for o in objs)
    check(kinds == sorted([("Namespace", "meshwire"), ("ServiceAccount", "meshwire"),
                           ("ClusterRole", "meshwire"), ("ClusterRoleBinding", "meshwire"),
                           ("ConfigMap", "meshwire-config"), ("Secret", "meshwire"),
                           ("DaemonSet", "meshwire"),
                           ("ResourceQuota", "meshwire-critical-pods")]), "objects: %s" % kinds)
    for o in objs:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            check(o["metadata"].get("namespace") == "meshwire",
                  "%s %s not in namespace meshwire" % (o["kind"], o["metadata"]["name"]))
    rq = find(objs, "ResourceQuota")
    check(rq["spec"]["scopeSelector"]["matchExpressions"] == [
        {"operator": "In", "scopeName": "PriorityClass", "values": ["system-node-critical"]}],
        "ResourceQuota admits system-node-critical pods in the namespace")
    ns = find(objs, "Namespace")
    check(ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") == "privileged",
          "namespace: Pod Security level privileged")

    # RBAC: exactly nodes get/list/watch/patch, bound to the DaemonSet's service account.
    role = find(objs, "ClusterRole")
    check(role["rules"] == [{"apiGroups": [""], "resources": ["nodes"],
                             "verbs": ["get", "list", "watch", "patch"]}],
          "ClusterRole rules exactly nodes get/list/watch/patch: %s" % role["rules"])
    crb = find(objs, "ClusterRoleBinding")
    check(crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": "meshwire"}, "binding roleRef")
    check(crb["subjects"] == [{"kind": "ServiceAccount", "name": "meshwire",
                               "namespace": "meshwire"}], "binding subjects")

    # ConfigMap: no hash suffix (edits reach running pods); Secret: hashed (a new PSK rolls).
    cm = find(objs, "ConfigMap", "meshwire-config")
    check(cm["metadata"]["name"] == "meshwire-config", "ConfigMap name without hash suffix")
    secret = find(objs, "Secret", "meshwire-psk")
    check(secret["metadata"]["name"] != "meshwire-psk", "Secret name with a hash suffix")
    check(base64.b64decode(secret["data"]["psk"]).decode() == psk, "Secret holds base/psk")

    ds = find(objs, "DaemonSet", "meshwire")
    spec, pod = ds["spec"], ds["spec"]["template"]["spec"]
    check(pod.get("hostNetwork") is True, "hostNetwork")
    check(pod.get("tolerations") == [{"operator": "Exists"}], "tolerations: every taint")
    check(pod.get("priorityClassName") == "system-node-critical", "system-node-critical")
    check(pod.get("serviceAccountName") == "meshwire", "serviceAccountName")
    us = spec.get("updateStrategy", {})
    check(us.get("type") == "RollingUpdate"
          and us.get("rollingUpdate") == {"maxUnavailable": 1, "maxSurge": 0},
          "RollingUpdate maxUnavailable 1, maxSurge 0: %s" % us)
    check(spec.get("minReadySeconds", 0) > 0, "minReadySeconds")
    sel = spec["selector"]["matchLabels"]
    check(all(ds["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items()),
          "pod labels match the selector")

    init = {c["name"]: c for c in pod["initContainers"]}
    ctrs = {c["name"]: c for c in pod["containers"]}
    check(list(init) == ["install-cni"] and list(ctrs) == ["meshd"], "containers: %s %s" % (
        list(init), list(ctrs)))
    for c in list(init.values()) + list(ctrs.values()):
        check(c["image"] == tag, "%s image %s == install/image.sh's %s" % (c["name"], c["image"],
                                                                          tag))
        check(c.get("imagePullPolicy") == "IfNotPresent", "%s imagePullPolicy" % c["name"])
        sc = c.get("securityContext", {})
        check(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem")
              and not sc.get("privileged"), "%s securityContext locked down" % c["name"])
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], "%s drops ALL" % c["name"])
    meshd, inst = ctrs["meshd"], init["install-cni"]
    check(meshd["securityContext"]["capabilities"].get("add") == ["NET_ADMIN"],
          "meshd capabilities exactly NET_ADMIN")
    check("add" not in inst["securityContext"]["capabilities"], "install-cni: no capability")

    env = {e["name"]: e for e in meshd["env"]}
    check(env.get("NODE_NAME", {}).get("valueFrom") == {"fieldRef": {"fieldPath":
                                                                     "spec.nodeName"}},
          "NODE_NAME from spec.nodeName")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = meshd.get(probe, {})
        check(p.get("exec", {}).get("command") == ["/usr/bin/meshwire-health"],
              "%s runs meshwire-health" % probe)
    check(meshd["livenessProbe"]["periodSeconds"] * meshd["livenessProbe"]["failureThreshold"]
          >= 60, "liveness: a minute of failures before a restart")
    res = meshd.get("resources", {})
    check("cpu" in res.get("requests", {}) and "memory" in res.get("requests", {})
          and "memory" in res.get("limits", {}) and "cpu" not in res.get("limits", {}),
          "meshd requests cpu+memory, limits memory only: %s" % res)

    vols = {v["name"]: v for v in pod["volumes"]}
    hostpaths = {v["hostPath"]["path"]: v["hostPath"].get("type") for v in vols.values()
                 if "hostPath" in v}
    check(hostpaths == {"/opt/cni/bin": "DirectoryOrCreate", "/etc/cni/net.d": "DirectoryOrCreate",
                        "/var/lib/meshwire": "DirectoryOrCreate",
                        "/run/meshwire": "DirectoryOrCreate",
                        "/run/wireguard": "DirectoryOrCreate", "/dev/net/tun": "CharDevice"},
          "hostPath volumes: %s" % hostpaths)
    check(vols["psk"].get("secret", {}).get("defaultMode") == 0o400, "Secret defaultMode 0400")
    check(vols["psk"]["secret"]["secretName"] == secret["metadata"]["name"], "Secret volume name")
    check(vols["config"].get("configMap", {}).get("name") == "meshwire-config",
          "config volume is the ConfigMap")

    def mounts(c):
        return {m["name"]: m for m in c.get("volumeMounts", [])}
    mm, im = mounts(meshd), mounts(inst)
    for n in ("config", "psk", "state", "run", "wireguard-run", "tun"):
        check(n in mm, "meshd mounts %s" % n)
    check(mm["psk"].get("readOnly") is True and mm["config"].get("readOnly") is True,
          "meshd mounts psk and config read-only")
    check(im.get("cni-bin", {}).get("mountPath") == "/host/opt/cni/bin"
          and im.get("cni-conf", {}).get("mountPath") == "/host/etc/cni/net.d"
          and im.get("config", {}).get("readOnly") is True, "install-cni mounts")
    path_of = {n: mm[n]["mountPath"] for n in mm}
    check(path_of["tun"] == "/dev/net/tun", "tun at /dev/net/tun")

    # The installer's inputs: the conflist it is told to install is a key of the ConfigMap, valid.
    ienv = container_env(inst, "n")
    check(ienv.get("CNI_CONF_NAME") == "10-meshwire.conflist", "CNI_CONF_NAME default")
    args = inst["args"]
    conflist_path = args[args.index("--conflist") + 1]
    check(os.path.dirname(conflist_path) == im["config"]["mountPath"], "conflist in config")
    conflist = json.loads(cm["data"][os.path.basename(conflist_path)])
    check(conflist["plugins"][0]["type"] == "meshwire", "conflist: meshwire first")

    # meshd.yaml's paths are where the DaemonSet mounts things.
    cfg = yaml.safe_load(cm["data"]["meshd.yaml"])
    check(os.path.dirname(cfg["psk"]["path"]) == path_of["psk"]
          and os.path.basename(cfg["psk"]["path"]) in secret["data"], "psk.path in the Secret")
    check(os.path.dirname(cfg["stateDir"]) == path_of["state"], "stateDir inside the state mount")
    check(cfg["runDir"] == path_of["run"] and cfg["socket"].startswith(path_of["run"] + "/"),
          "runDir and socket on the run mount")
    check(path_of["wireguard-run"] in ("/run/wireguard", "/var/run/wireguard"),
          "wireguard-go's socket dir mounted")
    check("podCIDRs" not in cfg, "the shared meshd.yaml has no podCIDRs")
    return ds, cm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    a = ap.parse_args()
    need_tools("kubectl")
    meshd = os.path.join(os.path.abspath(a.build_dir), "meshd", "meshd")
    tag = image_tag()
    print("image tag (install/image.sh --print-tag): %s" % tag)
    nodes = {"edge-1": ["10.244.1.0/24", "fd00:244:1::/64"], "k8s-master": ["10.244.0.0/24"]}
    with Rendered(nodes=nodes) as r, tempfile.TemporaryDirectory(prefix="mwt-%d-k8sm-" %
                                                                  os.getpid()) as tmp:
        base = r.render("base")
        top = r.render()
        check(top == base, "install/kubernetes renders exactly base/")
        ds, cm = check_base(base, r.psk, tag)
        base_text = cm["data"]["meshd.yaml"]

        # The per-node overlay configure.sh wrote: today's meshd runs on it.
        local = r.render("local")
        check_base(local, r.psk, tag)
        lcm = find(local, "ConfigMap", "meshwire-config")
        meshd_c = find(local, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
        for n, cidrs in nodes.items():
            env = container_env(meshd_c, n)
            args = [expand(x, env) for x in meshd_c["args"]]
            path = args[args.index("--config") + 1]
            check(path == "/etc/meshwire/config/%s.yaml" % n, "%s: meshd --config %s" % (n, path))
            text = lcm["data"].get(os.path.basename(path))
            check(text is not None, "%s: ConfigMap key %s" % (n, os.path.basename(path)))
            if text is None:
                continue
            cfg = meshd_check_config(meshd, text, r.psk, tmp, n + ".yaml")
            check(cfg["podCIDRs"] == cidrs, "%s: podCIDRs %s" % (n, cfg["podCIDRs"]))
            check(noncomment_lines(text)[:-1] == noncomment_lines(base_text),
                  "%s: the shared meshd.yaml plus one podCIDRs line" % n)

        # examples/relays: the same objects, meshd.yaml with relayNodes.
        rel = r.render("examples/relays")
        check_base(rel, r.psk, tag)
        rtext = find(rel, "ConfigMap", "meshwire-config")["data"]["meshd.yaml"]
        rcfg = yaml.safe_load(rtext)
        check(rcfg["relayNodes"] == [
            {"nodeName": "k8s-master", "advertiseAddress": ["1.1.1.1"]},
            {"nodeName": "cloud-relay-2", "advertiseAddress": ["2.2.2.2", "2001:db8::2"]}],
            "examples/relays relayNodes: %s" % rcfg.get("relayNodes"))
        meshd_check_config(meshd, rtext + "\npodCIDRs: [10.244.7.0/24]\n", r.psk, tmp,
                           "relay-example.yaml")
        strip = [l for l in noncomment_lines(rtext) if not l.startswith(("relayNodes", "  -",
                                                                           "    advertise"))]
        check(strip == [l for l in noncomment_lines(base_text) if not l.startswith("relayNodes")],
              "examples/relays/meshd.yaml differs from base only in relayNodes")

        # examples/kubernetes-mode: the shared file with the marked line on, for every node.
        km = r.render("examples/kubernetes-mode")
        kcm = find(km, "ConfigMap", "meshwire-config")
        kds = find(km, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
        kenv = container_env(kds, "edge-1")
        check(kenv["MESHD_CONFIG"] == "/etc/meshwire/config/meshd.yaml",
              "kubernetes-mode: every meshd on meshd.yaml")
        ktext = kcm["data"]["meshd.yaml"]
        check(yaml.safe_load(ktext).get("kubernetes") == {"enable": True},
              "kubernetes-mode: kubernetes.enable")
        want = noncomment_lines(base_text.replace("# kubernetes: {enable: true}",
                                                  "kubernetes: {enable: true}"))
        check(noncomment_lines(ktext) == want,
              "kubernetes-mode meshd.yaml = base with the marked line uncommented")
    # configure.sh refuses what would make a broken overlay: a node without pod CIDRs, a name
    # that is not a Node name.
    for line, want in (("edge-9\n", "has no spec.podCIDRs"),
                       ("Bad/Name 10.244.9.0/24\n", "is not a Kubernetes node name")):
        with Rendered() as r2:
            p = subprocess.run(["bash", os.path.join(r2.root, "configure.sh"), "--nodes", "-"],
                               input=line, capture_output=True, text=True)
            check(p.returncode != 0 and want in p.stderr,
                  "configure.sh refuses %r: %d %s" % (line, p.returncode, p.stderr.strip()))
    return verdict("k8s_manifests", " (base, local overlay of %d nodes, examples/relays, "
                   "examples/kubernetes-mode)" % len(nodes))


if __name__ == "__main__":
    sys.exit(main())
