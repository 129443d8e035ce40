#!/usr/bin/env python3
"""traffic_mix: what an interface carries, by kind, for bench_idle.py (issue 18). Run inside a
node's network namespace (it opens an AF_PACKET socket, root):

    traffic_mix.py IFNAME SECONDS

counts the frames and bytes (layer 2, as `ip -s link` counts them) in and out of IFNAME for
SECONDS, then prints one JSON object {kind: [in_packets, in_bytes, out_packets, out_bytes]}.

Kinds: meshwire control messages by their type byte, which the sealed envelope carries in clear
("MW", version, type: meshd/core/psk_sealer.hpp, wire_codec.hpp msg_type) -- "ctl hello",
"ctl records", "ctl ping", ...; "nat keepalive" (type 0x81, the bare 4-byte header a NATed node
sends its used relays every 25 s between full probes); RELAY_DATA frames (type 0x80) by the WireGuard message inside
("relayed wg keepalive" = a 32-byte transport message, "relayed wg handshake", "relayed wg
data"); WireGuard sent directly ("wg keepalive", "wg handshake", "wg data": type byte 1-4 and three
zero bytes); "arp", "icmpv6" (neighbour discovery and the like), "icmp", "other". Python 3 stdlib.
"""

import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
CTL_TYPES = {0x01: "hello", 0x02: "records", 0x03: "ping", 0x04: "pong",
             0x05: "session request", 0x06: "session accept", 0x07: "session reject",
             0x08: "dialback request", 0x09: "dialback probe", 0x0a: "cookie reply",
             0x0b: "ae digest", 0x0c: "ae summary", 0x0d: "ae want", 0x0e: "session kept"}


def wg_kind(p):
    """The WireGuard message in a UDP payload, or None: type 1-3 handshake (initiation,
    response, cookie), 4 transport (32 bytes: a keepalive, its empty payload + tag)."""
    if len(p) < 4 or p[1:4] != b"\0\0\0" or not 1 <= p[0] <= 4:
        return None
    if p[0] == 4:
        return "keepalive" if len(p) == 32 else "data"
    return "handshake"


def classify(frame):
    et = struct.unpack("!H", frame[12:14])[0]
    if et == 0x0806:
        return "arp"
    if et == 0x0800 and len(frame) >= 34:
        proto, l4 = frame[23], 14 + (frame[14] & 15) * 4
    elif et == 0x86DD and len(frame) >= 54:
        proto, l4 = frame[20], 54  # no extension headers on this testbed
    else:
        return "other"
    if proto == 1:
        return "icmp"
    if proto == 58:
        return "icmpv6"
    if proto != 17:
        return "other"
    p = frame[l4 + 8:]
    if p[:2] == b"MW" and len(p) >= 4:
        if p[3] == 0x80:
            return "relayed wg " + (wg_kind(p[12:]) or "other")
        if p[3] == 0x81 and len(p) == 4:
            return "nat keepalive"
        return "ctl " + CTL_TYPES.get(p[3], "type 0x%02x" % p[3])
    k = wg_kind(p)
    return "wg " + k if k else "other udp"


def main():
    ifname, secs = sys.argv[1], float(sys.argv[2])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.settimeout(0.2)
    print("traffic_mix: ready", flush=True)
    counts = {}
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            frame, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        c = counts.setdefault(classify(frame), [0, 0, 0, 0])
        i = 2 if addr[2] == PACKET_OUTGOING else 0
        c[i] += 1
        c[i + 1] += len(frame)
    print(json.dumps(counts, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
