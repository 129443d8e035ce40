#!/usr/bin/env bash
# Installs every build, test and demo dependency of meshwire from Debian 12's packages.
# Idempotent: packages already present are left alone; safe to run on every CI start.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install/deps.sh: must run as root (it calls apt-get)" >&2
  exit 1
fi

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config g++-12 clang-14 clang-format-14 clang-tidy-14
  libclang-rt-14-dev
  clang-tidy-15  # test/style (ctest style_tidy): bugprone-unchecked-optional-access is new in 15
  # libraries
  libboost1.81-dev nlohmann-json3-dev libmnl-dev libnl-3-dev libnl-route-3-dev doctest-dev
  libsodium-dev libssl-dev libyaml-cpp-dev
  # runtime and test tools
  iproute2 iputils-ping nftables wireguard-go wireguard-tools iperf3 procps psmisc jq python3 time
  strace  # test/e2e/cni/test_cni_crash.py: syscall-exact SIGKILL points (fault injection)
  faketime  # test/e2e/mesh/test_clock_skew.py: per-process wrong/jumping wall clocks (libfaketime)
  containernetworking-plugins podman runc busybox-static
  # mDNS interop tests (test/e2e/mdns): clients nobody here wrote
  dnsutils python3-zeroconf
  # Kubernetes manifest tests (test/e2e/kubernetes): the rendered YAML, read by Debian's Python
  python3-yaml
  # kernel WireGuard tests under QEMU
  qemu-system-x86 kmod cpio
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install/deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# podman on these machines: runc (crun refuses hybrid cgroups), CNI backend, bounded ulimits.
mkdir -p /etc/containers
conf=/etc/containers/containers.conf
if ! grep -q '# meshwire-managed' "$conf" 2>/dev/null; then
  cat >"$conf" <<'CONF'
# meshwire-managed: written by install/deps.sh
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "cni"
cni_plugin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
CONF
fi
echo "install/deps.sh: all dependencies present" >&2
