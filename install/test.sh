#!/usr/bin/env bash
# The README's second command (and CI's): install everything, build, run the whole test suite.
# Before ctest, the stale-state sweep removes what killed earlier runs left behind (namespaces,
# processes, temp dirs, wireguard sockets of test processes that are gone; live runs are never
# touched), so that one killed run cannot break this one. ctest runs the same sweep again as the
# fixture e2e_stale_sweep. A sweep that cannot remove something fails the run here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash install/deps.sh
bash install/build.sh
rc=0
python3 test/e2e/topology/topology.py --cleanup-stale || rc=$?
if [[ $rc -ne 0 && $rc -ne 77 ]]; then # 77: not root, nothing to sweep
    echo "install/test.sh: the stale-state sweep could not remove everything (see above)" >&2
    exit 1
fi
# Two parts run side by side: the tests labelled cpu (test/CMakeLists.txt: CPU and their own
# files only: builds of the sanitizer trees, clang-tidy, the simulator), two at a time under
# `nice -n 19`, and every other test, one at a time, at normal priority (namespaces,
# wireguard-go, podman, QEMU, timed benchmarks and failover bounds). The second part mostly waits
# on its testbeds, so the first uses what it leaves: together they take about as long as the
# longer of the two instead of their sum (issue 14 §7's budget). Priority keeps the timed tests'
# wakeups on time (a waking nice-0 process preempts nice-19 work). The cpu part's output goes to
# build/test-cpu-part.log and is printed when both are done. MESHWIRE_TEST_SEQUENTIAL=1 runs the
# parts one after the other (the cpu part first, at normal priority), as before: benchmark
# figures taken on an otherwise idle machine. Tests labelled long (the growth curve's
# bench_idle_20, the 1,000-node simulator run, style_tidy_full) are in neither:
# `ctest --test-dir build -L long`. Arguments (-R, -L, -V, ...) apply to both parts; the exit
# status fails if either failed. The wall time of each part is printed.
ctest_args=(--test-dir build --output-on-failure --timeout 1500)
cpu_part="tests labelled cpu, two at a time"
serial_part="all other tests, one at a time"
cpu_args=(-j2 -L '^cpu$' -LE '^long$' "$@")
serial_args=(-LE '^(cpu|long)$' "$@")
# run_part NAME ARG...: one ctest run in the foreground; prints its exit status and wall time.
run_part() {
    local name=$1 t=$SECONDS part_rc=0
    shift
    ctest "${ctest_args[@]}" "$@" || part_rc=$?
    echo "install/test.sh: $name: exit $part_rc, $((SECONDS - t)) s"
    return $part_rc
}
rc=0
start=$SECONDS
if [[ "${MESHWIRE_TEST_SEQUENTIAL:-0}" == 1 ]]; then
    run_part "$cpu_part" "${cpu_args[@]}" || rc=1
    run_part "$serial_part" "${serial_args[@]}" || rc=1
else
    cpu_log=build/test-cpu-part.log
    # setsid: its own process group (the trap below ends all of it); ctest beside ctest in one
    # tree is fine but for Testing/Temporary/LastTest.log, which both write (use this output).
    setsid nice -n 19 ctest "${ctest_args[@]}" "${cpu_args[@]}" >"$cpu_log" 2>&1 &
    cpu_pid=$!
    # Ended with us (CI's time limit, ^C): no orphaned ctest building on.
    trap 'kill -- -$cpu_pid 2>/dev/null; exit 130' INT TERM
    serial_rc=0
    run_part "$serial_part (beside the cpu part)" "${serial_args[@]}" || serial_rc=1
    cpu_rc=0
    wait $cpu_pid || cpu_rc=$?
    trap - INT TERM
    echo "install/test.sh: ---- the cpu part's output ($cpu_log) ----"
    cat "$cpu_log"
    # Its wall time is ctest's own "Total Test time (real)" (it may have ended before the other).
    echo "install/test.sh: $cpu_part (nice 19, beside the other part): exit $cpu_rc," \
        "$(sed -n 's/^Total Test time (real) = *//p' "$cpu_log")"
    [[ $serial_rc -eq 0 && $cpu_rc -eq 0 ]] || rc=1
fi
echo "install/test.sh: both parts: exit $rc, $((SECONDS - start)) s"
exit $rc
