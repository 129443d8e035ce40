#!/usr/bin/env bash
# The unit, simulator and one e2e mesh scenario under AddressSanitizer (+ LeakSanitizer) and
# fatal UBSan, built in build-fuzz/ (the fuzz targets' build dir: its objects are already
# ASan + UBSan, see test/fuzz/run.sh, which configures it; this script runs under run.sh's lock,
# so no fuzz run rebuilds the binaries under a test).
#
#   test/sanitize/asan.sh unit-sim
#       build unit_tests and sim_tests in build-fuzz/, run all unit cases, then every simulator
#       case but one, the 201-node idle cluster (below why) (CTest asan_unit_sim, label cpu).
#   test/sanitize/asan.sh e2e [SCENARIO]
#       build meshd, meshctl and the CNI plugin in build-fuzz/, run test/e2e/mesh/SCENARIO
#       (default test_mesh.py) with --build-dir build-fuzz/; every sanitizer report of any of
#       those processes goes to a file (log_path) and fails the run (CTest e2e_mesh_asan).
#
# Any report is fatal: ASan halts on the first error, LeakSanitizer checks every clean exit,
# UBSan aborts (-fno-sanitize-recover=all). Exit: 0 clean, 1 a failure, 77 without clang++-14.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${FUZZ_LOCK_HELD:-}" ]; then
    exec "$root/test/fuzz/run.sh" --exec "$0" "$@"
fi
build=$FUZZ_BUILD_DIR
what=${1:-}
case $what in
# unit-sim also builds the e2e scenario's binaries: it runs in the suite's cpu part (two at a time),
# so that e2e_mesh_asan in the serial part finds them built.
unit-sim) targets=(unit_tests sim_tests meshd meshctl meshwire) ;;
e2e) targets=(meshd meshctl meshwire) ;;
*)
    echo "asan: usage: $0 unit-sim | e2e [SCENARIO]" >&2
    exit 2
    ;;
esac

# detect_stack_use_after_return and the init-order checks are off by default in clang 14. The
# first costs: sim lossy + anti-entropy 84 CPU-s with it, 60 without (17 in build/).
asan_options=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1
asan_options+=:check_initialization_order=1:strict_init_order=1
export ASAN_OPTIONS=$asan_options
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# -j2 (ASAN_JOBS): ninja's default is 3 on 2 cores, and the suite runs another cpu test beside.
t0=$SECONDS
# shellcheck source=timed_build.sh
. "$root/test/sanitize/timed_build.sh"
timed_build asan "$build/asan-build.log" $t0 \
    cmake --build "$build" -j "${ASAN_JOBS:-2}" --target "${targets[@]}"

fail=0
# run NAME COMMAND...: one test binary, its wall time; a sanitizer report fails it (exit != 0).
run() {
    local name=$1 t=$SECONDS rc=0
    shift
    "$@" || rc=$?
    echo "asan: $name: exit $rc, $((SECONDS - t)) s"
    [ $rc -eq 0 ] || fail=1
}

if [ "$what" = unit-sim ]; then
    run unit "$build/test/unit/unit_tests"
    # Every simulator case but the three heavy-scale ones, for the suite's budget (ASan + the
    # coverage instrumentation cost 5x the CPU: the simulator took 361 s under ASan in the suite
    # run with only the first left out): the idle cluster's growth check (21 against 102 nodes,
    # and 201 in the long `sim long` case: 82 s alone in build/, ~7 min here), the 20,000 fake
    # identities (20 s in build/) and mDNS's steady state at 10 and 50 nodes
    # with 20 % loss (22 s); and the second lossy hour (one-way streams: 38 s of the 158 the rest
    # took here), whose code paths the first lossy hour and wg_progress's unit cases run. Their
    # code paths still run here in the smaller cases (the other idle, attack, mDNS and lossy
    # cases); they themselves run in build/ (CTest sim, sim_mdns, sim_lossy) and by hand:
    # sim_tests -tc='sim: idle liveness*' (or '*fake identities*', 'sim mdns: steady*',
    # 'sim lossy: one-way*').
    # Without detect_stack_use_after_return here (the unit and e2e runs keep it): it costs the
    # simulator ~40 % more CPU (sim lossy + anti-entropy 84 -> 60 CPU-s), for the suite's budget.
    ASAN_OPTIONS=${asan_options/detect_stack_use_after_return=1/detect_stack_use_after_return=0} \
        run sim "$build/test/sim/sim_tests" \
        '-tce=sim: idle liveness per node is bounded*,sim long*,*fake identities HELLO the relays*,sim mdns: steady-state*,sim lossy: one-way*'
else
    scenario=${2:-test_mesh.py}
    # Reports to files, not to stderr: meshd's stderr is its log in the topology's temporary
    # directory (gone after the run), and the plugin's and meshctl's go to the test's pipes.
    reports=$build/asan-runs/$(date -u +%Y%m%dT%H%M%SZ)-$$
    mkdir -p "$reports"
    ls -1d "$build"/asan-runs/*/ 2>/dev/null | head -n -20 | xargs -r rm -rf
    export ASAN_OPTIONS=$asan_options:log_path=$reports/asan
    export UBSAN_OPTIONS=$UBSAN_OPTIONS:log_path=$reports/ubsan
    for b in meshd/meshd meshctl/meshctl cni-plugin/meshwire; do
        # grep without -q: with pipefail, nm killed by SIGPIPE would fail the check.
        if ! nm "$build/$b" 2>/dev/null | grep ' __asan_init' >/dev/null; then
            echo "asan: $build/$b is not built with AddressSanitizer"
            exit 1
        fi
    done
    rc=0
    python3 "$root/test/e2e/mesh/$scenario" --build-dir "$build" || rc=$?
    [ $rc -ne 77 ] || exit 77
    echo "asan: $scenario: exit $rc, $((SECONDS - t0)) s"
    [ $rc -eq 0 ] || fail=1
    found=$(find "$reports" -type f | sort)
    if [ -n "$found" ]; then
        for f in $found; do
            echo "---- sanitizer report $f ----"
            grep -v -E '^(  |=>)0x' "$f" | head -120
        done
        echo "asan: $(wc -w <<<"$found") sanitizer report(s) in $reports"
        fail=1
    else
        echo "asan: no sanitizer report from meshd, meshctl or the CNI plugin ($reports)"
    fi
fi
if [ $fail -ne 0 ]; then
    echo "asan: FAILED"
    exit 1
fi
echo "asan: clean"
