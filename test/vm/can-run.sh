#!/usr/bin/env bash
# Can this machine run commands in the QEMU guest (test/vm/run-in-vm.sh)?
#
#   test/vm/can-run.sh [--no-fetch] [CACHE_DIR]
#
# Exit 0: QEMU (TCG, virtio-9p) starts and the guest kernel is cached (fetched now unless
# --no-fetch). Otherwise prints the reason on stderr ("SKIP: ...") and exits 77, CTest's
# SKIP_RETURN_CODE convention.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

fetch=1
if [ "${1:-}" = "--no-fetch" ]; then fetch=0; shift; fi
cache=$(vm_cache_dir "${1:-}")

skip() { echo "can-run.sh: SKIP: $*" >&2; exit 77; }

for tool in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio modprobe:kmod \
  depmod:kmod gzip:gzip timeout:coreutils flock:util-linux; do
  command -v "${tool%%:*}" >/dev/null ||
    skip "${tool%%:*} not found (Debian package ${tool#*:}; see install/deps.sh)"
done
if ! file -L "$(command -v busybox)" 2>/dev/null | grep -q 'statically linked' &&
  ! ldd "$(command -v busybox)" 2>&1 | grep -q 'not a dynamic executable'; then
  skip "$(command -v busybox) is not statically linked (install busybox-static)"
fi
qemu-system-x86_64 -accel help 2>/dev/null | grep -qx tcg ||
  skip "qemu-system-x86_64 has no TCG accelerator"
qemu-system-x86_64 -device help 2>/dev/null | grep -q '"virtio-9p-pci"' ||
  skip "qemu-system-x86_64 has no virtio-9p-pci device (9p sharing of the host root)"
if ! out=$(printf 'quit\n' | timeout 30 qemu-system-x86_64 -M none -accel tcg -display none \
  -nodefaults -monitor stdio 2>&1); then
  skip "qemu-system-x86_64 does not start: $(printf '%s' "$out" | tail -n 3)"
fi

if ! vm_kernel_env "$cache" 2>/dev/null; then
  [ "$fetch" -eq 1 ] || skip "no guest kernel in $cache (run test/vm/fetch-kernel.sh)"
  if ! out=$("$here/fetch-kernel.sh" "$cache" 2>&1); then
    skip "the guest kernel could not be fetched into $cache: $(printf '%s' "$out" | tail -n 3)"
  fi
  vm_kernel_env "$cache" 2>/dev/null || skip "no usable guest kernel in $cache after fetching"
fi
echo "can-run.sh: ok: QEMU $(qemu-system-x86_64 --version | awk 'NR == 1 { print $4 }') (TCG)," \
  "guest kernel $VM_KERNEL_VERSION in $cache" >&2
