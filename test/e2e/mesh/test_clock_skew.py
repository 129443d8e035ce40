#!/usr/bin/env python3
"""Nodes with wrong wall clocks (issue 14 §1), end to end: the real meshd under libfaketime on
the testbed (root; Python 3 stdlib; meshd + wireguard-go + the real CNI plugin; Debian's
`faketime`). CTest `e2e_clock_skew`, label e2e.

Topology as test_psk_rotation: relay1 on the public segment, LAN1 behind a cone NAT (lan1a,
lan1b), LAN2 behind a symmetric NAT (lan2a, lan2b). One mesh for every scenario:
  a. cold start with wrong wall clocks: lan1b +5 h, lan2a -3 h, relay1 -2 days (lan2b runs
     without libfaketime, the reference): every node ready, every pair on its path (lan1a-lan1b
     direct, lan1a-lan2a relayed, ...), pods ping, 0 lost over 3 s once converged. Time to
     ready and to all paths printed per node.
  b. a wall clock that steps while running: lan1a's CLOCK_REALTIME steps +2 h, then -4 h (to
     2 h behind), while its pods ping (every 0.2 s): 0 lost, paths kept.
  c. a restart with the clock behind the previous run: lan1b (ran at +5 h) restarted at -1 day:
     its boot epoch is the stored one + 1 (the clock only seeds it), it rejoins (direct to lan1a,
     relayed to lan2a) and pods ping; time to rejoin printed.
  d. replay still refused: PONGs captured in b at lan1a (AF_PACKET, whole IPv4 packets) from
     relay1 (-2 days) and from lan1b (+5 h, restarted since) are re-injected into lan1a's
     namespace (raw socket, original source address) more than 30 s later (the old wall-clock
     window was +-30 s): relay1's count as control.replayed, lan1b's as control.staleEpoch
     (its epoch is older than its restart's), one each, none accepted.

Which clocks are faked, and why: a node booted without a real-time clock, or whose NTP steps the
time, has a wrong or stepping CLOCK_REALTIME only; CLOCK_MONOTONIC and CLOCK_BOOTTIME count from
boot and are never set. libfaketime by default fakes those too (a relative FAKETIME then moves
CLOCK_BOOTTIME to the faked wall clock, and a step moves it with it), which no real machine
does, so every wrapped meshd runs with FAKETIME_DONT_FAKE_MONOTONIC=1. Stepping clock (b): no
FAKETIME variable (it would win over the file) but FAKETIME_TIMESTAMP_FILE, re-read on every
call (FAKETIME_NO_CACHE=1). libfaketime 0.9.10 also moves absolute CLOCK_MONOTONIC timerfd
deadlines by the wall-clock offset (no kernel does; it stalls Boost.Asio's timers, meshd's core
ticks among them): faketime_timerfd_passthrough.so (built here) is preloaded ahead of it and
hands timerfd_settime to the kernel. wireguard-go (Go: vDSO, raw syscalls) is not reached by
libfaketime; the issue is about meshd. Prints the figures and `N passed, N failed`; exit 1 on
a failure, 77 when it cannot run here.

Usage: test_clock_skew.py [--build-dir DIR]
"""

import calendar
import os
import re
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from checks import (HANDSHAKE_BOUND, PATHS_BOUND, READY_BOUND, check, expect, figure,  # noqa: E402
                    ping_retry, report, run_and_clean, scenario_setup, status, wait_for)

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
PASSTHROUGH = "test/e2e/mesh/faketime_timerfd_passthrough.so"  # in the build tree
NODES = ["relay1", "lan1a", "lan1b", "lan2a", "lan2b"]
# Wall-clock offsets at the cold start (a), in seconds; lan1a starts at +0 through its
# timestamp file (b steps it), lan2b runs without libfaketime.
SKEW = {"relay1": -2 * 86400, "lan1b": 5 * 3600, "lan2a": -3 * 3600, "lan1a": 0}
RESTART_SKEW = -86400  # lan1b in c
STEPS = [2 * 3600, -2 * 3600]  # lan1a's wall clock in b, relative to the real one
CONTROL_PORT = 51821
PONG = 0x04  # never anonymous: always replay-checked (control_channel)
REPLAY_AGE = 31.0  # the old wall-clock window accepted 30 s
CAPTURE_EACH = 3  # PONGs captured per sender
PING_I = 0.2


def want_path(a, b):
    if a == "relay1" or b == "relay1" or a[:4] == b[:4]:
        return "direct"
    return "relay"


def faketime_env(build, offset_s=None, file=None):
    """The argv prefix that starts meshd under libfaketime: a fixed wall-clock offset, or the
    offset read from `file` on every call (it may change while meshd runs). Monotonic and boot
    clocks are left alone (see the docstring)."""
    env = ["env", "LD_PRELOAD=%s:%s" % (os.path.join(build, PASSTHROUGH), LIBFAKETIME),
           "FAKETIME_DONT_FAKE_MONOTONIC=1"]
    if file is not None:
        return env + ["FAKETIME_TIMESTAMP_FILE=" + file, "FAKETIME_NO_CACHE=1"]
    return env + ["FAKETIME=%+ds" % offset_s]


def write_offset(path, offset_s):
    with open(path + ".tmp", "w") as f:
        f.write("%+ds\n" % offset_s)
    os.replace(path + ".tmp", path)


def log_clock_offset(m, n, since=None, msg=""):
    """meshd's wall clock minus ours, in s, from the timestamp of the last line of its log
    (written with the system clock as meshd sees it) that came after `since` bytes and holds
    `msg`; None without one."""
    text = m.log(m[n])
    t_read = time.time()
    tail = text[since:] if since is not None else text
    stamps = re.findall(r"^ts=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z .*%s" % re.escape(msg),
                        tail, re.M)
    if not stamps:
        return None
    s, ms = stamps[-1]
    t = calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000.0
    return t - t_read  # the line is older than now: up to a poll interval too small


def boot_epoch_of(m, n):
    with open(os.path.join(m.configs[n]["stateDir"], "boot.epoch")) as f:
        return int(f.read().strip())


# -- capture and replay (run in a node's namespace: python3 test_clock_skew.py --capture ...) ----


def capture_main(args):
    """--capture SECONDS EACH TYPE SRC...: prints, one hex line each, up to EACH whole IPv4
    packets per SRC address of UDP datagrams to CONTROL_PORT whose payload is a sealed control
    message of TYPE ("MW", version, type), received in this namespace within SECONDS."""
    secs, each, mtype = float(args[0]), int(args[1]), int(args[2])
    srcs = {socket.inet_aton(a): a for a in args[3:]}
    got = {a: [] for a in srcs.values()}
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    s.settimeout(0.2)
    end = time.monotonic() + secs
    while time.monotonic() < end and any(len(v) < each for v in got.values()):
        try:
            pkt, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING or len(pkt) < 20 or pkt[9] != 17:
            continue
        ihl = (pkt[0] & 0x0F) * 4
        src = pkt[12:16]
        if src not in srcs or len(pkt) < ihl + 12:
            continue
        dport = struct.unpack("!H", pkt[ihl + 2:ihl + 4])[0]
        payload = pkt[ihl + 8:]
        if dport != CONTROL_PORT or payload[:2] != b"MW" or payload[3] != mtype:
            continue
        if len(got[srcs[src]]) < each:
            got[srcs[src]].append(pkt)
    for a, pkts in got.items():
        for p in pkts:
            print(a, p.hex())
    return 0


def replay_main(args):
    """--replay HEX...: sends each whole IPv4 packet as it is (its source address included)
    through a raw socket; addressed to this namespace, it is delivered as if it had arrived."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for h in args:
        pkt = bytearray.fromhex(h)
        # A veth hands the capture its frames with the UDP checksum left to offload (partial):
        # as captured it would be wrong. 0 is "no checksum" in IPv4; the payload is untouched.
        ihl = (pkt[0] & 0x0F) * 4
        pkt[ihl + 6:ihl + 8] = b"\0\0"
        s.sendto(bytes(pkt), (socket.inet_ntoa(bytes(pkt[16:20])), 0))
    return 0


# -- the scenarios --------------------------------------------------------------------------------


def start_pings(pods, pairs, count):
    return {(a, b): pods[a].netns.popen(["ping", "-4", "-n", "-c", str(count), "-i", str(PING_I),
                                         "-W", "2", pods[b].addr4], name="ping-clock")
            for a, b in pairs}


def finish_pings(procs, wait):
    """{pair: (sent, received, [lost icmp_seq])} once every ping exited."""
    out = {}
    for pair, p in procs.items():
        try:
            p.popen.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            p.stop()
        with open(p.log_path, errors="replace") as f:
            text = f.read()
        mo = re.search(r"(\d+) packets transmitted, (\d+) received", text)
        sent, got = (int(mo.group(1)), int(mo.group(2))) if mo else (0, 0)
        seqs = {int(x) for x in re.findall(r"icmp_seq=(\d+)", text)}
        out[pair] = (sent, got, sorted(set(range(1, sent + 1)) - seqs))
    return out


def check_pings(what, res, count):
    for (a, b), (sent, got, lost) in sorted(res.items()):
        figure("%s: pings %s -> %s sent / lost" % (what, a, b), "%d / %d%s" % (
            sent, sent - got, " (icmp_seq %s)" % lost if lost else ""))
        expect(sent == count and got == sent, "%s -> %s: %d sent, %d received, lost %s" % (
            a, b, sent, got, lost))


def tables_ok(m, n):
    """True when n's `meshctl peers` shows every other node on its expected path."""
    try:
        got = m.paths(m[n])
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return all(got.get(o) == want_path(n, o) for o in NODES if o != n), got


def run(m, st):
    pods = {}
    a_pairs = [("lan1a", "lan1b"), ("lan1a", "lan2a"), ("lan1b", "lan2a"), ("lan2b", "lan1b"),
               ("lan2a", "lan2b")]

    @check("a. cold start, wall clocks lan1b +5 h, lan2a -3 h, relay1 -2 d: ready, paths, pings")
    def _():
        t0 = time.monotonic()
        m.start()
        ready, paths = {}, {}
        deadline = t0 + READY_BOUND + PATHS_BOUND
        while len(paths) < len(NODES) and time.monotonic() < deadline:
            for n in NODES:
                if n not in ready:
                    if m.meshctl(m[n], "status", check=False) is not None:
                        ready[n] = time.monotonic() - t0
                elif n not in paths and tables_ok(m, n)[0]:
                    paths[n] = time.monotonic() - t0
            time.sleep(0.1)
        for n in NODES:
            figure("a. %s (wall clock %s): ready / all paths after" % (
                n, "%+.0f h" % (SKEW[n] / 3600.0) if n in SKEW else "real"),
                "%s / %s" % ("%.2fs" % ready[n] if n in ready else "never",
                             "%.2fs" % paths[n] if n in paths else "never"))
        m.wait_ready(timeout=1.0)  # with the backend check; all answered above or it fails
        expect(all(ready.get(n, 99) <= READY_BOUND for n in NODES), ready)
        # Raises with the tables and logs when a pair is off its path; plus which record of
        # each peer every node holds (a stale one without relays leaves a pair on none).
        try:
            m.wait_paths({(a, b): want_path(a, b) for a in NODES for b in NODES if a != b},
                         timeout=max(0.5, deadline - time.monotonic()))
        except AssertionError as e:
            seqs = {}
            for n in NODES:
                try:
                    seqs[n] = {p["name"]: p.get("recordSeq")
                               for p in m.meshctl(m[n], "peers")["peers"]}
                except Exception as x:  # noqa: BLE001 - a diagnosis
                    seqs[n] = str(x)
            # Every node's meshd log, kept past the mesh's cleanup (a start-up race is rare:
            # its HELLO/registration lines are the evidence).
            keep = "/tmp/e2e_clock_skew_a_%d" % os.getpid()
            os.makedirs(keep, exist_ok=True)
            for n in NODES:
                with open(os.path.join(keep, n + ".log"), "w") as f:
                    f.write(m.log(m[n]))
            raise AssertionError("%s\nrecordSeq held: %s\nmeshd logs in %s" % (e, seqs, keep)) \
                from None
        for n in ("relay1", "lan1b", "lan2a"):
            off = log_clock_offset(m, n)
            figure("a. %s: meshd's wall clock (its log) minus the real one" % n,
                   "%+.0fs" % off if off is not None else "?")
            expect(off is not None and abs(off - SKEW[n]) < 60,
                   "libfaketime did not reach %s's meshd: offset %s" % (n, off))
            now = time.time()
            e = boot_epoch_of(m, n)
            expect(abs(e - (now + SKEW[n])) < 120, "%s: boot epoch %d, skewed now %.0f" % (
                n, e, now + SKEW[n]))
        st["epoch_lan1b"] = boot_epoch_of(m, "lan1b")
        for n in NODES[1:]:
            pods[n] = m.add_pod(m[n], "p")
        for a, b in a_pairs:
            ping_retry(pods[a], pods[b].addr4, within=HANDSHAKE_BOUND)
        figure("a. mesh up, pods pinging (from start)", "%.2fs" % (time.monotonic() - t0))
        count = 15
        check_pings("a. converged", finish_pings(start_pings(pods, a_pairs, count),
                                                 count * PING_I + 10), count)
        st["a"] = True

    if "a" not in st:
        return
    b_pairs = [("lan1a", "lan1b"), ("lan1a", "lan2a"), ("lan2b", "lan1a")]
    rc = os.path.join(m["lan1a"].dir, "faketime.rc")

    @check("b. lan1a's wall clock steps +2 h, then -4 h, while pods ping: 0 lost, paths kept")
    def _():
        count = 50  # 10 s
        cap = m["lan1a"].popen([sys.executable, os.path.abspath(__file__), "--capture", "8",
                                str(CAPTURE_EACH), str(PONG), m["relay1"].addr4,
                                m["lan1b"].addr4], name="capture")
        procs = start_pings(pods, b_pairs, count)
        try:
            for i, off in enumerate(STEPS):
                time.sleep(2.5)
                mark = len(m.log(m["lan1a"]))
                write_offset(rc, off)
                # A log line to read meshd's clock from: a logLevel edit is logged (config
                # poll: 2 s) and changes nothing else.
                m.configs["lan1a"]["logLevel"] = "info" if i % 2 == 0 else "debug"
                m.write_config(m["lan1a"])
                seen, dt = wait_for("lan1a's meshd logs at the stepped clock", lambda: (
                    lambda o: (o is not None and abs(o - off) < 30, o))(
                        log_clock_offset(m, "lan1a", mark, "logLevel changed")), 6.0)
                figure("b. step %d: lan1a's meshd clock (its log) minus the real one" % (i + 1),
                       "%+.0fs (seen after %.2fs)" % (seen, dt))
                got = {o: m.paths(m["lan1a"]).get(o) for o in NODES if o != "lan1a"}
                expect(all(got[o] == want_path("lan1a", o) for o in got),
                       "after step %d: %s" % (i + 1, got))
        finally:
            res = finish_pings(procs, count * PING_I + 15)
            try:
                cap.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                cap.stop()
        st["t_capture"] = time.monotonic()
        check_pings("b. clock steps", res, count)
        for a in ("lan1a", "lan2b"):
            ok, got = tables_ok(m, a)
            expect(ok, "%s after the steps: %s" % (a, got))
        with open(cap.log_path) as f:
            lines = [ln.split() for ln in f.read().splitlines() if ln.strip()]
        st["captured"] = {src: [h for s, h in lines if s == src]
                          for src in (m["relay1"].addr4, m["lan1b"].addr4)}
        figure("b. PONGs captured at lan1a (relay1, lan1b)", "%d, %d" % tuple(
            len(v) for v in st["captured"].values()))
        st["b"] = True

    @check("c. lan1b restarted with its wall clock -1 day (ran at +5 h): epoch + 1, rejoins")
    def _():
        n = "lan1b"
        m.stop(m[n])
        m.wrap[n] = faketime_env(st["build"], RESTART_SKEW)
        t0 = time.monotonic()
        m.start(m[n])
        m.wait_ready(timeout=READY_BOUND, nodes=[m[n]])
        t_ready = time.monotonic() - t0
        e = boot_epoch_of(m, n)
        figure("c. lan1b boot epoch before / after the restart", "%d / %d (clock now %.0f)" % (
            st["epoch_lan1b"], e, time.time() + RESTART_SKEW))
        expect(e == st["epoch_lan1b"] + 1, (st["epoch_lan1b"], e))
        m.wait_paths({("lan1b", "lan1a"): "direct", ("lan1a", "lan1b"): "direct",
                      ("lan1b", "lan2a"): "relay", ("lan2a", "lan1b"): "relay",
                      ("lan1b", "relay1"): "direct"}, timeout=PATHS_BOUND)
        t_paths = time.monotonic() - t0
        for a, b in (("lan1a", "lan1b"), ("lan1b", "lan2a")):
            ping_retry(pods[a], pods[b].addr4, within=HANDSHAKE_BOUND)
        t_ping = time.monotonic() - t0
        figure("c. lan1b rejoined: ready / paths / pods ping after restart",
               "%.2fs / %.2fs / %.2fs" % (t_ready, t_paths, t_ping))
        off = log_clock_offset(m, n)
        expect(off is not None and abs(off - RESTART_SKEW) < 60, off)
        count = 10
        check_pings("c. after the restart", finish_pings(
            start_pings(pods, [("lan1a", "lan1b"), ("lan2a", "lan1b")], count),
            count * PING_I + 10), count)

    if "b" not in st:
        return

    @check("d. PONGs captured at lan1a replayed > 30 s later: refused (replayed, staleEpoch)")
    def _():
        cap = st["captured"]
        r1, l1b = cap[m["relay1"].addr4], cap[m["lan1b"].addr4]
        expect(r1 and l1b, "nothing captured to replay: %s" % cap)
        wait = st["t_capture"] + REPLAY_AGE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        figure("d. replayed after (since the capture ended)", "%.1fs" % (
            time.monotonic() - st["t_capture"]))

        def counters():
            c = status(m, "lan1a")["control"]
            return {k: v for k, v in c.items() if isinstance(v, int)}
        for what, pkts, key in (("relay1 (-2 d)", r1, "replayed"),
                                ("lan1b (+5 h, restarted since)", l1b, "staleEpoch")):
            before = counters()
            m["lan1a"].run([sys.executable, os.path.abspath(__file__), "--replay"] + pkts,
                           timeout=15)
            after, dt = wait_for("lan1a counts the replays", lambda: (
                lambda c: (c[key] - before[key] >= len(pkts), c))(counters()), 3.0)
            # accepted/openedSeal move with the mesh's own traffic: left out.
            delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k)
                     and k not in ("accepted", "openedSeal", "openedAccept")}
            figure("d. %d PONGs from %s replayed: lan1a's counters moved" % (len(pkts), what),
                   delta)
            refused = delta.get("replayed", 0) + delta.get("staleEpoch", 0)
            expect(refused == len(pkts) and delta.get(key) == len(pkts), delta)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--capture":
        return capture_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--replay":
        return replay_main(sys.argv[2:])
    from mesh import Mesh
    build, rc = scenario_setup()
    if rc is not None:
        return rc
    if not os.path.exists(LIBFAKETIME):
        print("skipped: needs %s (Debian package faketime, install/deps.sh)" % LIBFAKETIME)
        return 77
    if not os.path.exists(os.path.join(build, PASSTHROUGH)):
        print("FAIL: %s not built in %s" % (PASSTHROUGH, build))
        return 1
    t_start = time.monotonic()
    m = Mesh(build_dir=build, nodes=NODES,
             topology_args={"relays": 1, "lans": ["cone", "symmetric"], "nodes_per_lan": 2,
                            "keep_tmp": bool(os.environ.get("MESH_KEEP"))})
    rc_file = os.path.join(m["lan1a"].dir, "faketime.rc")
    write_offset(rc_file, 0)
    m.wrap = {n: faketime_env(build, off) for n, off in SKEW.items() if n != "lan1a"}
    m.wrap["lan1a"] = faketime_env(build, file=rc_file)
    st = {"build": build}
    run_and_clean(m, lambda m: run(m, st))
    return report(t_start, 64)


if __name__ == "__main__":
    sys.exit(main())
