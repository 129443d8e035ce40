#!/bin/sh
# Self-test of the QEMU harness; runs INSIDE the guest (via run-in-vm.sh) and proves the guest can
# do what the kernel-WireGuard e2e tests need: the wireguard module is loaded, network namespaces,
# WireGuard links managed with wg(8), veth pairs, module autoloading, and a WireGuard tunnel
# carrying pings between two namespaces.
set -eu

step() { echo "selftest: [$(cut -d" " -f1 /proc/uptime)s] $*"; }
fail() { echo "selftest: FAIL: $*" >&2; exit 1; }
ip=/usr/bin/ip # Debian's iproute2 (the guest's busybox ip has no netns support)

[ "${MESHWIRE_VM:-}" = 1 ] || fail "run me through test/vm/run-in-vm.sh"
[ "$(id -u)" -eq 0 ] || fail "not root in the guest"
step "kernel $(uname -r)"

# 1. wireguard module loaded at boot (checked without modprobe).
[ -d /sys/module/wireguard ] || fail "wireguard module not loaded (/sys/module/wireguard missing)"
grep -q '^wireguard ' /proc/modules || fail "wireguard not in /proc/modules"
step "wireguard module loaded"
[ -c /dev/net/tun ] || fail "/dev/net/tun missing (tun module, for wireguard-go)"

# Writable scratch areas.
for d in /run /var/run/netns /var/run/wireguard /tmp "$MESHWIRE_VM_WORK"; do
  [ -d "$d" ] && touch "$d/.selftest" && rm "$d/.selftest" || fail "$d is not writable"
done
step "/run, /var/run/netns, /var/run/wireguard, /tmp and the work share are writable"

cleanup() {
  $ip netns del mw-self-a 2>/dev/null || true
  $ip netns del mw-self-b 2>/dev/null || true
  $ip link del wg-self 2>/dev/null || true
  $ip link del dummy-self 2>/dev/null || true
  rm -f /tmp/selftest.key*
}
trap cleanup EXIT

# 2. netns and a WireGuard link inspected with wg(8).
$ip netns add mw-self-a || fail "ip netns add"
$ip netns add mw-self-b || fail "ip netns add"
$ip netns list | grep -q mw-self-a || fail "ip netns list does not show mw-self-a"
$ip link add wg-self type wireguard || fail "ip link add type wireguard"
umask 077
wg genkey >/tmp/selftest.key1
wg set wg-self private-key /tmp/selftest.key1 listen-port 51820 || fail "wg set"
wg show wg-self
wg show wg-self listen-port | grep -qx 51820 || fail "wg show does not report listen-port 51820"
step "ip link add type wireguard + wg set/show ok"

# 3. Module loading beyond the initramfs: kmod's modprobe in the chroot, and kernel autoload.
modprobe dummy || fail "modprobe dummy (kmod, MODPROBE_OPTIONS=$MODPROBE_OPTIONS)"
[ -d /sys/module/dummy ] || fail "dummy not loaded after modprobe"
$ip link add dummy-self type dummy || fail "ip link add type dummy"
$ip netns exec mw-self-a nft add table inet mwself || fail "nft (nf_tables autoload)"
step "modprobe and module autoload (nf_tables) ok"

# 4. Two namespaces joined by a veth, ping across it.
$ip link add va netns mw-self-a type veth peer name vb netns mw-self-b || fail "veth pair"
$ip -n mw-self-a addr add 10.213.0.1/24 dev va
$ip -n mw-self-b addr add 10.213.0.2/24 dev vb
$ip -n mw-self-a link set va up
$ip -n mw-self-b link set vb up
$ip -n mw-self-a link set lo up
$ip -n mw-self-b link set lo up
$ip netns exec mw-self-a ping -c 2 -W 5 10.213.0.2 || fail "ping over veth"
step "veth ping between namespaces ok"

# 5. A WireGuard tunnel between the namespaces (each link created inside its namespace, so its
#    UDP socket lives there), ping through it.
wg genkey >/tmp/selftest.keya
wg genkey >/tmp/selftest.keyb
puba=$(wg pubkey </tmp/selftest.keya)
pubb=$(wg pubkey </tmp/selftest.keyb)
$ip -n mw-self-a link add wga type wireguard
$ip -n mw-self-b link add wgb type wireguard
$ip netns exec mw-self-a wg set wga private-key /tmp/selftest.keya listen-port 51001 \
  peer "$pubb" endpoint 10.213.0.2:51002 allowed-ips 10.214.0.2/32
$ip netns exec mw-self-b wg set wgb private-key /tmp/selftest.keyb listen-port 51002 \
  peer "$puba" endpoint 10.213.0.1:51001 allowed-ips 10.214.0.1/32
$ip -n mw-self-a addr add 10.214.0.1/24 dev wga
$ip -n mw-self-b addr add 10.214.0.2/24 dev wgb
$ip -n mw-self-a link set wga up
$ip -n mw-self-b link set wgb up
$ip netns exec mw-self-a ping -c 2 -W 5 10.214.0.2 || fail "ping through the WireGuard tunnel"
$ip netns exec mw-self-a wg show wga
$ip netns exec mw-self-a wg show wga latest-handshakes | awk '{ exit !($2 > 0) }' ||
  fail "no WireGuard handshake recorded"
step "WireGuard tunnel between namespaces ok"
step "all checks passed"
