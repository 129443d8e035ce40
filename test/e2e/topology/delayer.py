#!/usr/bin/env python3
"""User-space link delay: an L2 bridge between two interfaces that holds every frame for a while.

Runs inside a namespace of its own that owns two otherwise unused interfaces (no addresses, IPv6
off), e.g. dn0 (veth to a relay's eth0) and up0 (veth to the public bridge). Every Ethernet frame
received on one is sent out of the other `delay_ms` later (one-way; both directions are delayed,
so the RTT across the bridge grows by 2 * delay_ms), optionally dropped with probability loss_pct.
The kernel has no netem here, this is the replacement.

AF_PACKET sockets with PACKET_VNET_HDR: the virtio-net header that comes with each frame (GSO
size/type, checksum offsets) is passed through unchanged, so TCP super-frames (TSO/GSO, up to
64 KiB) and frames with a pending checksum (CHECKSUM_PARTIAL on veth) cross the bridge intact
without turning offloads off anywhere.

Control: a JSON file {"delay_ms": N, "loss_pct": P} read at start and on SIGHUP. Frames keep
FIFO order per direction; a queue holds at most --limit frames (excess is dropped, as netem does).

Each frame is stamped when it is read, not once per batch: a bridge preempted while it reads a
batch (a loaded host) would otherwise stamp the frames that arrived meanwhile with the time
before the preemption and release them that much early, and a relay's RTT through two bridges
then read 312 ms for a configured 400 (e2e_lossy at load 19). A frame can leave late (the bridge
starved), never early; `late_max_ms` in the stats (SIGUSR1, exit) is the worst lateness seen.
"""

import argparse
import collections
import json
import os
import random
import selectors
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4
BUF = 256 * 1024


def open_if(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--limit", type=int, default=10000)
    args = ap.parse_args()

    state = {"delay": 0.0, "loss": 0.0}
    stats = {"fwd": 0, "drop_loss": 0, "drop_full": 0, "drop_tx": 0, "late_max_ms": 0.0}

    def reload():
        with open(args.ctl) as f:
            c = json.load(f)
        state["delay"] = float(c.get("delay_ms", 0)) / 1000.0
        state["loss"] = float(c.get("loss_pct", 0)) / 100.0
        print("delayer: seq=%d delay_ms=%r loss_pct=%r" % (
            int(c.get("seq", 0)), state["delay"] * 1000.0, state["loss"] * 100), flush=True)

    def on_hup(_s, _f):
        reload()  # handlers run between bytecodes of the main loop: no race on `state`

    def on_term(_s, _f):
        print("delayer: exit %r" % stats, flush=True)
        sys.exit(0)

    reload()
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, lambda *_: print("delayer: stats %r" % stats, flush=True))

    try:  # timing matters more than fairness on a busy CI machine
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError:
        pass
    sa, sb = open_if(args.a), open_if(args.b)
    # direction: (receive socket, send socket, queue)
    q_ab, q_ba = collections.deque(), collections.deque()
    out = {sa.fileno(): (sa, sb, q_ab), sb.fileno(): (sb, sa, q_ba)}
    sel = selectors.DefaultSelector()
    sel.register(sa, selectors.EVENT_READ)
    sel.register(sb, selectors.EVENT_READ)
    print("delayer: ready %s <-> %s" % (args.a, args.b), flush=True)
    rnd = random.random
    now = time.monotonic
    while True:
        delay, loss = state["delay"], state["loss"]
        # flush what is due
        t = now()
        timeout = None
        for rs, ss, q in out.values():
            while q and q[0][0] + delay <= t:
                t_in, frame = q.popleft()
                try:
                    ss.send(frame)
                    stats["fwd"] += 1
                except OSError:
                    stats["drop_tx"] += 1
                late = (now() - t_in - delay) * 1000.0
                if late > stats["late_max_ms"]:
                    stats["late_max_ms"] = round(late, 1)
            if q:
                wait = q[0][0] + delay - t
                timeout = wait if timeout is None else min(timeout, wait)
        try:
            events = sel.select(timeout)
        except InterruptedError:
            continue
        for key, _ in events:
            rs, ss, q = out[key.fd]
            for _ in range(256):
                try:
                    frame, addr = rs.recvfrom(BUF)
                except BlockingIOError:
                    break
                t = now()  # per frame: see the module docstring
                if addr[2] == PACKET_OUTGOING:
                    continue
                if loss and rnd() < loss:
                    stats["drop_loss"] += 1
                    continue
                if delay <= 0 and not q:
                    try:
                        ss.send(frame)
                        stats["fwd"] += 1
                    except OSError:
                        stats["drop_tx"] += 1
                    continue
                if len(q) >= args.limit:
                    stats["drop_full"] += 1
                    continue
                q.append((t, frame))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
