#!/usr/bin/env bash
# Configures and builds the ThreadSanitizer tree build-tsan/ (clang++-14, -fsanitize=thread,
# -O1 -gline-tables-only, asserts on) with only the targets the TSan tests run: unit_tests,
# relay_e2e, meshd, meshctl and the CNI plugin (the mesh scenario's binaries). Reused between
# runs: ninja rebuilds only what changed. One build at a time per tree (flock). Prints the wall
# and CPU time.
#   test/sanitize/tsan_build.sh            (TSAN_BUILD_DIR overrides build-tsan/)
# Exit: 0 built, 1 failed, 77 (CTest skip) without clang++-14.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${TSAN_BUILD_DIR:-$root/build-tsan}
targets=(tsan_unit_tests relay_e2e meshd meshctl meshwire)
if ! command -v clang++-14 >/dev/null; then
    echo "tsan: clang++-14 missing (install/deps.sh)"
    exit 77
fi
mkdir -p "$build"
exec 9>"$build/.build.lock"
if ! flock -n 9; then
    echo "tsan: waiting for another build of $build"
    flock 9
fi
# -O1: TSan's recommended level (-O0 is ~2x slower to run, -O2 loses frames in the reports).
# -gline-tables-only: what the reports' stacks need (test/fuzz/run.sh says what full -g costs).
opt_flags="-O1 -gline-tables-only"
unity=${MESHWIRE_UNITY_BUILD:-ON}  # install/build.sh says why
config="clang++-14 | thread | $opt_flags | unity $unity"
t0=$SECONDS
if [ ! -f "$build/build.ninja" ] || [ "$(cat "$build/.tsan-config" 2>/dev/null)" != "$config" ]
then
    echo "tsan: configuring $build"
    if ! CXX=clang++-14 cmake -S "$root" -B "$build" -G Ninja -DMESHWIRE_SANITIZE=thread \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$opt_flags" \
        "-DCMAKE_UNITY_BUILD=$unity" \
        >"$build/tsan-configure.log" 2>&1; then
        tail -40 "$build/tsan-configure.log"
        echo "tsan: configure FAILED, log: $build/tsan-configure.log"
        exit 1
    fi
    echo "$config" >"$build/.tsan-config"
fi
# shellcheck source=timed_build.sh
. "$root/test/sanitize/timed_build.sh"
timed_build tsan "$build/tsan-build.log" $t0 \
    cmake --build "$build" -j"${TSAN_JOBS:-2}" --target "${targets[@]}"
