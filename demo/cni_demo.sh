#!/usr/bin/env bash
# meshwire single-node CNI walkthrough (run by `demo/demo.sh --cni` before the mesh demo): a node (its own network namespace) gets two pods wired by the real meshwire CNI
# plugin, invoked exactly as a container runtime invokes it. The pods reach each other and the node
# over IPv4 and IPv6, then are deleted, and nothing is left behind.
# Everything lives in namespaces named mwdemo-<pid>-*; they are removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGIN=${PLUGIN:-$PWD/build/cni-plugin/meshwire}
[ -x "$PLUGIN" ] || { echo "demo: $PLUGIN not built; run install/build.sh" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }

P=mwdemo-$$
NODE=$P-node
DATA=$(mktemp -d /tmp/$P-ipam.XXXXXX)
bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
cleanup() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

CONF=$(cat <<JSON
{"cniVersion":"1.1.0","name":"demo","type":"meshwire",
 "podCIDRs":["10.244.1.0/24","fd00:244:1::/64"],"dataDir":"$DATA"}
JSON
)
cni() {  # cni COMMAND CONTAINER_ID [extra env...]
  local cmd=$1 id=$2; shift 2
  echo "$CONF" | ip netns exec "$NODE" env CNI_COMMAND="$cmd" CNI_CONTAINERID="$id" \
    CNI_NETNS="/var/run/netns/$P-$id" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni "$@" "$PLUGIN" 2>/dev/null
}

bold "A node with an address of its own (10.0.0.10 on its uplink)"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip -n "$NODE" link add uplink0 type veth peer name uplink1
ip -n "$NODE" addr add 10.0.0.10/24 dev uplink0
ip -n "$NODE" addr add fd00:10::10/64 dev uplink0 nodad
ip -n "$NODE" link set uplink0 up
ip -n "$NODE" link set uplink1 up
run cat <<<"$CONF"

for pod in pod-a pod-b; do
  bold "ADD $pod (CNI_COMMAND=ADD, config on stdin)"
  ip netns add "$P-$pod"
  cni ADD "$pod" | python3 -m json.tool
done

bold "Inside pod-a: /32 and /128 addresses, default routes via the link-local gateways"
run ip -n "$P-pod-a" addr show eth0
run ip -n "$P-pod-a" route
run ip -n "$P-pod-a" -6 route show default
bold "On the node: one host route per pod address, through its host veth"
run ip -n "$NODE" route
run ip -n "$NODE" -6 route show proto static

B4=$(ip -n "$P-pod-b" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
B6=$(ip -n "$P-pod-b" -6 -o addr show eth0 scope global | awk '{print $4}' | cut -d/ -f1)
bold "pod-a -> pod-b over IPv4 and IPv6, pod-a -> the node"
run ip netns exec "$P-pod-a" ping -c 2 -W 1 "$B4"
run ip netns exec "$P-pod-a" ping -c 2 -W 1 "$B6"
run ip netns exec "$P-pod-a" ping -c 2 -W 1 10.0.0.10
run ip netns exec "$P-pod-a" ping -c 2 -W 1 fd00:10::10

bold "IPAM state (host-local layout) in $DATA/demo"
for f in "$DATA"/demo/*; do printf '%-28s %s\n' "$(basename "$f")" "$(tr '\r\n' ' ' <"$f")"; done

bold "DEL both pods (DEL is idempotent: the second DEL of pod-a succeeds too)"
cni DEL pod-a && echo "DEL pod-a: ok"
cni DEL pod-a && echo "DEL pod-a again: ok"
ip netns del "$P-pod-b"
cni DEL pod-b && echo "DEL pod-b after its netns vanished: ok"

bold "Nothing left behind"
left_links=$(ip -n "$NODE" -o link show | grep -c ' mw' || true)
left_ips=$(ls "$DATA/demo" | grep -vc -e lock -e last_reserved || true)
echo "host veths left: $left_links, addresses still allocated: $left_ips"
[ "$left_links" -eq 0 ] && [ "$left_ips" -eq 0 ]
bold "Demo finished"
