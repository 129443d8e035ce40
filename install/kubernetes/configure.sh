#!/usr/bin/env bash
# Writes the overlay that installs meshwire on this cluster (default install/kubernetes/local/,
# which git ignores), for `kubectl apply -k install/kubernetes/local`:
#   base/psk                    a new cluster PSK (32 random bytes, base64), only if none exists
#   local/<node>.yaml           the shared meshd.yaml plus that Node's podCIDRs, one per Node
#   local/kustomization.yaml    the base plus those files, merged into the meshwire-config ConfigMap
# Today's meshd needs its pod CIDRs in its config and a DaemonSet cannot give each pod its own
# ConfigMap value, so every node gets its own file (the DaemonSet reads
# /etc/meshwire/config/$(NODE_NAME).yaml). Re-run it after adding a node or editing meshd.yaml,
# then apply again: the ConfigMap is updated in place and relayNodes edits apply live.
#
#   bash install/kubernetes/configure.sh [--config FILE] [--nodes FILE|-] [--out DIR]
#     --config FILE  the shared config (default install/kubernetes/base/meshd.yaml; e.g.
#                    examples/relays/meshd.yaml)
#     --nodes FILE   lines "NODE CIDR [CIDR]" instead of asking the cluster (kubectl get nodes:
#                    each Node's spec.podCIDRs, from kube-controller-manager --allocate-node-cidrs)
#     --out DIR      where to write the overlay (default install/kubernetes/local)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
config="$here/base/meshd.yaml"
nodes=""
out="$here/local"
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "configure.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
[ -r "$config" ] || { echo "configure.sh: cannot read $config" >&2; exit 1; }

if [ ! -e "$here/base/psk" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 >"$here/base/psk")
  echo "configure.sh: wrote a new cluster PSK to $here/base/psk (keep it: it is the cluster's key)"
fi

if [ -z "$nodes" ]; then
  list=$(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDRs[*]}{"\n"}{end}')
elif [ "$nodes" = - ]; then
  list=$(cat)
else
  list=$(cat "$nodes")
fi

mkdir -p "$out"
files=()
while read -r name cidrs; do
  [ -n "$name" ] || continue
  case "$name" in
    *[!a-z0-9.-]*) echo "configure.sh: $name is not a Kubernetes node name" >&2; exit 1 ;;
  esac
  if [ -z "$cidrs" ]; then
    echo "configure.sh: node $name has no spec.podCIDRs (is kube-controller-manager's --allocate-node-cidrs on?); give the nodes with --nodes FILE" >&2
    exit 1
  fi
  {
    echo "# written by install/kubernetes/configure.sh: $(basename "$config") + node $name's podCIDRs"
    cat "$config"
    echo
    echo "podCIDRs: [$(echo "$cidrs" | sed 's/ \+/, /g')]"
  } >"$out/$name.yaml.tmp"
  mv "$out/$name.yaml.tmp" "$out/$name.yaml"
  files+=("$name.yaml")
done <<<"$list"
[ ${#files[@]} -gt 0 ] || { echo "configure.sh: no nodes" >&2; exit 1; }

base=$(realpath --relative-to="$out" "$here/base")
{
  echo "# written by install/kubernetes/configure.sh: the base plus one meshd config per node"
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - $base"
  echo "configMapGenerator:"
  echo "  - name: meshwire-config"
  echo "    namespace: meshwire"
  echo "    behavior: merge"
  echo "    options:"
  echo "      disableNameSuffixHash: true"
  echo "    files:"
  for f in "${files[@]}"; do echo "      - $f"; done
} >"$out/kustomization.yaml"
echo "configure.sh: wrote $out (${#files[@]} nodes); install with: kubectl apply -k $out"
