#!/usr/bin/env python3
"""Small network probes for the testbed (Python 3 stdlib), run inside a node's namespace.

  udp-echo  --port P [--bind ADDR]        reply to every datagram with JSON
                                           {"src": "<ip>", "port": <port>, "data": "<payload>"}
                                           i.e. the source address the server saw (NAT mapping)
  udp-probe --targets IP:P,IP:P [--sport S] send from ONE socket to each target, print a JSON list
                                           of what each echo server saw (NAT port behaviour)
  udp-rtt   --target IP:P [--count N]      RTT of N request/replies to an echo server:
                                           JSON {"min_ms", "med_ms", "avg_ms", "max_ms", "lost"}
  udp-punch --sport S --peer IP:P [--seconds T]  UDP hole punching: send to the peer's public
                                           endpoint every 50 ms for T s from local port S, print
                                           JSON {"sent", "received", "from": [sources seen]}
  tcp-sink  --port P                       accept one connection at a time, count bytes, reply
                                           with the count when the sender shuts down
  tcp-send  --target IP:P --bytes N        send N bytes, print JSON {"bytes", "seconds", "MBps"}
  udp-df-send --target IP:P --size N [--count C]  send C don't-fragment datagrams whose IP packets
                                           are N bytes (a path MTU check; exit 1 when the local
                                           stack refuses them: EMSGSIZE)
IPv6 targets are written [addr]:port.
"""

import argparse
import json
import socket
import sys
import time


def parse_target(s):
    if s.startswith("["):
        host, port = s[1:].split("]:")
    else:
        host, port = s.rsplit(":", 1)
    return host, int(port)


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp_echo(a):
    socks = []
    binds = [a.bind] if a.bind else ["0.0.0.0", "::"]
    for b in binds:
        s = socket.socket(family_of(b), socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ":" in b:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((b, a.port))
        socks.append(s)
    print("udp-echo: listening on %s port %d" % (",".join(binds), a.port), flush=True)
    import selectors
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            data, src = key.fileobj.recvfrom(65535)
            reply = json.dumps({"src": src[0], "port": src[1],
                                "data": data.decode(errors="replace")}).encode()
            key.fileobj.sendto(reply, src)
            if a.verbose:
                print("udp-echo: from %s port %d" % (src[0], src[1]), flush=True)


def udp_request(s, target, payload, timeout):
    s.settimeout(timeout)
    s.sendto(payload, target)
    while True:
        data, src = s.recvfrom(65535)
        r = json.loads(data)
        if r.get("data") == payload.decode():
            return r


def udp_probe(a):
    targets = [parse_target(t) for t in a.targets.split(",")]
    fam = family_of(targets[0][0])
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", a.sport))
    local = s.getsockname()[1]
    out = []
    for i, t in enumerate(targets):
        r = None
        for attempt in range(a.tries):
            try:
                r = udp_request(s, t, ("probe-%d-%d" % (i, attempt)).encode(), a.timeout)
                break
            except socket.timeout:
                continue
        out.append({"target": ("[%s]:%d" if ":" in t[0] else "%s:%d") % t, "local_port": local,
                    "seen_src": r and r["src"], "seen_port": r and r["port"]})
    print(json.dumps(out))
    return 0 if all(o["seen_port"] for o in out) else 1


def udp_rtt(a):
    t = parse_target(a.target)
    s = socket.socket(family_of(t[0]), socket.SOCK_DGRAM)
    rtts, lost = [], 0
    for i in range(a.count):
        t0 = time.monotonic()
        try:
            udp_request(s, t, ("rtt-%d" % i).encode(), a.timeout)
            rtts.append((time.monotonic() - t0) * 1000.0)
        except socket.timeout:
            lost += 1
        time.sleep(a.interval)
    res = {"count": a.count, "lost": lost}
    if rtts:
        srt = sorted(rtts)
        res.update(min_ms=round(srt[0], 3), med_ms=round(srt[len(srt) // 2], 3),
                   avg_ms=round(sum(rtts) / len(rtts), 3),
                   max_ms=round(max(rtts), 3))
    print(json.dumps(res))
    return 0 if rtts else 1


def udp_punch(a):
    host, port = parse_target(a.peer)
    fam = family_of(host)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", a.sport))
    s.settimeout(0.05)
    sent = received = 0
    seen = set()
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        s.sendto(b"punch", (host, port))
        sent += 1
        if sent == 1:
            print("sending", flush=True)  # the first datagram left (callers stagger on it)
        try:
            while True:
                _, src = s.recvfrom(2048)
                received += 1
                seen.add(("[%s]:%d" if ":" in src[0] else "%s:%d") % src[:2])
        except socket.timeout:
            pass
    print(json.dumps({"sent": sent, "received": received, "from": sorted(seen)}))
    return 0


def tcp_sink(a):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", a.port))
    s.listen(8)
    print("tcp-sink: listening on port %d" % a.port, flush=True)
    while True:
        c, _ = s.accept()
        n = 0
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            n += len(b)
        c.sendall(str(n).encode())
        c.close()


def tcp_send(a):
    t = parse_target(a.target)
    c = socket.create_connection(t, timeout=a.timeout)
    buf = b"x" * (1 << 16)
    t0 = time.monotonic()
    left = a.bytes
    while left > 0:
        k = c.send(buf[:min(left, len(buf))])
        left -= k
    c.shutdown(socket.SHUT_WR)
    got = int(c.recv(64) or b"0")
    dt = time.monotonic() - t0
    print(json.dumps({"bytes": got, "seconds": round(dt, 3),
                      "MBps": round(got / dt / 1e6, 2)}))
    return 0 if got == a.bytes else 1


def udp_df_send(a):
    host, port = parse_target(a.target)
    v6 = family_of(host) == socket.AF_INET6
    s = socket.socket(family_of(host), socket.SOCK_DGRAM)
    if v6:
        s.setsockopt(socket.IPPROTO_IPV6, 23, 2)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
    else:
        s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
    for _ in range(a.count):
        s.sendto(b"x" * (a.size - (48 if v6 else 28)), (host, port))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("udp-echo")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind")
    p.add_argument("--verbose", action="store_true")
    p = sub.add_parser("udp-probe")
    p.add_argument("--targets", required=True)
    p.add_argument("--sport", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--tries", type=int, default=3)
    p = sub.add_parser("udp-rtt")
    p.add_argument("--target", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=2.0)
    p = sub.add_parser("udp-punch")
    p.add_argument("--sport", type=int, required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--seconds", type=float, default=2.0)
    p = sub.add_parser("tcp-sink")
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("tcp-send")
    p.add_argument("--target", required=True)
    p.add_argument("--bytes", type=int, default=20 << 20)
    p.add_argument("--timeout", type=float, default=10.0)
    p = sub.add_parser("udp-df-send")
    p.add_argument("--target", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--count", type=int, default=5)
    a = ap.parse_args()
    return {"udp-echo": udp_echo, "udp-probe": udp_probe, "udp-rtt": udp_rtt, "udp-punch": udp_punch,
            "tcp-sink": tcp_sink, "tcp-send": tcp_send, "udp-df-send": udp_df_send}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
