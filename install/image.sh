#!/usr/bin/env bash
# Builds the meshwire container image with podman from this tree's build (./build, or
# --build-dir DIR), offline: FROM scratch plus our binaries, Debian's wg and wireguard-go, and the
# shared libraries they load (found by walking ldd), nothing else (no shell, no package manager).
# The tag is the one install/kubernetes/ references: localhost/meshwire:<project version>.
# Run install/build.sh first. Prints the image's tag, ID and size. Idempotent: unchanged inputs
# give the same image ID (file times are fixed), and an image the new build replaced under the
# tag is removed.
#
#   bash install/image.sh [--build-dir DIR] [--print-tag]
set -euo pipefail
cd "$(dirname "$0")/.."

build=build
print_tag=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --print-tag) print_tag=1; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install/image.sh: unknown argument $1" >&2; exit 64 ;;
  esac
done

version=$(sed -n 's/^project(meshwire VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)
[ -n "$version" ] || { echo "install/image.sh: no project version in CMakeLists.txt" >&2; exit 1; }
tag="localhost/meshwire:$version"
if [ "$print_tag" = 1 ]; then echo "$tag"; exit 0; fi

# image path -> source: ours from the build, the WireGuard tools from Debian (install/deps.sh).
declare -A bins=(
  [/usr/bin/meshd]="$build/meshd/meshd"
  [/usr/bin/meshctl]="$build/meshctl/meshctl"
  [/usr/bin/meshwire]="$build/cni-plugin/meshwire"
  [/usr/bin/meshwire-install]="$build/tools/meshwire-install"
  [/usr/bin/meshwire-health]="$build/tools/meshwire-health"
  [/usr/bin/wg]="$(command -v wg || echo /usr/bin/wg)"
  [/usr/bin/wireguard-go]="$(command -v wireguard-go || echo /usr/bin/wireguard-go)"
)
for dst in "${!bins[@]}"; do
  if [ ! -x "${bins[$dst]}" ]; then
    echo "install/image.sh: ${bins[$dst]} missing (run install/build.sh, then install/deps.sh for wg and wireguard-go)" >&2
    exit 1
  fi
done
command -v podman >/dev/null || { echo "install/image.sh: podman missing (install/deps.sh)" >&2; exit 1; }

ctx=$(mktemp -d /tmp/meshwire-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root"/{usr/bin,etc/meshwire,run,tmp,var/lib/meshwire,dev}
ln -s ../run "$root/var/run"  # wireguard-go's UAPI sockets go to /var/run/wireguard
chmod 1777 "$root/tmp"

# Copies a file (symlinks resolved) to the same path under the root, once.
add_file() {
  local src="$1" dst="$2"
  [ -e "$root$dst" ] && return 0
  mkdir -p "$root$(dirname "$dst")"
  cp -L "$src" "$root$dst"
}

for dst in "${!bins[@]}"; do
  add_file "${bins[$dst]}" "$dst"
  # ldd lists the whole closure (libraries of libraries too); the loader is the absolute path
  # without "=>". Each goes in at the path the binary asks for (symlinks resolved to the file).
  while read -r lib; do
    add_file "$lib" "$lib"
  done < <(ldd "${bins[$dst]}" | awk '/=> \// {print $3} /^[ \t]*\/[^ ]+ \(/ {print $1}')
done
# Strip debug info from our binaries (RelWithDebInfo keeps it in ./build): ~10x smaller.
for b in meshd meshctl meshwire meshwire-install meshwire-health; do strip --strip-debug "$root/usr/bin/$b"; done
# Fixed times: unchanged inputs give identical layers, so a rebuild is the same image.
find "$root" -exec touch -h -d @0 {} +

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$ctx/Containerfile" <<CF
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/bin
LABEL org.opencontainers.image.title=meshwire org.opencontainers.image.version=$version \
      org.opencontainers.image.revision=$rev
CMD ["/usr/bin/meshd", "--config", "/etc/meshwire/meshd.yaml"]
CF

old=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
podman build --quiet --layers=false --pull=never --network=none --timestamp 0 -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
new=$(podman image inspect --format '{{.Id}}' "$tag")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  # Only if nothing else names it any more (another tag, a container): never force.
  podman rmi "$old" >/dev/null 2>&1 || true
fi
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "install/image.sh: built $tag (${new:0:12}), $((size / 1024)) KiB ($((size / 1048576)) MiB)"
