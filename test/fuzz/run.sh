#!/usr/bin/env bash
# Builds every libFuzzer target with clang + ASan/UBSan in build-fuzz/ and runs each one for
# FUZZ_SECONDS (default 20) from its seed corpus. Exits non-zero on the first crash, leak or hang.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${FUZZ_SECONDS:-20}
if ! command -v clang++-14 >/dev/null; then echo "fuzz: clang++-14 missing (install/deps.sh)"; exit 77; fi
CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DMESHWIRE_FUZZ=ON -DMESHWIRE_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link >/dev/null
cmake --build build-fuzz --target $(cd test/fuzz && ls fuzz_*.cpp | sed 's/\.cpp$//' | tr '\n' ' ') >/dev/null
fail=0
for src in test/fuzz/fuzz_*.cpp; do
  name=$(basename "$src" .cpp)
  work=$(mktemp -d)
  [ -d "test/fuzz/corpus/$name" ] && cp -r "test/fuzz/corpus/$name/." "$work/"
  echo "fuzz: $name for ${secs}s"
  rc=0
  ./build-fuzz/test/fuzz/"$name" -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$work/" "$work" >"$work.log" 2>&1 || rc=$?
  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$work.log" | sed 's/^/  /'
  if [ $rc -ne 0 ]; then
    echo "fuzz: $name FAILED (exit $rc):"; grep -E 'ERROR|SUMMARY' "$work.log" | head -5
    ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null | head -3
    fail=1
  fi
  rm -rf "$work" "$work.log"
done
[ $fail -eq 0 ] && echo "fuzz: all targets clean"
exit $fail
