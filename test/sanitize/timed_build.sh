# Sourced by test/fuzz/run.sh, test/sanitize/asan.sh and tsan_build.sh: one build step, timed.
#
#   timed_build WHO LOG T0 COMMAND...
# runs COMMAND (a cmake --build) with its output in LOG and its user + system time in LOG.cpu. A
# failed build prints its errors and the log, then exits the script with 1. Otherwise it prints
# "WHO: build <wall since T0> s, <CPU> s CPU (<steps> steps)", or "(up to date)": the CPU seconds
# beside the wall time, because on a busy machine the wall time says little.
timed_build() {
    local who=$1 log=$2 t0=$3 rc=0 cpu steps TIMEFORMAT='%U %S'
    shift 3
    { time "$@" >"$log" 2>&1; } 2>"$log.cpu" || rc=$?
    if [ $rc -ne 0 ]; then
        grep -E -A8 'error:|FAILED:' "$log" | head -80
        echo "$who: build FAILED, log: $log"
        exit 1
    fi
    cpu=$(awk '{ printf "%d", $1 + $2 }' "$log.cpu")
    if grep -q '^ninja: no work to do' "$log"; then
        echo "$who: build $((SECONDS - t0)) s (up to date)"
    else
        steps=$(grep -c '^\[[0-9]*/[0-9]*\] [A-Z]' "$log" || true)
        echo "$who: build $((SECONDS - t0)) s, $cpu s CPU ($steps steps)"
    fi
}
