#!/usr/bin/env bash
# The threaded parts of meshwire under ThreadSanitizer (issue 14 §7), from build-tsan/
# (tsan_build.sh builds it first; TSAN_NO_BUILD=1 skips that, as CTest does after tsan_build).
#
#   test/sanitize/tsan.sh [PART...]     (default: unit relay mesh)
#     unit   the unit cases that start threads (tsan_unit_tests: control socket, metrics endpoint,
#            meshctl against the control server, control inbox, record cache writer, wireguard-go
#            supervision); CPU and loopback only
#     relay  relay_e2e: the relay forwarder and two relay proxies with real traffic on loopback
#     mesh   tsan_mesh.py: meshd (every thread) on a three-node mesh of the e2e testbed (root)
#
# TSAN_OPTIONS: halt_on_error=1 (the first report ends the process, exit 66), second_deadlock_stack
# and the suppressions of tsan.supp (third-party code only). A report fails the part; the exit
# status fails if any part failed; 77 (CTest skip) when nothing could run (no clang++-14, the mesh
# part without root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${TSAN_BUILD_DIR:-$root/build-tsan}
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(unit relay mesh)
for p in "${parts[@]}"; do
    case $p in
    unit | relay | mesh) ;;
    *)
        echo "tsan: unknown part $p (unit, relay, mesh)" >&2
        exit 2
        ;;
    esac
done
if [ "${TSAN_NO_BUILD:-0}" != 1 ]; then
    rc=0
    "$here/tsan_build.sh" || rc=$?
    [ $rc -eq 0 ] || exit $rc
fi
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:exitcode=66"
TSAN_OPTIONS+=":suppressions=$here/tsan.supp${TSAN_EXTRA_OPTIONS:+:$TSAN_EXTRA_OPTIONS}"

fail=0 ran=0
run_part() {
    local name=$1 t0=$SECONDS rc=0
    shift
    echo "== tsan: $name: $*"
    "$@" || rc=$?
    if [ $rc -eq 77 ]; then
        echo "tsan: $name: skipped ($((SECONDS - t0)) s)"
        return
    fi
    ran=1
    if [ $rc -ne 0 ]; then
        echo "tsan: $name: FAILED, exit $rc ($((SECONDS - t0)) s)"
        fail=1
    else
        echo "tsan: $name: clean ($((SECONDS - t0)) s)"
    fi
}
for p in "${parts[@]}"; do
    case $p in
    unit) run_part unit "$build/test/sanitize/tsan_unit_tests" ;;
    relay) run_part relay "$build/test/e2e/relay/relay_e2e" ;;
    mesh) run_part mesh python3 "$here/tsan_mesh.py" --build-dir "$build" ;;
    esac
done
if [ $fail -ne 0 ]; then
    echo "tsan: FAILED"
    exit 1
fi
[ $ran -eq 1 ] || exit 77
echo "tsan: all clean"
