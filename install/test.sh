#!/usr/bin/env bash
# The README's second command (and CI's): install everything, build, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash install/deps.sh
bash install/build.sh
exec ctest --test-dir build --output-on-failure --timeout 1500 "$@"
