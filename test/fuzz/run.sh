#!/usr/bin/env bash
# libFuzzer targets (test/fuzz/fuzz_*.cpp) built with clang-14 + ASan + UBSan (UBSan fatal) in
# build-fuzz/, reused between runs (ninja rebuilds only what changed). See test/fuzz/README.md.
#
#   test/fuzz/run.sh [TARGET...]
#       replay every committed input (test/fuzz/corpus/<target>/), then fuzz each target for
#       FUZZ_SECONDS (default 10). This is the suite's fuzz_smoke.
#   test/fuzz/run.sh --grow SECONDS [TARGET...]
#       the same with SECONDS per target, then -merge=1 what adds coverage into the committed
#       corpus.
#   test/fuzz/run.sh --exec COMMAND [ARG...]
#       configure build-fuzz/ as here, then exec COMMAND holding this run's lock, with
#       FUZZ_BUILD_DIR set (test/sanitize/asan.sh builds and runs the tests there this way).
#
# Kept under the build dir: build-fuzz/artifacts/<target>/ (crash-/leak-/timeout-/oom- inputs),
# build-fuzz/fuzz-runs/<run>/<target>.log (full logs) and .../new/<target>/ (inputs the run found;
# the 20 newest runs are kept). A failure prints the sanitizer report, the artifact and the command
# that reproduces it. Exit: 0 clean, 1 a failure, 77 (CTest skip) without clang++-14.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
corpus_root=$root/test/fuzz/corpus
mode=smoke
secs=${FUZZ_SECONDS:-10}
case ${1:-} in
--grow)
    mode=grow
    secs=${2:-}
    shift 2 || true
    ;;
--exec)
    mode=exec
    shift
    ;;
-h | --help)
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
    exit 0
    ;;
-*)
    echo "fuzz: unknown option $1 (see --help)" >&2
    exit 2
    ;;
esac
if ! [[ $secs =~ ^[0-9]+$ ]]; then
    echo "fuzz: seconds must be a whole number, got '$secs'" >&2
    exit 2
fi
all_targets=$(cd "$root/test/fuzz" && ls fuzz_*.cpp | sed 's/\.cpp$//')
targets=("$@")
[ ${#targets[@]} -gt 0 ] || [ $mode = exec ] || read -r -d '' -a targets <<<"$all_targets" || true
[ $mode != exec ] || [ ${#targets[@]} -gt 0 ] || { echo "fuzz: --exec needs a command" >&2; exit 2; }
[ $mode = exec ] || for t in "${targets[@]}"; do
    if ! grep -qx "$t" <<<"$all_targets"; then
        echo "fuzz: no target $t (have: ${all_targets//$'\n'/ })" >&2
        exit 2
    fi
done
if ! command -v clang++-14 >/dev/null; then
    echo "fuzz: clang++-14 missing (install/deps.sh)"
    exit 77
fi

mkdir -p "$build"
# One run at a time per build dir: a second one would rebuild the binaries the first is running.
exec 9>"$build/.run.lock"
if ! flock -n 9; then
    echo "fuzz: waiting for another run.sh using $build"
    flock 9
fi

# UBSan fatal at compile time (-fno-sanitize-recover=all: a runtime error aborts the input and
# libFuzzer keeps it as a crash artifact); the targets also default UBSan to halt_on_error and
# stack traces (sanitizer_defaults.cpp), and so does the environment here.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
cxx_flags="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all"
# RelWithDebInfo without -DNDEBUG: an assert (result<T>::value() on an error) is a finding too.
# -gline-tables-only: file:line for every frame is all a sanitizer report or a crash's stack needs;
# full -g took ~15 % more compile time (a meshd_core unity TU: 15.1 against 12.7 CPU s, clang 14).
# For variables in a debugger, configure the tree by hand with -g.
opt_flags="-O2 -gline-tables-only"
# Unity build: install/build.sh says why; MESHWIRE_UNITY_BUILD=OFF for per-file builds.
unity=${MESHWIRE_UNITY_BUILD:-ON}
config="clang++-14 | RelWithDebInfo $opt_flags | $cxx_flags | unity $unity"
t0=$SECONDS
# Configure only when the build dir is new or the flags changed; otherwise ninja alone decides
# what to rebuild (it re-runs CMake itself when a CMakeLists.txt changed).
if [ ! -f "$build/build.ninja" ] || [ "$(cat "$build/.fuzz-config" 2>/dev/null)" != "$config" ]
then
    echo "fuzz: configuring $build"
    if ! CXX=clang++-14 cmake -S "$root" -B "$build" -G Ninja -DMESHWIRE_FUZZ=ON \
        -DMESHWIRE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_UNITY_BUILD=$unity" \
        "-DCMAKE_CXX_FLAGS=$cxx_flags" "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$opt_flags" \
        >"$build/fuzz-configure.log" 2>&1; then
        tail -40 "$build/fuzz-configure.log"
        echo "fuzz: configure FAILED, log: $build/fuzz-configure.log"
        exit 1
    fi
    echo "$config" >"$build/.fuzz-config"
fi
if [ $mode = exec ]; then
    # fd 9 (the lock) stays open in COMMAND: no fuzz run rebuilds build-fuzz/ under it.
    export FUZZ_BUILD_DIR=$build FUZZ_LOCK_HELD=1
    exec "${targets[@]}"
fi
# shellcheck source=../sanitize/timed_build.sh
. "$root/test/sanitize/timed_build.sh"
timed_build fuzz "$build/fuzz-build.log" $t0 cmake --build "$build" --target "${targets[@]}"

run=$(date -u +%Y%m%dT%H%M%SZ)-$$
run_dir=$build/fuzz-runs/$run
mkdir -p "$run_dir"
# Keep the 20 newest runs; older run dirs go (artifacts are never removed here).
ls -1d "$build"/fuzz-runs/*/ 2>/dev/null | head -n -20 | xargs -r rm -rf

# -error_exitcode=1: libFuzzer's default (77) is CTest's skip code here.
common_flags=(-timeout=5 -rss_limit_mb=2048 -error_exitcode=1 -print_final_stats=1)

# Where a sanitizer's or libFuzzer's report starts in a log.
report_start='^==[0-9]+== ?(ERROR|WARNING)|runtime error:|ERROR: libFuzzer'
report_start+='|ALARM: working on the last|out-of-memory|deadly signal'

# report_failure TARGET PHASE EXIT LOG: the sanitizer report from the log, the artifact(s) written
# and the exact command that reproduces each.
report_failure() {
    local name=$1 phase=$2 rc=$3 log=$4 bin=$build/test/fuzz/$1 first artifacts a h seed
    echo "fuzz: $name FAILED during $phase (exit $rc)"
    first=$(grep -n -m1 -E "$report_start" "$log" | cut -d: -f1 || true)
    if [ -n "$first" ]; then
        echo "---- sanitizer report ($log from line $first) ----"
        # Without the unit's hex dump (the artifact has it) and ASan's shadow-byte map.
        tail -n +"$first" "$log" | grep -v -E '^(0x[0-9a-f]{2},)+$' |
            awk '/^Shadow byte/ { if (!skip) print "  (shadow bytes: see the full log)"
                                  skip = 1; next }
                 skip && /^(  |=>)/ { next }
                 { skip = 0; print }' | head -150
    else
        echo "---- last 60 lines of $log ----"
        tail -60 "$log"
    fi
    echo "----"
    artifacts=$(grep -o 'Test unit written to .*' "$log" | sed 's/^Test unit written to //' || true)
    if [ -z "$artifacts" ]; then
        echo "fuzz: no artifact written (the target failed outside an input); full log: $log"
        return
    fi
    for a in $artifacts; do
        echo "fuzz: artifact $a"
        h=$(sha1sum "$a" | cut -d' ' -f1)
        for seed in "$corpus_root/$name"/*; do
            [ -f "$seed" ] && [ "$(sha1sum "$seed" | cut -d' ' -f1)" = "$h" ] &&
                echo "fuzz:   (same bytes as the committed input ${seed#"$root"/})"
        done
        echo "fuzz: reproduce: $bin -timeout=5 -rss_limit_mb=2048 $a"
    done
    echo "fuzz: full log: $log"
}

corpus_size() {
    find "$1" -type f -printf '%s\n' |
        awk '{ n++; b += $1 } END { printf "%d files, %d bytes\n", n, b }'
}

# The smoke run's time per target: FUZZ_SECONDS times its share (percent, default 100), so that
# a new target does not grow the suite's budget. fuzz_meshd_kube (new) and fuzz_cni_conf (the
# oldest parser, 1,564 committed inputs) split one target's time. --grow gives every target all
# of SECONDS.
declare -A share=([fuzz_meshd_kube]=50 [fuzz_cni_conf]=50)

fail=0
for name in "${targets[@]}"; do
    t_secs=$secs
    [ "$mode" = smoke ] && t_secs=$((secs * ${share[$name]:-100} / 100))
    bin=$build/test/fuzz/$name
    corpus=$corpus_root/$name
    art=$build/artifacts/$name
    log=$run_dir/$name.log
    mkdir -p "$art" "$corpus"
    flags=("${common_flags[@]}" -artifact_prefix="$art/")
    [ -f "$root/test/fuzz/dict/$name.dict" ] && flags+=(-dict="$root/test/fuzz/dict/$name.dict")
    n_seeds=$(find "$corpus" -type f | wc -l)

    # 1. Every committed input, once (a regression on a known input fails here, named).
    rc=0
    echo "== replay $corpus ($n_seeds inputs)" >"$log"
    "$bin" "${flags[@]}" -runs=0 "$corpus" >>"$log" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        report_failure "$name" "the replay of ${corpus#"$root"/}" $rc "$log"
        fail=1
        continue
    fi

    # 2. Fuzz: new inputs go to the run's new/<target>/ (kept), the committed corpus is read-only.
    if [ "$mode" = smoke ]; then
        out=$run_dir/new/$name
    else
        out=$run_dir/grow/$name
    fi
    mkdir -p "$out"
    if [ "$t_secs" -gt 0 ]; then
        echo "== fuzz ${t_secs}s, new inputs to $out" >>"$log"
        "$bin" "${flags[@]}" -max_total_time="$t_secs" "$out" "$corpus" >>"$log" 2>&1 || rc=$?
    fi
    execs=$(grep -o 'number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    cov=$(grep -o 'DONE *cov: [0-9]* ft: [0-9]*' "$log" | tail -1 | sed 's/DONE *//' || true)
    found=$(find "$out" -type f | wc -l)
    echo "fuzz: $name: replayed $n_seeds committed inputs; fuzzed up to $t_secs s:" \
        "${execs:-0} execs, $found new inputs${cov:+, $cov}"
    if [ $rc -ne 0 ]; then
        report_failure "$name" "fuzzing" $rc "$log"
        fail=1
        continue
    fi

    # 3. --grow: keep the hand-named seeds; the generated (sha1-named) inputs become the minimal
    # set that -merge=1 picks from the old ones and this run's, beyond what the named seeds cover.
    if [ "$mode" = grow ]; then
        merged=$run_dir/merged/$name
        mkdir -p "$merged"
        generated=(-maxdepth 1 -regextype posix-extended -type f -regex '.*/[0-9a-f]{40}')
        find "$corpus" -maxdepth 1 -regextype posix-extended -type f ! -regex '.*/[0-9a-f]{40}' \
            -exec cp {} "$merged/" \;
        if ! "$bin" -merge=1 -timeout=5 -rss_limit_mb=2048 "$merged" "$corpus" "$out" \
            >>"$log" 2>&1; then
            echo "fuzz: $name: merge FAILED, corpus left as it was; log: $log"
            fail=1
            continue
        fi
        before=$(corpus_size "$corpus")
        find "$corpus" "${generated[@]}" -delete
        find "$merged" "${generated[@]}" -exec cp {} "$corpus/" \;
        echo "fuzz: $name: committed corpus $before -> $(corpus_size "$corpus")"
    fi
done
echo "fuzz: logs and the inputs this run found: $run_dir"
if [ "$mode" = grow ]; then
    echo "fuzz: all committed corpora: $(corpus_size "$corpus_root")"
fi
if [ $fail -ne 0 ]; then
    echo "fuzz: FAILED (artifacts in $build/artifacts/)"
    exit 1
fi
echo "fuzz: all targets clean"
