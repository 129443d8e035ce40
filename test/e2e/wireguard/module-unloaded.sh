#!/bin/sh
# Runs a command with the WireGuard module installed but not loaded, as on a stock Debian host
# where it loads on first use (creating a wireguard link makes the kernel load it). Used for the
# tests that run in the QEMU guest (test/vm), whose init loads wireguard at boot: they then also
# prove the "module present, loaded on demand" branch. Refuses to run outside the guest: on a
# real machine unloading the module would cut off its WireGuard tunnels.
# Usage: module-unloaded.sh COMMAND [ARGS...]
set -u
if [ "${MESHWIRE_VM:-}" != 1 ]; then
    echo "module-unloaded.sh: only inside the QEMU guest (test/vm/run-in-vm.sh)" >&2
    exit 2
fi
if [ -e /sys/module/wireguard ] && ! rmmod wireguard; then
    echo "module-unloaded.sh: cannot unload the wireguard module" >&2
    exit 1
fi
if [ -e /sys/module/wireguard ]; then
    echo "module-unloaded.sh: wireguard is still loaded (built in?)" >&2
    exit 1
fi
echo "module-unloaded.sh: wireguard module unloaded; it must load on first use"
exec "$@"
