#!/usr/bin/python3
"""python-zeroconf (Debian's python3-zeroconf, run with /usr/bin/python3) as the interop client of
test_mdns_interop.py, inside a test namespace. Prints one JSON object on stdout.

    zc_client.py browse TYPE SECONDS [NAME ...]
                                         every instance of TYPE seen and resolved within SECONDS:
                                         {"services": [{"name", "server", "port", "addresses",
                                         "txt": {k: v}}], "removed": [names]}; with NAMEs, goes
                                         on until each of them is seen and resolved (or SECONDS)
    zc_client.py watch TYPE SECONDS      like browse, but keeps listening for SECONDS and reports
                                         instances removed (goodbye packets) too; prints "ready"
                                         on stderr once browsing
    zc_client.py legacy GROUP NAME TYPE  a legacy unicast query (RFC 6762 §6.7) from an ephemeral
                                         port, built and the answer parsed by zeroconf's own
                                         DNSOutgoing / DNSIncoming: {"from", "id", "questions",
                                         "answers": [{"name", "type", "ttl", "unique", "text"}]}
                                         (dig 9.18 cannot do this to a group: it connect()s its
                                         socket to the group, and no answer comes from there)
    zc_client.py register TYPE NAME PORT SECONDS [k=v ...]
                                         registers a service (another responder on the LAN), keeps
                                         it for SECONDS; prints "registered" on stderr when done
"""

import json
import socket
import sys
import time

from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf, IPVersion


def browse(stype, seconds, watch=False, expect=()):
    zc = Zeroconf(ip_version=IPVersion.All)
    seen, removed = {}, []

    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Removed:
            removed.append(name)
        elif state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            seen[name] = None

    ServiceBrowser(zc, stype, handlers=[on_change])
    if watch:
        print("ready", file=sys.stderr, flush=True)
    start = time.monotonic()
    deadline = start + seconds
    out = {}
    while time.monotonic() < deadline:
        for name in list(seen):
            if name in out:
                continue
            info = zc.get_service_info(stype, name, timeout=1500)
            if info is None:
                continue
            out[name] = {
                "name": name,
                "server": info.server,
                "port": info.port,
                "addresses": info.parsed_addresses(),
                "txt": {k.decode(): (v.decode() if v is not None else None)
                        for k, v in info.properties.items()},
            }
        # Done when everything seen is resolved, but not before 2 s: shared answers from
        # several responders come 20-120 ms apart, and the first alone must not end the browse.
        # Named instances are waited for: a responder on this host may miss the first query's
        # answer (it asks for a unicast reply, which SO_REUSEPORT hands to one of the sockets
        # bound to 5353, not necessarily ours) and only show up after the next query, 1-2 s on.
        if (out and not watch and len(out) == len(seen) and time.monotonic() - start > 2 and
                all(n in out for n in expect)):
            break
        time.sleep(0.1)
    zc.close()
    print(json.dumps({"services": list(out.values()), "seen": sorted(seen), "removed": removed}))


def legacy(group, name, qtype):
    from zeroconf import DNSIncoming, DNSOutgoing, DNSQuestion
    types = {"PTR": 12, "SRV": 33, "TXT": 16, "A": 1, "AAAA": 28, "ANY": 255}
    out = DNSOutgoing(0, multicast=False, id_=0x4d57)
    out.add_question(DNSQuestion(name, types[qtype], 1))
    fam = socket.AF_INET6 if ":" in group else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(3)
    for p in out.packets():
        s.sendto(p, (group, 5353))
    try:
        data, src = s.recvfrom(9000)
    except socket.timeout:
        print(json.dumps({"from": None, "answers": []}))
        return
    msg = DNSIncoming(data, src[:2])
    answers = msg.answers() if callable(msg.answers) else msg.answers
    print(json.dumps({
        "from": "%s:%d" % src[:2], "id": msg.id, "valid": msg.valid,
        "questions": [q.name for q in msg.questions],
        "answers": [{"name": a.name, "type": a.type, "ttl": a.ttl, "unique": a.unique,
                     "text": str(a)} for a in answers]}))


def register(stype, name, port, seconds, props):
    zc = Zeroconf(ip_version=IPVersion.V4Only)
    # This host's address on the LAN: the source a datagram to the group would have.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(("224.0.0.251", 5353))
    addr = probe.getsockname()[0]
    probe.close()
    info = ServiceInfo(stype, "%s.%s" % (name, stype), port=port,
                       properties=dict(p.split("=", 1) for p in props),
                       server="zc-%s.local." % name.lower(), addresses=[socket.inet_aton(addr)])
    zc.register_service(info)
    print("registered", file=sys.stderr, flush=True)
    time.sleep(seconds)
    zc.unregister_service(info)
    zc.close()
    print(json.dumps({"registered": info.name}))


def main():
    cmd = sys.argv[1]
    if cmd in ("browse", "watch"):
        browse(sys.argv[2], float(sys.argv[3]), watch=cmd == "watch", expect=sys.argv[4:])
    elif cmd == "legacy":
        legacy(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "register":
        register(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6:])
    else:
        sys.exit("unknown command %r" % cmd)


if __name__ == "__main__":
    main()
