# shellcheck shell=bash disable=SC2034
# Shared helpers of the test/vm scripts (sourced, not executed).

# vm_cache_dir [DIR]: the harness's cache folder (kernel, initramfs images). Never in the git tree.
vm_cache_dir() {
  if [ -n "${1:-}" ]; then
    printf '%s\n' "$1"
  elif [ -n "${MESHWIRE_VM_CACHE:-}" ]; then
    printf '%s\n' "$MESHWIRE_VM_CACHE"
  elif [ "$(id -u)" -eq 0 ]; then
    printf '%s\n' /var/cache/meshwire-vm
  else
    printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/meshwire-vm"
  fi
}

# vm_kernel_env CACHE_DIR: loads VM_KERNEL_{PACKAGE,VERSION,ROOT,IMAGE} of the fetched kernel;
# fails (with a reason on stderr) when no complete kernel is cached.
vm_kernel_env() {
  local env="$1/current.env"
  if [ ! -f "$env" ]; then
    echo "no kernel in $1 (run test/vm/fetch-kernel.sh)" >&2
    return 1
  fi
  VM_KERNEL_PACKAGE=$(sed -n 's/^VM_KERNEL_PACKAGE=//p' "$env")
  VM_KERNEL_VERSION=$(sed -n 's/^VM_KERNEL_VERSION=//p' "$env")
  VM_KERNEL_ROOT=$(sed -n 's/^VM_KERNEL_ROOT=//p' "$env")
  VM_KERNEL_IMAGE=$(sed -n 's/^VM_KERNEL_IMAGE=//p' "$env")
  if [ ! -f "$VM_KERNEL_ROOT/.complete" ] || [ ! -f "$VM_KERNEL_IMAGE" ]; then
    echo "kernel $VM_KERNEL_VERSION in $1 is incomplete (run test/vm/fetch-kernel.sh)" >&2
    return 1
  fi
}

# modprobe, depmod live in /usr/sbin, which a non-root PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac
