#!/usr/bin/env bash
# The README's first command: install everything, build, run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash install/deps.sh
bash install/build.sh
exec bash demo/demo.sh
