#!/usr/bin/env bash
# Obtains Debian's stock kernel (which has the WireGuard module) for the QEMU test harness.
#
#   test/vm/fetch-kernel.sh [CACHE_DIR]
#
# CACHE_DIR defaults to $MESHWIRE_VM_CACHE, else /var/cache/meshwire-vm as root, else
# ${XDG_CACHE_HOME:-~/.cache}/meshwire-vm. It is never inside the git tree.
#
# `apt-get download`s the image package that `apt-cache depends linux-image-amd64` names, unpacks it
# with `dpkg -x` into CACHE_DIR/kernels/<package> and runs `depmod -b` there. Nothing is installed;
# /boot is not touched. Idempotent: when the package is already unpacked this is a no-op (apt-cache
# is local; the network is used only by `apt-get update` when apt knows no kernel, and by the
# download itself). Safe to run concurrently (flock). On success it prints the kernel's key=value
# description (see CACHE_DIR/current.env) on stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

cache=$(vm_cache_dir "${1:-}")
mkdir -p "$cache/kernels"
exec 9>"$cache/.fetch.lock"
flock 9

image_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

pkg=$(image_package || true)
if [ -z "$pkg" ]; then
  # The current kernel may still be usable offline when apt's lists are gone.
  if [ -f "$cache/current.env" ] && vm_kernel_env "$cache" >/dev/null 2>&1; then
    cat "$cache/current.env"
    exit 0
  fi
  echo "fetch-kernel.sh: apt-cache knows no linux-image-amd64; running apt-get update" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "fetch-kernel.sh: apt-get update needs root; run as root or run 'apt-get update' first" >&2
    exit 1
  fi
  apt-get update -qq
  pkg=$(image_package || true)
  if [ -z "$pkg" ]; then
    echo "fetch-kernel.sh: apt-cache depends linux-image-amd64 names no linux-image-<version> package" >&2
    exit 1
  fi
fi

dest="$cache/kernels/$pkg"
if [ ! -f "$dest/.complete" ]; then
  echo "fetch-kernel.sh: fetching $pkg into $dest" >&2
  tmp=$(mktemp -d "$cache/kernels/.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # apt-get download as root drops to the _apt user, which must be able to write the folder.
  chmod 755 "$tmp"
  if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
  if ! (cd "$tmp" && apt-get download -q "$pkg" >&2); then
    echo "fetch-kernel.sh: 'apt-get download $pkg' failed (is a Debian mirror reachable?)" >&2
    exit 1
  fi
  deb=$(ls "$tmp"/*.deb)
  mkdir "$tmp/root"
  dpkg -x "$deb" "$tmp/root"
  rm -f "$deb"
  kver=$(ls "$tmp/root/lib/modules")
  if [ -z "$kver" ] || [ "$(printf '%s\n' "$kver" | wc -l)" -ne 1 ]; then
    echo "fetch-kernel.sh: expected exactly one lib/modules/<version> in $pkg, found: $kver" >&2
    exit 1
  fi
  if [ ! -f "$tmp/root/boot/vmlinuz-$kver" ]; then
    echo "fetch-kernel.sh: $pkg has no boot/vmlinuz-$kver" >&2
    exit 1
  fi
  depmod -b "$tmp/root" "$kver"
  if ! modprobe -d "$tmp/root" -S "$kver" --show-depends wireguard >/dev/null; then
    echo "fetch-kernel.sh: kernel $kver has no wireguard module" >&2
    exit 1
  fi
  {
    echo "VM_KERNEL_PACKAGE=$pkg"
    echo "VM_KERNEL_VERSION=$kver"
    echo "VM_KERNEL_ROOT=$dest"
    echo "VM_KERNEL_IMAGE=$dest/boot/vmlinuz-$kver"
  } >"$tmp/root/kernel.env"
  touch "$tmp/root/.complete"
  rm -rf "$dest"
  mv "$tmp/root" "$dest"
  rm -rf "$tmp"
  trap - EXIT
  echo "fetch-kernel.sh: unpacked $pkg ($kver), $(du -sh "$dest" | cut -f1)" >&2
fi

# current.env describes the kernel apt names now; kernels, initramfs images and
# decompressed kernels of older versions
# are removed.
if ! cmp -s "$dest/kernel.env" "$cache/current.env" 2>/dev/null; then
  cp "$dest/kernel.env" "$cache/current.env.tmp"
  mv "$cache/current.env.tmp" "$cache/current.env"
fi
for old in "$cache"/kernels/*; do
  [ "$old" = "$dest" ] || [ ! -d "$old" ] || rm -rf "$old"
done
kver=$(sed -n 's/^VM_KERNEL_VERSION=//p' "$cache/current.env")
for old in "$cache"/boot/initramfs-*.cpio.gz "$cache"/boot/vmlinux-*; do
  case "$old" in *"/initramfs-$kver-"* | *"/vmlinux-$kver" | *"/vmlinux-$kver.unusable") ;; *) rm -f "$old" ;; esac
done
cat "$cache/current.env"
