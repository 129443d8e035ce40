#!/usr/bin/env bash
# meshwire demo (the README's first command runs it through install/demo.sh): meshd on six nodes of
# the network-namespace testbed — two public relays, a LAN behind a cone NAT, a LAN behind a
# symmetric NAT — pods created through the real CNI plugin, direct and relayed pod traffic, and a
# relay failover with the measured outage. demo/mesh_demo.py does the work (test/e2e/mesh harness);
# everything it creates is removed on exit, also on failure. About 20-30 s.
#   demo/demo.sh --cni   also runs the single-node CNI walkthrough (demo/cni_demo.sh) first
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-$PWD/build}
[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
for b in meshd/meshd meshctl/meshctl cni-plugin/meshwire; do
  [ -x "$BUILD/$b" ] || { echo "demo: $BUILD/$b not built; run install/build.sh" >&2; exit 1; }
done
if [ "${1:-}" = "--cni" ]; then
  PLUGIN=$BUILD/cni-plugin/meshwire bash demo/cni_demo.sh
fi
exec python3 demo/mesh_demo.py --build-dir "$BUILD"
