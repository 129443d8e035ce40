#!/usr/bin/env python3
"""bench_control_flood: a flood of unauthenticated control datagrams at a relay (issue 17) while a
relayed iperf3 stream runs through it. On the e2e testbed (6 meshd, 2 relays, 2 NATed LANs): the
relayed pair lan1a -> lan2a settles on a relay R; a no-flood baseline iperf3 run (TCP, --seconds),
then the same run while udp_flood (test/bench/mesh/udp_flood.cpp, sendmmsg) sends ~300 kpps of
"MW"-prefixed junk (a sealed type, random bytes: it passes classify() and fails the AEAD) from
the other relay's namespace to R's listenPort. Prints R's meshd VmRSS before, during (the highest
of samples every 0.25 s) and after the flood, the flood's achieved rate, R's control_inbox drop
counters (from its metrics), and the stream's throughput with and without the flood. Runtime
about 40 s.

Fails (exit 1) when the thing measured did not work: iperf3 failed or moved nothing in either run
(the relayed stream stopped under the flood), the pair was not relayed, any meshd died, the
flooder sent nothing, or R's RSS grew by more than the bound the bounded inbox implies. That bound
is a correctness property of the bounded queue, not a speed target: the inbox holds at most 1,024
datagrams of 1,400 bytes (plus its 4,096-source bucket table, ~0.4 MB: control_inbox::
memory_bound), nothing else on the path allocates per datagram, so RSS may grow by that plus
allocator and page slack (RSS_SLACK_KIB below) and no more; before the inbox a 313 kpps flood grew
RSS from 9.6 to ~60 MB. Throughput under the flood is printed, never judged (the flooder itself
takes a core of this 2-core machine). Skips (77) without root."""

import argparse
import json
import os
import sys
import threading
import time

from meshbench import (Failures, Mesh, check_meshd_alive, check_path, meshd_pid, need_root,
                       peer, ping_until_ok, start_mesh, status_kb)

INBOX_BOUND_KIB = (1024 * (1400 + 64) + 450 * 1024) // 1024  # control_inbox::memory_bound
RSS_SLACK_KIB = 6 * 1024  # allocator arenas, thread stacks touched, page granularity


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


def inbox_drops(m, node):
    """meshwire_control_inbox_* samples from the node's metrics endpoint: {name{labels}: value}."""
    port = m.configs[node.name].get("metrics", {}).get("listen")
    if not port:
        return {}
    r = node.run(["curl", "-s", "--max-time", "3", "http://%s/metrics" % port], check=False)
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("meshwire_control_inbox") or line.startswith(
                "meshwire_control_dropped_total"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--pps", type=int, default=300_000)
    a = ap.parse_args()
    need_root("bench_control_flood")
    flood_bin = os.environ.get("UDP_FLOOD") or os.path.join(a.build_dir, "test", "bench", "mesh",
                                                            "udp_flood")
    if not os.access(flood_bin, os.X_OK):
        print("bench_control_flood: no udp_flood binary at %s" % flood_bin)
        return 1
    fails = Failures("bench_control_flood")
    with Mesh(build_dir=a.build_dir,
              overrides={n: {"config": {"metrics": {"listen": "127.0.0.1:9464"}}}
                         for n in ("relay1", "relay2")}) as m:
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
        print("relayed pair lan1a -> lan2a via %s; flood from %s's namespace to %s:%d" % (
            relay_name, flooder.name, relay.addr4, m.configs[relay_name].get("listenPort", 51821)))

        check_path(m, fails, "lan1a", "lan2a", "relay", when="before the baseline")
        def stream(label, printed, failed_note=""):
            """One iperf3 run lan1a -> lan2a: its Mbit/s, or None (a failure noted in fails)."""
            try:
                moved, mbps = iperf(src, dst.addr4, a.seconds)
                print("%s: %.1f Mbit/s, %.1f MB" % (printed, mbps, moved / 1e6))
                if moved == 0:
                    fails.add("%s: iperf3 moved nothing%s" % (label, failed_note))
                return mbps
            except RuntimeError as e:
                fails.add("%s: %s%s" % (label, e, failed_note))
                return None

        base_mbps = stream("baseline", "baseline (no flood)")

        rss_before = status_kb(pid)["VmRSS"]
        drops_before = inbox_drops(m, relay)
        flood_out = {}

        def flood():
            port = m.configs[relay_name].get("listenPort", 51821)
            r = flooder.run([flood_bin, "--dst", "%s:%d" % (relay.addr4, port), "--pps",
                             str(a.pps), "--seconds", str(a.seconds + 2), "--sockets", "8"],
                            check=False, timeout=a.seconds + 30)
            flood_out["rc"], flood_out["out"] = r.returncode, r.stdout + r.stderr

        rss_peak = [rss_before]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    rss_peak[0] = max(rss_peak[0], status_kb(pid)["VmRSS"])
                except OSError:
                    return
                time.sleep(0.25)

        ft = threading.Thread(target=flood)
        st = threading.Thread(target=sample)
        ft.start()
        st.start()
        time.sleep(1)  # the flood is on before the stream starts
        flood_mbps = stream("under the flood", "under the flood",
                            " (the relayed stream stopped)")
        ft.join()
        stop.set()
        st.join()
        time.sleep(1)
        alive = check_meshd_alive(m, fails, "after the flood")
        rss_after = status_kb(pid)["VmRSS"] if alive else 0
        drops_after = inbox_drops(m, relay)
        check_path(m, fails, "lan1a", "lan2a", "relay", when="after the flood")

        out = flood_out.get("out", "")
        res = [l for l in out.splitlines() if l.startswith("RESULT")]
        print("udp_flood: %s" % (res[0] if res else out.strip()[-300:]))
        sent = 0
        if res:
            for kv in res[0].split()[1:]:
                k, _, v = kv.partition("=")
                if k == "sent":
                    sent = int(v)
        if flood_out.get("rc") != 0 or sent == 0:
            fails.add("the flooder sent nothing (exit %s)" % flood_out.get("rc"))
        for k in sorted(drops_after):
            print("  %s %+d" % (k, drops_after[k] - drops_before.get(k, 0)))
        growth = rss_peak[0] - rss_before
        print("%s meshd VmRSS: before %d KiB, during (max) %d KiB, after %d KiB; growth %d KiB "
              "(bound %d KiB = inbox %d + slack %d)" % (
                  relay_name, rss_before, rss_peak[0], rss_after, growth,
                  INBOX_BOUND_KIB + RSS_SLACK_KIB, INBOX_BOUND_KIB, RSS_SLACK_KIB))
        if growth > INBOX_BOUND_KIB + RSS_SLACK_KIB:
            fails.add("meshd RSS grew by %d KiB under the flood, more than the bounded inbox "
                      "allows (%d KiB)" % (growth, INBOX_BOUND_KIB + RSS_SLACK_KIB))
    print()
    print("==== bench_control_flood summary ====")
    print("relayed iperf3 TCP, %d s: no flood %s Mbit/s, under a %d pps flood %s Mbit/s" % (
        a.seconds, "%.1f" % base_mbps if base_mbps is not None else "-", a.pps,
        "%.1f" % flood_mbps if flood_mbps is not None else "-"))
    return fails.done()


if __name__ == "__main__":
    sys.exit(main())
