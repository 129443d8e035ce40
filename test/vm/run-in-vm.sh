#!/usr/bin/env bash
# Runs a host command inside a QEMU guest that boots Debian's stock kernel (which has WireGuard).
#
#   test/vm/run-in-vm.sh [options] -- <command> [args...]
#
# Options:
#   --timeout S            kill the guest after S seconds (default 300); exit 124
#   --boot-timeout S       a guest that has not started the command S seconds after QEMU did
#                          (default 150; it takes 7-25 s) hangs in boot: it is killed and booted
#                          again, at most twice, within --timeout
#   --mem M                guest memory in MiB (default 512)
#   --rw DIR               share host directory DIR writable into the guest, at the same path
#                          (repeatable; DIR must exist)
#   --env NAME[=VALUE]     set NAME in the command's environment (without =VALUE: the host's
#                          current value); repeatable. Nothing else of the caller's env is passed.
#   --cache DIR            kernel/initramfs cache (default: see fetch-kernel.sh)
#   --keep                 keep the per-run work directory (run script, rc file) and print its path
#   --skip-if-unavailable  run can-run.sh first; exit 77 (CTest skip) if QEMU/kernel are unusable
#
# The guest's root is a busybox initramfs that loads the virtio, 9p, overlay, wireguard, veth and
# tun modules, mounts the host's / read-only via 9p under a tmpfs overlay, mounts a fresh tmpfs on
# /run (so /var/run/netns and /var/run/wireguard are empty and writable) and runs the command as
# root, chrooted into that overlay, in the caller's working directory: a host-built binary runs with
# the host's own libraries, every host path reads as on the host, and writes stay in guest memory
# except in the work directory ($MESHWIRE_VM_WORK) and --rw directories, which are shared writable.
# stdout and stderr of the command both go to the guest console, i.e. this script's stdout.
# The last line on stdout is `VM-RESULT: PASS` or `VM-RESULT: FAIL rc=N` (printed by the guest; by
# this script on timeout or when the guest died without a result).
#
# Exit status: the command's exit status; 124 on timeout; 125 if the guest produced no result
# (boot/init failure, kernel panic); 2 on usage errors; 77 with --skip-if-unavailable.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
# shellcheck source=common.sh
. "$here/common.sh"

usage() {
  sed -n '2,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
die() { echo "run-in-vm.sh: $*" >&2; exit 125; }

timeout_s=300
boot_timeout=150
mem=512
cache_arg=""
keep=0
skip_if_unavailable=0
rw_dirs=()
env_lines=()

# POSIX single-quoting: safe for both the guest's busybox sh and the host's dash/bash.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) [ $# -ge 2 ] || usage; timeout_s=$2; shift 2 ;;
    --boot-timeout) [ $# -ge 2 ] || usage; boot_timeout=$2; shift 2 ;;
    --mem) [ $# -ge 2 ] || usage; mem=$2; shift 2 ;;
    --rw)
      [ $# -ge 2 ] || usage
      [ -d "$2" ] || { echo "run-in-vm.sh: --rw $2: not a directory" >&2; exit 2; }
      rw_dirs+=("$(cd "$2" && pwd -P)"); shift 2 ;;
    --env)
      [ $# -ge 2 ] || usage
      name=${2%%=*}
      case "$name" in '' | [0-9]* | *[!A-Za-z0-9_]*) echo "run-in-vm.sh: --env $2: bad name" >&2; exit 2 ;; esac
      if [ "$name" = "$2" ]; then value=${!name-}; else value=${2#*=}; fi
      env_lines+=("export $name=$(q "$value")"); shift 2 ;;
    --cache) [ $# -ge 2 ] || usage; cache_arg=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --skip-if-unavailable) skip_if_unavailable=1; shift ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "run-in-vm.sh: unknown option $1 (the command goes after --)" >&2; usage ;;
  esac
done
[ $# -ge 1 ] || usage
case "$timeout_s" in '' | *[!0-9]*) echo "run-in-vm.sh: --timeout wants seconds" >&2; exit 2 ;; esac
case "$boot_timeout" in '' | *[!0-9]*) echo "run-in-vm.sh: --boot-timeout wants seconds" >&2; exit 2 ;; esac
case "$mem" in '' | *[!0-9]*) echo "run-in-vm.sh: --mem wants MiB" >&2; exit 2 ;; esac

cache=$(vm_cache_dir "$cache_arg")
if [ "$skip_if_unavailable" -eq 1 ]; then
  if ! reason=$("$here/can-run.sh" "$cache" 2>&1 >/dev/null); then
    echo "run-in-vm.sh: ${reason:-can-run.sh: SKIP: QEMU guest unavailable}"
    exit 77
  fi
fi
if ! vm_kernel_env "$cache" 2>/dev/null; then
  "$here/fetch-kernel.sh" "$cache" >/dev/null || die "could not fetch the guest kernel"
  vm_kernel_env "$cache" || die "no usable guest kernel"
fi
kver=$VM_KERNEL_VERSION
kroot=$VM_KERNEL_ROOT

# ---------------------------------------------------------------- cleanup (also on failure)
work=""
build_tmp=""
qpid=""
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill -TERM "$qpid" 2>/dev/null || true # timeout(1) forwards it to QEMU
    wait "$qpid" 2>/dev/null || true
  fi
  [ -z "$build_tmp" ] || rm -rf "$build_tmp"
  if [ -n "$work" ]; then
    if [ "$keep" -eq 1 ]; then
      echo "run-in-vm.sh: work directory kept: $work" >&2
    else
      rm -rf "$work"
    fi
  fi
}
trap cleanup EXIT
for sig in INT:130 TERM:143 HUP:129; do
  # shellcheck disable=SC2064
  trap "echo 'run-in-vm.sh: interrupted (SIG${sig%%:*})' >&2; exit ${sig#*:}" "${sig%%:*}"
done

# ---------------------------------------------------------------- initramfs (cached)
# Modules loaded at boot, in dependency order (modprobe --show-depends). Everything else loads on
# demand: the guest's /sbin/modprobe (busybox) reads the unpacked kernel's modules via /host.
boot_modules="virtio_pci 9pnet_virtio 9p overlay wireguard veth tun"

key=$(cat "$self" <(printf '%s\n' "$kver" "$boot_modules") | sha256sum | cut -c1-16)
initrd="$cache/boot/initramfs-$kver-$key.cpio.gz"
vmlinux="$cache/boot/vmlinux-$kver"

build_initramfs() {
  local tmp mod path name
  tmp=$(mktemp -d "$cache/boot/.build.XXXXXX")
  build_tmp=$tmp
  mkdir -p "$tmp"/root/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,host,hostro,overlay,work,lib,modules,run,tmp}
  local busybox
  busybox=$(command -v busybox) || die "busybox not found (install busybox-static)"
  file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
    ldd "$busybox" 2>&1 | grep -q 'not a dynamic executable' ||
    die "$busybox is not static (install busybox-static)"
  cp "$busybox" "$tmp/root/bin/busybox"
  : >"$tmp/root/modules/order"
  for mod in $boot_modules; do
    modprobe -d "$kroot" -S "$kver" --show-depends "$mod" || die "modprobe --show-depends $mod failed"
  done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' | while read -r path; do
    name=$(basename "$path")
    case "$name" in
      *.ko) cp "$path" "$tmp/root/modules/$name" ;;
      *.ko.xz) name=${name%.xz}; xz -dc "$path" >"$tmp/root/modules/$name" ;;
      *.ko.zst) name=${name%.zst}; zstd -qdc "$path" >"$tmp/root/modules/$name" ;;
      *.ko.gz) name=${name%.gz}; gzip -dc "$path" >"$tmp/root/modules/$name" ;;
      *) die "unexpected module file $path" ;;
    esac
    echo "$name" >>"$tmp/root/modules/order"
  done
  [ -s "$tmp/root/modules/order" ] || die "no modules resolved for the initramfs"
  cat >"$tmp/root/init" <<'INIT'
#!/bin/busybox sh
# meshwire test/vm guest init (generated by run-in-vm.sh)
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stty -F /dev/console -onlcr 2>/dev/null
result_file=""
finish() { # finish RC [reason]
  [ -n "$2" ] && echo "meshwire-vm: $2"
  [ -n "$result_file" ] && echo "$1" >"$result_file"
  sync
  echo 0 >/proc/sys/kernel/printk # keeps "reboot: Power down" off the console: the result is last
  if [ "$1" -eq 0 ]; then echo "VM-RESULT: PASS"; else echo "VM-RESULT: FAIL rc=$1"; fi
  poweroff -f
  sleep 10
}
while read -r m; do
  insmod "/modules/$m" || finish 125 "insmod $m failed"
done </modules/order
opts=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /hostro /overlay /host
mount -t 9p -o "$opts,ro,cache=loose" hostroot /hostro || finish 125 "cannot mount the host root (9p tag hostroot)"
mount -t 9p -o "$opts" mwwork /work || finish 125 "cannot mount the work share (9p tag mwwork)"
[ -f /work/vm.conf ] || finish 125 "no vm.conf in the work share"
. /work/vm.conf
result_file=/work/rc
# The chroot's root: the host's root (read-only 9p) under a tmpfs overlay, so every host path is
# visible (also under /tmp) and writable, with writes staying in guest memory.
mount -t tmpfs -o mode=755 tmpfs /overlay || finish 125 "tmpfs /overlay"
mkdir -p /overlay/upper /overlay/work
mount -t overlay -o lowerdir=/hostro,upperdir=/overlay/upper,workdir=/overlay/work overlay /host ||
  finish 125 "cannot mount the overlay root"
# Modules not in the initramfs load on demand from the unpacked kernel (busybox modprobe).
ln -s "/hostro$VM_KROOT/lib/modules" /lib/modules
ip link set lo up
# A fresh /run (the host's runtime state would mislead: netns, sockets, pid files); /var/run and
# /var/lock are symlinks into it.
mount -t tmpfs -o mode=755 tmpfs /host/run || finish 125 "tmpfs /host/run"
mkdir -p /host/run/netns /host/run/wireguard /host/run/lock
mount --bind /proc /host/proc || finish 125 "bind /proc"
mount --bind /sys /host/sys || finish 125 "bind /sys"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount --rbind /dev /host/dev || finish 125 "bind /dev"
# The work share and the --rw shares appear at their host paths.
mount --bind /work "/host$VM_WORK" || finish 125 "bind work share at $VM_WORK"
i=0
while [ "$i" -lt "$VM_RW_COUNT" ]; do
  eval "dir=\$VM_RW_$i"
  mount -t 9p -o "$opts" "mwrw$i" "/host$dir" || finish 125 "cannot mount --rw $dir"
  i=$((i + 1))
done
: >/work/started # tells the host the boot is over (see --boot-timeout)
chroot /host /bin/sh "$VM_WORK/run.sh" </dev/null
finish $?
INIT
  chmod 755 "$tmp/root/init"
  (cd "$tmp/root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) |
    gzip -1 >"$tmp/initramfs.cpio.gz"
  mv "$tmp/initramfs.cpio.gz" "$initrd"
  rm -rf "$tmp"
  build_tmp=""
}

# ---------------------------------------------------------------- per-run work share
work=$(mktemp -d "${TMPDIR:-/tmp}/meshwire-vm.XXXXXX")
work=$(cd "$work" && pwd -P)
chmod 755 "$work"

# The cache is shared by every checkout on the machine, and a checkout with another version of this
# script deletes this version's image when it builds its own (below): the image is linked (or
# copied) into the work directory under the cache's lock, and QEMU boots that.
mkdir -p "$cache/boot"
exec 8>"$cache/boot/.lock"
flock 8
if [ ! -f "$initrd" ] || { [ ! -f "$vmlinux" ] && [ ! -f "$vmlinux.unusable" ]; }; then
  if [ ! -f "$initrd" ]; then
    build_initramfs
    # Images of other versions of this script unused for a day are stale (another checkout may
    # still boot its own: older versions of this script boot the cached file itself).
    find "$cache/boot" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -name "$(basename "$initrd")" \
      -mmin +1440 -delete 2>/dev/null || true
  fi
  # The decompressed kernel boots through its PVH entry: saves the bzImage's xz decompression,
  # 5-10 s under TCG. Falls back to the bzImage if extraction is impossible.
  if [ ! -f "$vmlinux" ] && [ ! -f "$vmlinux.unusable" ]; then
    if ! python3 "$here/extract-vmlinux.py" "$VM_KERNEL_IMAGE" "$vmlinux"; then
      echo "run-in-vm.sh: booting the compressed kernel (slower)" >&2
      touch "$vmlinux.unusable"
    fi
  fi
fi
ln -f "$initrd" "$work/initramfs.cpio.gz" 2>/dev/null || cp "$initrd" "$work/initramfs.cpio.gz" ||
  die "cannot copy $initrd"
flock -u 8
exec 8>&-
initrd=$work/initramfs.cpio.gz
boot_kernel=$VM_KERNEL_IMAGE
[ ! -f "$vmlinux" ] || boot_kernel=$vmlinux

{
  echo "VM_KROOT=$(q "$kroot")"
  echo "VM_WORK=$(q "$work")"
  echo "VM_RW_COUNT=${#rw_dirs[@]}"
  for i in "${!rw_dirs[@]}"; do echo "VM_RW_$i=$(q "${rw_dirs[$i]}")"; done
} >"$work/vm.conf"

{
  echo "# generated by run-in-vm.sh; runs in the guest as: chroot /host /bin/sh $work/run.sh"
  echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  echo "export HOME=/root LANG=C.UTF-8 TERM=dumb WG_COLOR_MODE=never"
  echo "export MESHWIRE_VM=1 MESHWIRE_VM_WORK=$(q "$work")"
  # kmod's modprobe inside the chroot finds the guest kernel's modules through this.
  echo "export MODPROBE_OPTIONS=$(q "-d $kroot")"
  for line in "${env_lines[@]}"; do echo "$line"; done
  echo "cd $(q "$PWD") 2>/dev/null || cd /"
  printf 'exec'
  for a in "$@"; do printf ' %s' "$(q "$a")"; done
  echo
} >"$work/run.sh"

# QEMU's option syntax doubles commas inside values.
qpath() { printf '%s' "${1//,/,,}"; }
qemu_args=(
  -accel tcg,thread=multi -cpu max -smp 2 -m "$mem"
  -display none -vga none -serial stdio -monitor none -no-reboot -nic none
  -kernel "$boot_kernel" -initrd "$initrd"
  -append "console=ttyS0 panic=-1 quiet${MESHWIRE_VM_KERNEL_ARGS:+ $MESHWIRE_VM_KERNEL_ARGS}"
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap,id=hostroot"
  -virtfs "local,path=$(qpath "$work"),mount_tag=mwwork,security_model=none,id=mwwork"
)
for i in "${!rw_dirs[@]}"; do
  qemu_args+=(-virtfs "local,path=$(qpath "${rw_dirs[$i]}"),mount_tag=mwrw$i,security_model=none,id=mwrw$i")
done

# QEMU (TCG) occasionally fails in early boot on these machines: it crashes with a signal (seen:
# SIGSEGV after 2 s), or the guest hangs (seen: one vCPU never gets a timer interrupt, the kernel
# reports RCU stalls every 21 s and init never runs). The guest is disposable (overlay root, fresh
# /run), so a crash without a result, or no command started within --boot-timeout, is retried, at
# most twice, within the overall --timeout; timeouts and guest failures once the command runs are
# not.
deadline=$((SECONDS + timeout_s))
attempt=1
while :; do
  rm -f "$work/rc" "$work/started"
  start=$(date +%s.%N)
  timeout --kill-after=10 "$((deadline - SECONDS))" qemu-system-x86_64 "${qemu_args[@]}" </dev/null &
  qpid=$!
  boot_deadline=$((SECONDS + boot_timeout))
  hung=0
  set +e
  while [ ! -e "$work/started" ] && kill -0 "$qpid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$boot_deadline" ]; then
      hung=1
      kill -TERM "$qpid" 2>/dev/null # timeout(1) forwards it to QEMU
      break
    fi
    sleep 0.5
  done
  wait "$qpid"
  qrc=$?
  set -e
  qpid=""
  retry=""
  if [ "$hung" -eq 1 ]; then
    retry="the guest did not start the command within ${boot_timeout}s (a hang in boot)"
  elif [ ! -s "$work/rc" ] && [ "$qrc" -gt 128 ] && [ "$qrc" -ne 137 ]; then
    retry="QEMU died with signal $((qrc - 128)) before the guest finished"
  fi
  if [ -n "$retry" ] && [ "$attempt" -lt 3 ] && [ $((deadline - SECONDS)) -gt 30 ]; then
    echo "run-in-vm.sh: $retry; retrying ($attempt/2)" >&2
    attempt=$((attempt + 1))
    continue
  fi
  if [ "$hung" -eq 1 ]; then
    echo "run-in-vm.sh: $retry; giving up" >&2
    echo "VM-RESULT: FAIL rc=125"
    exit 125
  fi
  break
done
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
  echo "run-in-vm.sh: TIMEOUT: the guest did not finish within ${timeout_s}s; QEMU was killed" >&2
  echo "VM-RESULT: FAIL rc=124"
  exit 124
fi
if [ ! -s "$work/rc" ]; then
  echo "run-in-vm.sh: the guest produced no result (QEMU exit $qrc after ${elapsed}s; boot or init failure, or kernel panic — see the console output above)" >&2
  echo "VM-RESULT: FAIL rc=125"
  exit 125
fi
rc=$(cat "$work/rc")
case "$rc" in '' | *[!0-9]*) echo "run-in-vm.sh: bad result '$rc' from the guest" >&2; exit 125 ;; esac
echo "run-in-vm.sh: guest finished in ${elapsed}s (kernel $kver), command exit $rc" >&2
exit "$rc"
