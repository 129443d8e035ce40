#!/usr/bin/env bash
# Configures and builds meshwire into ./build (Release with debug info). Idempotent.
#
# A unity build (CMake's CMAKE_UNITY_BUILD: each target's sources compiled 8 to a unit): the
# headers (Asio, Beast, doctest, nlohmann/json) are parsed and their templates compiled once per
# 8 sources instead of once per source, about half the CPU of a cold build (the suite's budget on
# a fresh clone). For editing, MESHWIRE_UNITY_BUILD=OFF builds per file (an edit recompiles one
# file instead of its batch of 8); both must compile, and style_tidy parses every source alone.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_UNITY_BUILD=${MESHWIRE_UNITY_BUILD:-ON}" >/dev/null
cmake --build build
