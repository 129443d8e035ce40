#!/usr/bin/env python3
"""meshd's mDNS against clients nobody here wrote (issue 10 §2, §4), on the e2e testbed: one LAN
(bridge behind a NAT router, no relays), meshd on lan1a, the clients on lan1b (root; the
namespaces are the testbed's, removed at the end also on failure). See README.md here.

  1. python-zeroconf (Debian's python3-zeroconf under /usr/bin/python3) browses
     _meshwire._udp.local and resolves lan1a: port = listenPort, TXT id = its node ID and v=,
     addresses = its LAN addresses only (no loopback, link-local or WireGuard ones).
  2. Legacy unicast (RFC 6762 §6.7): `dig -p 5353 @<lan1a> _meshwire._udp.local PTR` (and SRV,
     and AAAA over IPv6) gets the answer, TTLs at most 10 s. The same query to the group
     224.0.0.251 is answered too (meshd counts it), but dig 9.18 cannot take that answer: it
     connect()s its UDP socket to 224.0.0.251:5353, so the kernel drops every reply (no host
     sends from a multicast address; the same holds for avahi's answers). zeroconf's own
     DNSOutgoing/DNSIncoming send that legacy query to the group from an ephemeral port and
     check the answer: the query's ID echoed, the question echoed, no cache-flush bit.
  3. Another responder (zeroconf on lan1b) registers _http._tcp and a _meshwire._udp instance
     without a node ID: meshd answers neither (dig to lan1a directly gets nothing for them),
     finds no peer in them, and has no conflict.
  4. Malformed packets (compression loop, truncated, oversized) are counted and dropped, and
     meshd still answers after them.
  5. An address added to lan1a's eth0 is announced (rtnetlink -> re-announce) and resolved by a
     fresh zeroconf browser; once deleted it is gone (goodbye for the address).
  6. Goodbye: a zeroconf browser sees the instance removed when meshd stops (TTL 0 packets).

Exit 0 pass, 1 fail, 77 skip (not root, or dig / python3-zeroconf / the binaries missing).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mesh"))
sys.path.insert(0, os.path.join(HERE, "..", "topology"))

ZC = os.path.join(HERE, "zc_client.py")
DEBIAN_PY = "/usr/bin/python3"
SERVICE = "_meshwire._udp.local."

failures = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def skip(why):
    print("SKIP: " + why)
    sys.exit(77)


def dig(node, *args, timeout=15):
    r = node.run(["dig", "+tries=1", "+time=2"] + list(args), check=False, timeout=timeout)
    return r.stdout


def answers(dig_out):
    """The ANSWER SECTION lines of dig's output: [(name, ttl, type, data)]."""
    out, on = [], False
    for line in dig_out.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            on = True
            continue
        if on:
            if not line.strip() or line.startswith(";;"):
                break
            f = line.split(None, 4)
            if len(f) == 5:
                out.append((f[0], int(f[1]), f[3], f[4]))
    return out


def mdns_status(m, node):
    return m.meshctl(node, "status")["mdns"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "..", "..", "build"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        skip("needs root (network namespaces)")
    if subprocess.run(["which", "dig"], capture_output=True).returncode != 0:
        skip("dig missing (install/deps.sh: dnsutils)")
    if subprocess.run([DEBIAN_PY, "-c", "import zeroconf"], capture_output=True).returncode != 0:
        skip("python3-zeroconf missing for /usr/bin/python3 (install/deps.sh)")
    from mesh import Mesh  # noqa: E402

    t0 = time.monotonic()
    with Mesh(build_dir=a.build_dir, nodes=["lan1a"],
              topology_args={"relays": 0, "lans": ["cone"], "nodes_per_lan": 2},
              overrides={"lan1a": {"config": {"mdns": {"enable": True}}}}) as m:
        node, client = m.t["lan1a"], m.t["lan1b"]
        m.start()
        m.wait_ready(timeout=20)
        st = m.meshctl(node, "status")
        node_id = st["node"]["id"]
        md = st["mdns"]
        check(md is not None and md["interfaces"] == ["eth0"],
              "mdns runs on eth0 only (not lo, not the WireGuard interface): %s" % md)

        # 1. zeroconf browse + resolve.
        t = time.monotonic()
        r = client.run([DEBIAN_PY, ZC, "browse", SERVICE, "8"], timeout=30)
        found = json.loads(r.stdout)["services"]
        print("      zeroconf resolved in %.2f s: %s" % (time.monotonic() - t, found))
        svc = [s for s in found if s["name"] == "lan1a." + SERVICE]
        if check(len(svc) == 1, "zeroconf browses and resolves lan1a.%s" % SERVICE):
            s = svc[0]
            check(s["port"] == 51821, "SRV port is listenPort 51821 (got %s)" % s["port"])
            check(s["txt"].get("id") == node_id, "TXT id= is the node ID")
            # psk_sealer::version, the control protocol's wire version.
            check(s["txt"].get("v", "").isdigit() and int(s["txt"]["v"]) >= 2,
                  "TXT v= is the protocol version (%s)" % s["txt"])
            check(s["server"] == "meshwire-%s.local." % node_id[:12],
                  "SRV target is the node's own host name (%s)" % s["server"])
            want = {node.addr4, node.addr6}
            check(set(s["addresses"]) == want,
                  "addresses are exactly the LAN addresses %s (got %s)" % (want, s["addresses"]))

        # 2. dig legacy unicast, multicast and unicast.
        out = dig(client, "-p", "5353", "@" + node.addr4, "_meshwire._udp.local", "PTR")
        ans = answers(out)
        check(any(x[2] == "PTR" and x[3] == "lan1a._meshwire._udp.local." for x in ans),
              "dig -p 5353 @%s _meshwire._udp.local PTR answers lan1a: %s" % (node.addr4, ans))
        check(ans and all(x[1] <= 10 for x in ans),
              "legacy unicast TTLs are at most 10 s: %s" % ans)
        before = mdns_status(m, node)["legacyAnswers"]
        out = dig(client, "-p", "5353", "@224.0.0.251", "_meshwire._udp.local", "PTR")
        check(mdns_status(m, node)["legacyAnswers"] == before + 1,
              "dig -p 5353 @224.0.0.251 _meshwire._udp.local PTR: meshd answered (dig's "
              "connected socket cannot take the answer: %s)" % (
                  "got it" if answers(out) else "timed out, as expected"))
        r = json.loads(client.run([DEBIAN_PY, ZC, "legacy", "224.0.0.251",
                                   "_meshwire._udp.local.", "PTR"], timeout=20).stdout)
        la = r["answers"]
        check(r["from"] == node.addr4 + ":5353" and r["id"] == 0x4d57 and
              r["questions"] == ["_meshwire._udp.local."],
              "a legacy query to 224.0.0.251 (zeroconf's encoder) is answered from port 5353 "
              "with its ID and question: %s" % r)
        check(any(x["type"] == 12 and "lan1a._meshwire._udp.local." in x["text"] for x in la) and
              all(x["ttl"] <= 10 and not x["unique"] for x in la),
              "its answer (zeroconf's decoder): lan1a's PTR, TTLs <= 10 s, no cache-flush: %s"
              % la)
        out = dig(client, "-p", "5353", "@" + node.addr4, "lan1a._meshwire._udp.local", "SRV")
        ans = answers(out)
        check(any(x[2] == "SRV" and x[3].split()[2] == "51821" for x in ans),
              "unicast dig for the instance's SRV answers port 51821: %s" % ans)
        out = dig(client, "-p", "5353", "@" + node.addr6, "meshwire-%s.local" % node_id[:12],
                  "AAAA")
        ans = answers(out)
        check(any(x[2] == "AAAA" and x[3] == node.addr6 for x in ans),
              "dig over IPv6 for the host name's AAAA answers %s: %s" % (node.addr6, ans))
        check(mdns_status(m, node)["legacyAnswers"] >= 3, "meshd counted its legacy answers")

        # 3. Another responder beside meshd: meshd never answers for it, finds no peer in it.
        regs = [client.popen([DEBIAN_PY, ZC, "register", "_http._tcp.local.", "web", "8080",
                              "20", "path=/"], name="zc-http"),
                client.popen([DEBIAN_PY, ZC, "register", SERVICE, "not-a-meshd", "51821", "20",
                              "v=1"], name="zc-fake")]
        for p in regs:
            p.wait_log("registered", timeout=15)
        out = dig(client, "-p", "5353", "@" + node.addr4, "_http._tcp.local", "PTR")
        check(not answers(out), "meshd does not answer for _http._tcp.local: %s" % answers(out))
        out = dig(client, "-p", "5353", "@" + node.addr4, "not-a-meshd._meshwire._udp.local",
                  "SRV")
        check(not answers(out), "meshd does not answer for another _meshwire instance")
        # A browse sees the fake instance (up to 10 s: its queries back off, 1 s, 2 s, 4 s).
        r = client.run([DEBIAN_PY, ZC, "browse", SERVICE, "10", "not-a-meshd." + SERVICE,
                        "lan1a." + SERVICE], timeout=30)
        names = json.loads(r.stdout)["seen"]
        check("not-a-meshd." + SERVICE in names and "lan1a." + SERVICE in names,
              "zeroconf sees both _meshwire instances: %s" % names)
        md = mdns_status(m, node)
        check(md["peersFound"] == 0, "an instance without a node ID is not a peer (%s)" % md)
        check(md["conflicts"] == 0 and md["instance"] == "lan1a", "no conflict, no rename")
        if not check(md["malformed"] == 0,
                     "nothing zeroconf or dig sent was taken for malformed (%d)" % md["malformed"]):
            print("\n".join(x for x in m.procs["lan1a"].log().splitlines() if "malformed" in x))

        # 4. Malformed packets: counted and dropped; meshd still answers.
        before = mdns_status(m, node)["malformed"]
        bad = [
            "0000000000010000000000000161c00c00010001",  # label then a pointer back to it
            "0000840000000001000000000001",  # truncated answer
            "00000000000100000000000040" + "61" * 64 + "0000010001",  # label of 64 bytes
        ]
        send = ("import socket,sys\n"
                "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                "for h in sys.argv[1:]:\n"
                "    s.sendto(bytes.fromhex(h),('224.0.0.251',5353))\n"
                "s.sendto(b'\\0'*9100,('%s',5353))\n" % node.addr4)
        client.run([DEBIAN_PY, "-c", send] + bad, timeout=15)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            after = mdns_status(m, node)["malformed"]
            if after - before >= 4:
                break
            time.sleep(0.2)
        check(after - before == 4, "4 malformed packets counted (%d -> %d)" % (before, after))
        out = dig(client, "-p", "5353", "@" + node.addr4, "_meshwire._udp.local", "PTR")
        check(any(x[3] == "lan1a._meshwire._udp.local." for x in answers(out)),
              "meshd still answers after malformed packets")
        for p in regs:
            p.stop()

        # 5. An address added to the interface: netlink -> re-announce; zeroconf resolves it.
        extra = "192.168.11.77"
        t = time.monotonic()
        node.ip("addr", "add", extra + "/24", "dev", "eth0")
        got = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and extra not in got:
            r = client.run([DEBIAN_PY, ZC, "browse", SERVICE, "3"], timeout=30)
            got = [a for s in json.loads(r.stdout)["services"] if s["name"] == "lan1a." + SERVICE
                   for a in s["addresses"]]
        check(extra in got, "an added address is announced: zeroconf resolves %s within %.1f s "
              "(%s)" % (extra, time.monotonic() - t, got))
        node.ip("addr", "del", extra + "/24", "dev", "eth0")
        t = time.monotonic()
        while time.monotonic() < t + 10 and extra in got:
            r = client.run([DEBIAN_PY, ZC, "browse", SERVICE, "3"], timeout=30)
            got = [a for s in json.loads(r.stdout)["services"] if s["name"] == "lan1a." + SERVICE
                   for a in s["addresses"]]
        check(extra not in got, "a removed address is gone (goodbye): %s" % got)

        # 6. Goodbye on stop: a watching zeroconf browser sees lan1a removed.
        w = client.popen([DEBIAN_PY, ZC, "watch", SERVICE, "6"], name="zc-watch")
        w.wait_log("ready", timeout=15)
        time.sleep(2)  # found it first
        t = time.monotonic()
        code = m.stop(node)
        check(code == 0, "meshd stops cleanly (exit %s)" % code)
        w.wait(timeout=30)
        with open(w.log_path) as f:
            last = [line for line in f.read().splitlines() if line.startswith("{")]
        res = json.loads(last[-1]) if last else {"services": [], "removed": []}
        check("lan1a." + SERVICE in res["removed"],
              "zeroconf saw the goodbye: lan1a removed (%s)" % res)
        print("      goodbye seen within %.1f s of the stop" % (time.monotonic() - t))
    print("mdns interop: %.1f s, %d failure(s)" % (time.monotonic() - t0, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
