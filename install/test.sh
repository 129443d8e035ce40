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
# First the tests labelled cpu (test/CMakeLists.txt: CPU and their own files only), two at a
# time; then every other test, one at a time (namespaces, wireguard-go, podman, QEMU, timed
# benchmarks). Tests labelled long (the growth curve's bench_idle_20)
# are in neither: `ctest --test-dir build -L long`. Arguments (-R, -L, -V, ...) apply to both
# runs; the exit status fails if either failed. The wall time of each part is printed.
run_part() {
    local what=$1 start rc=0
    shift
    start=$SECONDS
    ctest --test-dir build --output-on-failure --timeout 1500 "$@" || rc=$?
    echo "install/test.sh: $what: exit $rc, $((SECONDS - start)) s"
    return $rc
}
rc=0
run_part "tests labelled cpu, two at a time" -j2 -L '^cpu$' -LE '^long$' "$@" || rc=1
run_part "all other tests, one at a time" -LE '^(cpu|long)$' "$@" || rc=1
exit $rc
