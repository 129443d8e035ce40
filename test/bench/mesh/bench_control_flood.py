#!/usr/bin/env python3
"""bench_control_flood: floods at a relay's public port (issues 17, 14 §6) while a relayed iperf3
stream runs through it. On the e2e testbed (6 meshd, 2 relays, 2 NATed LANs): the relayed pair
lan1a -> lan2a settles on a relay R; then one phase per flood kind, each an iperf3 run (TCP,
--seconds) with the flood on, sent from the other relay's namespace at R:
  baseline  no flood (while it runs, the datagrams arriving at R's listenPort are captured from an
            AF_PACKET socket in R's namespace: sealed control messages and RELAY_DATA frames)
  junk      udp_flood: ~300 kpps of "MW"-prefixed junk (a sealed type, random bytes: passes
            classify(), fails the AEAD)
  replay    udp_flood --replay: the captured datagrams sent again verbatim at the same rate
            (control: opens, then refused as replayed; frames: wrong_source)
  sessions  session_flood: a registered PSK holder (fresh identity, HELLO with cookie) asking for
            sessions to random node IDs: sealed, valid RELAY_SESSION_REQUESTs, held by R's session
            table caps, set low for the test (relayService.maxSessions, maxSessionsPerNode)
  oversize  65,507-byte datagrams (larger than any legal frame) at listenPort, as control junk and
            as RELAY_DATA, and at the WireGuard port
Each phase prints R's meshd CPU % (utime+stime from /proc/<pid>/stat over the phase), its highest
VmRSS (sampled every 0.25 s), the stream's Mbit/s and its ratio to the baseline, the flood's
achieved rate and the counters that show which limit held; then a summary table. Runtime about
80 s.

Fails (exit 1) when the thing measured did not work: iperf3 failed or moved nothing in a phase
(the relayed stream stopped), the pair was not relayed, any meshd died, a flooder sent nothing
(or session_flood was not registered), R's session table grew past maxSessions or the flood's
node got more sessions than maxSessionsPerNode, or R's RSS grew by more than the bound the bounded
inbox implies. That bound is a correctness property of the bounded queue, not a speed target: the
inbox holds at most 1,024 datagrams of 1,400 bytes (plus its 4,096-source bucket table, ~0.4 MB:
control_inbox::memory_bound), nothing else on the path allocates per datagram, so RSS may grow by
that plus allocator and page slack (RSS_SLACK_KIB below) and no more; before the inbox a 313 kpps
flood grew RSS from 9.6 to ~60 MB. Throughput and CPU are printed, never judged (the flooder
itself takes a core of this 2-core machine). Skips (77) without root."""

import argparse
import json
import os
import sys
import tempfile
import threading
import time

from meshbench import (Failures, Mesh, check_meshd_alive, check_path, cpu_seconds, meshd_pid,
                       need_root, peer, ping_until_ok, start_mesh, status_kb)

INBOX_BOUND_KIB = (1024 * (1400 + 64) + 450 * 1024) // 1024  # control_inbox::memory_bound
RSS_SLACK_KIB = 6 * 1024  # allocator arenas, thread stacks touched, page granularity
# R's session table for the test: low enough that one flooding identity reaches its cap within a
# phase (the inbox lets ~2,000 of its datagrams a second through).
MAX_SESSIONS = 4096
MAX_SESSIONS_PER_NODE = 256

# Runs in R's namespace: captures UDP/IPv4 payloads to PORT (unfragmented, at most 1,472 bytes)
# for SECONDS, at most
# 400 control datagrams and 400 RELAY_DATA frames, as u16 length + bytes.
CAPTURE = r"""
import socket, struct, sys, time
port, seconds, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.settimeout(0.2)
kept = {"control": 0, "data": 0}
end = time.monotonic() + seconds
with open(out, "wb") as f:
    while time.monotonic() < end and min(kept.values()) < 400:
        try:
            pkt = s.recv(65535)
        except socket.timeout:
            continue
        if len(pkt) < 28 or pkt[9] != 17 or (struct.unpack("!H", pkt[6:8])[0] & 0x3fff):
            continue
        ihl = (pkt[0] & 15) * 4
        dport = struct.unpack("!H", pkt[ihl + 2:ihl + 4])[0]
        body = pkt[ihl + 8:]
        # At most one MTU: a larger one is a GSO super-packet of several frames (veths pass
        # them unsegmented), which sent again as one datagram would only be truncated.
        if dport != port or len(body) < 4 or len(body) > 1472 or body[:2] != b"MW":
            continue
        if body[3] == 0x81:
            continue  # NAT_KEEPALIVE: nothing to replay
        kind = "data" if body[3] == 0x80 else "control"
        if kept[kind] >= 400:
            continue
        kept[kind] += 1
        f.write(struct.pack("!H", len(body)) + body)
print("captured control=%d data=%d" % (kept["control"], kept["data"]))
"""


def iperf(client, server_addr, seconds):
    r = client.run(["iperf3", "-c", server_addr, "-t", str(seconds), "-J"], check=False,
                   timeout=seconds + 30)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        raise RuntimeError("iperf3 gave no JSON (exit %d): %s %s" % (r.returncode, r.stdout[-300:],
                                                                   r.stderr[-300:]))
    if "error" in doc:
        raise RuntimeError("iperf3: %s" % doc["error"])
    end = doc["end"]
    return end["sum_received"]["bytes"], end["sum_received"]["bits_per_second"] / 1e6


def metrics(m, node):
    """The relay's counters that show which limit held: {name{labels}: value}."""
    port = m.configs[node.name].get("metrics", {}).get("listen")
    if not port:
        return {}
    r = node.run(["curl", "-s", "--max-time", "3", "http://%s/metrics" % port], check=False)
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith(("meshwire_control_inbox", "meshwire_control_dropped_total",
                            "meshwire_relay_dropped_packets_total",
                            "meshwire_relay_sessions_refused_total", "meshwire_relay_malformed",
                            "meshwire_relay_sessions ", "meshwire_admission_refused_total",
                            "meshwire_control_cookie_replies_total")):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def flood_result(out):
    """The RESULT line's fields of a flooder's output: {key: value}."""
    res = [l for l in out.splitlines() if l.startswith("RESULT")]
    if not res:
        return {}
    return dict(kv.partition("=")[::2] for kv in res[0].split()[1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--pps", type=int, default=300_000)
    ap.add_argument("--session-rate", type=int, default=5_000)
    ap.add_argument("--oversize-pps", type=int, default=1_000)
    a = ap.parse_args()
    need_root("bench_control_flood")
    bench_dir = os.path.join(a.build_dir, "test", "bench", "mesh")
    flood_bin = os.environ.get("UDP_FLOOD") or os.path.join(bench_dir, "udp_flood")
    session_bin = os.environ.get("SESSION_FLOOD") or os.path.join(bench_dir, "session_flood")
    for b in (flood_bin, session_bin):
        if not os.access(b, os.X_OK):
            print("bench_control_flood: no flooder binary at %s" % b)
            return 1
    fails = Failures("bench_control_flood")
    relay_cfg = {"metrics": {"listen": "127.0.0.1:9464"},
                 "relayService": {"maxSessions": MAX_SESSIONS,
                                  "maxSessionsPerNode": MAX_SESSIONS_PER_NODE}}
    rows = []
    with Mesh(build_dir=a.build_dir,
              overrides={n: {"config": relay_cfg} for n in ("relay1", "relay2")}) as m:
        settle = start_mesh(m, {("lan1a", "lan2a"): "relay", ("lan2a", "lan1a"): "relay"})
        print("mesh up after %.1f s" % settle)
        src = m.add_pod(m["lan1a"], "src")
        dst = m.add_pod(m["lan2a"], "dst")
        dst.netns.popen(["iperf3", "-s"], name="iperf3-server")
        time.sleep(0.5)
        ping_until_ok(src, dst.addr4)
        relay_name = peer(m, "lan1a", "lan2a")["relay"]
        relay = m[relay_name]
        flooder = [n for n in m.relays if n.name != relay_name][0]
        pid = meshd_pid(m, relay)
        port = m.configs[relay_name].get("listenPort", 51821)
        wg_port = m.configs[relay_name].get("wireguard", {}).get("listenPort", 51820)
        target = "%s:%d" % (relay.addr4, port)
        st = m.meshctl(relay, "status")
        relay_key = st["node"]["wgPublicKey"]
        svc = st.get("relayService") or {}
        print("relayed pair lan1a -> lan2a via %s; floods from %s's namespace to %s; %s's session "
              "caps: %s total, %s per node" % (relay_name, flooder.name, target, relay_name,
                                               svc.get("maxSessions"),
                                               svc.get("maxSessionsPerNode")))
        if svc.get("maxSessions") != MAX_SESSIONS or \
                svc.get("maxSessionsPerNode") != MAX_SESSIONS_PER_NODE:
            fails.add("%s does not show the configured session caps in meshctl status: %s" % (
                relay_name, svc))
        check_path(m, fails, "lan1a", "lan2a", "relay", when="before the baseline")
        capture_file = os.path.join(tempfile.mkdtemp(prefix="flood-"), "captured.bin")

        def phase(name, floods, what):
            """One iperf3 run with `floods` running ([(label, argv)], started 1 s before the
            stream and lasting past it); prints and returns the phase's row."""
            before = metrics(m, relay)
            rss0 = status_kb(pid)["VmRSS"]
            peak = [rss0]
            sessions_peak = [0]
            stop = threading.Event()
            outs = {}

            def sample():
                while not stop.is_set():
                    try:
                        peak[0] = max(peak[0], status_kb(pid)["VmRSS"])
                    except OSError:
                        return
                    time.sleep(0.25)

            def run_flood(label, argv):
                r = flooder.run(argv, check=False, timeout=a.seconds + 40)
                outs[label] = (r.returncode, r.stdout + r.stderr)

            threads = [threading.Thread(target=run_flood, args=f) for f in floods]
            threads.append(threading.Thread(target=sample))
            if name == "baseline":
                def capture():
                    r = relay.run(["python3", "-c", CAPTURE, str(port), str(a.seconds),
                                   capture_file], check=False, timeout=a.seconds + 20)
                    outs["capture"] = (r.returncode, r.stdout + r.stderr)
                threads.append(threading.Thread(target=capture))
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            for t in threads:
                t.start()
            time.sleep(1 if floods else 0.3)  # the flood is on before the stream starts
            mbps = None
            try:
                moved, mbps = iperf(src, dst.addr4, a.seconds)
                if moved == 0:
                    fails.add("%s: iperf3 moved nothing (the relayed stream stopped)" % name)
            except RuntimeError as e:
                fails.add("%s: %s (the relayed stream stopped)" % (name, e))
            if name == "sessions":
                doc = m.meshctl(relay, "status", check=False) or {}
                sessions_peak[0] = (doc.get("relayService") or {}).get("sessions", 0)
            for t in threads[:len(floods)]:
                t.join()
            cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100 \
                if os.path.exists("/proc/%d" % pid) else float("nan")
            stop.set()
            for t in threads[len(floods):]:
                t.join()
            time.sleep(0.5)
            after = metrics(m, relay)
            sent, rates = 0, []
            for label, (rc, out) in sorted(outs.items()):
                if label == "capture":
                    print("  capture at %s: %s" % (relay_name, out.strip()[-300:]))
                    continue
                r = flood_result(out)
                print("  %s: %s" % (label, " ".join("%s=%s" % kv for kv in r.items())
                                    if r else out.strip()[-300:]))
                n = int(r.get("sent", 0))
                if rc != 0 or n == 0:
                    fails.add("%s: flooder %s sent nothing (exit %s): %s" % (
                        name, label, rc, out.strip()[-300:]))
                sent += n
                if "pps" in r:
                    rates.append(float(r["pps"]))
                if label == "session_flood":
                    acc = int(r.get("accepted", 0))
                    if r.get("registered") != "1":
                        fails.add("sessions: session_flood was not registered by %s" %
                                  relay_name)
                    if acc > MAX_SESSIONS_PER_NODE:
                        fails.add("sessions: %s accepted %d sessions for one node, more than "
                                  "maxSessionsPerNode %d" % (relay_name, acc,
                                                             MAX_SESSIONS_PER_NODE))
            deltas = {k: after[k] - before.get(k, 0) for k in sorted(after)
                      if after[k] - before.get(k, 0) and k != "meshwire_relay_sessions" and
                      not k.startswith(("meshwire_control_inbox_depth",
                                        "meshwire_control_inbox_high_water"))}
            for k, v in deltas.items():
                print("  %s %+d" % (k, v))
            table = after.get("meshwire_relay_sessions", 0)
            sessions_peak[0] = max(sessions_peak[0], int(table))
            if sessions_peak[0] > MAX_SESSIONS:
                fails.add("%s: %s's session table holds %d sessions, past maxSessions %d" % (
                    name, relay_name, sessions_peak[0], MAX_SESSIONS))
            growth = peak[0] - rss0
            if growth > INBOX_BOUND_KIB + RSS_SLACK_KIB:
                fails.add("%s: meshd RSS grew by %d KiB under the flood, more than the bounded "
                          "inbox allows (%d KiB)" % (name, growth,
                                                     INBOX_BOUND_KIB + RSS_SLACK_KIB))
            held = ", ".join("%s %+d" % (k.replace("meshwire_", ""), v) for k, v in deltas.items()
                             if "dropped" in k or "refused" in k or "malformed" in k)
            row = {"phase": name, "what": what, "pps": sum(rates), "sent": sent, "cpu": cpu,
                   "rss": peak[0], "rss0": rss0, "mbps": mbps, "sessions": sessions_peak[0],
                   "held": held}
            print("%-9s %s: %s meshd CPU %.0f %%, VmRSS %d -> max %d KiB, stream %s Mbit/s, "
                  "sessions %d" % (name, what, relay_name, cpu, rss0, peak[0],
                                   "%.1f" % mbps if mbps is not None else "-", sessions_peak[0]))
            rows.append(row)
            alive = check_meshd_alive(m, fails, "after the %s phase" % name)
            return alive

        flood = [flood_bin, "--dst", target, "--seconds", str(a.seconds + 2)]
        ok = phase("baseline", [], "no flood")
        cap = rows and os.path.exists(capture_file) and os.path.getsize(capture_file) > 0
        if ok:
            ok = phase("junk", [("udp_flood", flood + ["--pps", str(a.pps), "--sockets", "8"])],
                       "%d pps unauthenticated 200 B" % a.pps)
        if ok and not cap:
            fails.add("replay: nothing was captured at %s to replay" % target)
        elif ok:
            ok = phase("replay", [("udp_flood", flood + ["--pps", str(a.pps), "--sockets", "8",
                                                         "--replay", capture_file])],
                       "%d pps captured sealed control + RELAY_DATA, verbatim" % a.pps)
        if ok:
            psk_path = os.path.join(flooder.dir, "psk")
            ok = phase("sessions", [("session_flood", [
                session_bin, "--dst", target, "--relay-key", relay_key, "--psk", psk_path,
                "--rate", str(a.session_rate), "--seconds", str(a.seconds + 2)])],
                       "%d/s sealed session requests, made-up pairs" % a.session_rate)
        if ok:
            big = ["--pps", str(a.oversize_pps), "--sockets", "2", "--size", "65507"]
            ok = phase("oversize", [
                ("control", flood + big),
                ("data", flood + big + ["--kind", "data"]),
                ("wireguard", [flood_bin, "--dst", "%s:%d" % (relay.addr4, wg_port), "--seconds",
                               str(a.seconds + 2)] + big)],
                       "3 x %d pps of 65,507 B (control, RELAY_DATA, WireGuard port)" %
                       a.oversize_pps)
        check_path(m, fails, "lan1a", "lan2a", "relay", when="after the floods")
    base = rows[0]["mbps"] if rows and rows[0]["phase"] == "baseline" else None
    print()
    print("==== bench_control_flood summary ====")
    print("relay meshd CPU %% over the phase (of one core), VmRSS max, relayed iperf3 TCP "
          "(%d s) and its ratio to the baseline; session caps %d total, %d per node" % (
              a.seconds, MAX_SESSIONS, MAX_SESSIONS_PER_NODE))
    print("| flood | rate sent | relay CPU | RSS max | stream | vs baseline | sessions | "
          "what held it |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = "%.2f" % (r["mbps"] / base) if r["mbps"] is not None and base else "-"
        print("| %s | %s | %.0f %% | %.1f MB | %s Mbit/s | %s | %d | %s |" % (
            r["phase"], "%.0f/s" % r["pps"] if r["pps"] else "-", r["cpu"], r["rss"] / 1024,
            "%.0f" % r["mbps"] if r["mbps"] is not None else "-", ratio, r["sessions"],
            r["held"] or "-"))
    return fails.done()


if __name__ == "__main__":
    sys.exit(main())
