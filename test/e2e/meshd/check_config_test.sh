#!/usr/bin/env bash
# Runs the real meshd binary on good and bad config files in a temp dir and checks exit codes and
# messages: --check-config, --help, --version, usage errors, the node identity (created 0600,
# stable, never logged), node.json, and a start whose outcome depends on the host's kernel:
#   - WireGuard module loaded, or installed and loaded on first use (stock Debian): meshd with
#     `backend: kernel` comes up with a working kernel device (loading the module if needed),
#     `backend: auto` picks the kernel; both stop cleanly on SIGTERM.
#   - no module (these build machines): `backend: kernel` stops at the WireGuard interface with
#     exit 1 and an error naming the userspace fallback; `backend: auto` then runs wireguard-go.
#   - not root: the start stops at the WireGuard interface (no privileges).
# As root every meshd that can touch the network runs in a network namespace of its own named
# mwt-<pid>-meshd-cli<k> (and a private /run), so it never touches the host's network, and a
# killed run's leftovers are removed by topology.py --cleanup-stale. CTest runs this on the host
# (meshd_cli) and in the QEMU guest with the module unloaded first (meshd_cli_vm), so both
# branches run in CI; in the guest, where every exec is slow, --host-dependent-only leaves out the
# checks whose outcome cannot depend on the host (config parsing, usage).
# Usage: check_config_test.sh MESHD_BINARY SRC_DIR [--host-dependent-only]
set -u
meshd=$1
src=$2
all=1
[[ ${3:-} == --host-dependent-only ]] && all=0
tmp=$(mktemp -d "/tmp/mwt-$$-meshd-cli.XXXXXX")
namespaces=()
daemon=""
cleanup() {
    if [[ -n "$daemon" ]]; then kill -KILL "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; fi
    for n in "${namespaces[@]}"; do
        for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$n" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
failures=0
root=0
[[ $(id -u) -eq 0 ]] && root=1

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

# What the kernel offers. The module must not be loaded by this probe: on a stock Debian host it
# is installed but not loaded, and loading it on first use is meshd's job (checked below).
kernel_wg_state() {
    if [[ -e /sys/module/wireguard ]]; then
        echo loaded
    elif modprobe -n -q wireguard 2>/dev/null; then
        echo loadable
    elif unshare -n ip link add mwprobe0 type wireguard 2>/dev/null; then
        echo loaded # built in (its link went with the scratch namespace)
    else
        echo absent
    fi
}

# new_ns: a fresh named network namespace with lo up, in $ns (removed by cleanup).
new_ns() {
    ns="mwt-$$-meshd-cli${#namespaces[@]}"
    ip netns add "$ns" || { echo "cannot create namespace $ns"; exit 1; }
    namespaces+=("$ns")
    ip -n "$ns" link set lo up
}

# in_ns CMD...: runs CMD in $ns with a private, empty /run (wireguard-go's sockets), bounded.
# (exec: started with `in_ns ... &`, $! is then the process that gets our signals.)
in_ns() {
    exec ip netns exec "$ns" sh -c 'mount -t tmpfs mwcli /run && exec "$@"' sh \
        timeout --kill-after=5 120 "$@"
}

# start_meshd ARGS...: one run that is expected to stop by itself (in a namespace when root).
start_meshd() {
    if [[ $root -eq 1 ]]; then
        new_ns
        (in_ns "$meshd" "$@")
    else
        timeout 10 "$meshd" "$@"
    fi
}

# start_daemon CONFIG LOG: meshd in the background in a new namespace; waits for "meshd ready".
start_daemon() {
    local cfg=$1 log=$2 i
    new_ns
    in_ns "$meshd" --config "$cfg" >"$log" 2>&1 &
    daemon=$!
    for ((i = 0; i < 600; i++)); do # 60 s: a loaded QEMU guest is slow
        grep -q 'msg="meshd ready"' "$log" && return 0
        kill -0 "$daemon" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# stop_daemon: SIGTERM, expects exit 0 within 10 s (then SIGKILL). Returns meshd's exit status.
stop_daemon() {
    local i rc
    kill -TERM "$daemon"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$daemon" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$daemon" 2>/dev/null && kill -KILL "$daemon"
    wait "$daemon"
    rc=$?
    daemon=""
    return $rc
}

# expect NAME WANT_RC WANT_TEXT -- ARGS...: runs meshd, checks the exit code and that stdout+stderr
# contain WANT_TEXT.
expect() {
    local name=$1 want_rc=$2 want_text=$3
    shift 4
    local out rc
    out=$("$meshd" "$@" 2>&1)
    rc=$?
    if [[ $rc -ne $want_rc ]]; then
        fail "$name: exit $rc, want $want_rc; output:"$'\n'"$out"
    elif [[ "$out" != *"$want_text"* ]]; then
        fail "$name: output lacks '$want_text':"$'\n'"$out"
    else
        ok "$name"
    fi
}

head -c 32 /dev/urandom | base64 >"$tmp/psk"
chmod 600 "$tmp/psk"
config() { # config BACKEND
    cat <<YAML
nodeName: edge-1
podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"]
psk: {path: $tmp/psk}
stateDir: $tmp/state
runDir: $tmp/run
interface: mwcli0
wireguard: {backend: $1}
relayNodes:
  - nodeName: relay-a
    advertiseAddress: [192.0.2.1]
YAML
}
config kernel >"$tmp/good.yaml"
config auto >"$tmp/auto.yaml"

if [[ $all -eq 1 ]]; then
    expect "help" 0 "EXIT STATUS" -- --help
    expect "version" 0 "meshd " -- --version
    expect "unknown argument" 64 'unknown argument "--frob"' -- --frob
    expect "valid config" 0 'advertiseAddress: ["192.0.2.1"]' -- --check-config --config "$tmp/good.yaml"
    expect "defaults are printed" 0 'socket: "'"$tmp"'/run/meshd.sock"' -- --check-config --config "$tmp/good.yaml"
    expect "no identity yet" 0 "does not exist yet" -- --check-config --config "$tmp/good.yaml"
    [[ -e "$tmp/state" ]] && fail "--check-config created the state dir"

    { config kernel; echo "  - nodeName: relay-b"; echo '    advertiseAddress: ["1.2.3"]'; } >"$tmp/bad-ip.yaml"
    expect "bad relay address" 78 'relayNodes[1].advertiseAddress[0]: "1.2.3" is not an IP address (line 12)' \
        -- --check-config --config "$tmp/bad-ip.yaml"
    { config kernel; echo "relayNode: []"; } >"$tmp/unknown.yaml"
    expect "unknown field" 78 "relayNode: unknown field (expected one of:" -- --check-config -c "$tmp/unknown.yaml"
    expect "missing file" 78 "config file $tmp/none.yaml does not exist" -- --check-config -c "$tmp/none.yaml"

    chmod 644 "$tmp/psk"
    expect "world-readable PSK" 78 "is readable or writable by others (mode 0644)" -- --check-config -c "$tmp/good.yaml"
    chmod 600 "$tmp/psk"
    printf 'too-short' >"$tmp/psk-short"
    chmod 600 "$tmp/psk-short"
    sed "s|$tmp/psk}|$tmp/psk-short}|" "$tmp/good.yaml" >"$tmp/short.yaml"
    expect "short PSK" 78 "is too weak: it has 9 bytes; at least 32 are required" -- --check-config -c "$tmp/short.yaml"
    printf 'a-password-of-36-characters-12345678' >"$tmp/psk-short"
    expect "password-like PSK" 78 "is too weak: it is text of 36 characters; a text key needs at least 44" \
        -- --check-config -c "$tmp/short.yaml"
fi

# The start with `backend: kernel`: identity and node.json are created before the WireGuard
# interface; what happens there depends on the host.
wg_state=absent
[[ $root -eq 1 ]] && wg_state=$(kernel_wg_state)
echo "kernel WireGuard: $wg_state$([[ $root -eq 1 ]] || echo ' (not root: not probed)')"
logs=()
if [[ $root -eq 1 && $wg_state != absent ]]; then
    log="$tmp/kernel.log"
    logs+=("$log")
    if ! start_daemon "$tmp/good.yaml" "$log"; then
        fail "backend kernel: meshd not ready:"$'\n'"$(cat "$log")"
    else
        ok "backend kernel: meshd ready"
        grep -q 'msg="wireguard interface up" interface=mwcli0 backend=kernel' "$log" \
            || fail "backend kernel: no kernel interface in the log:"$'\n'"$(cat "$log")"
        [[ -e /sys/module/wireguard ]] || fail "the module is not loaded with meshd running"
        [[ $wg_state == loadable ]] && ok "meshd loaded the module on first use"
        kind=$(ip -n "$ns" -d -j link show mwcli0 2>&1 | grep -o '"info_kind":"[a-z]*"')
        [[ $kind == '"info_kind":"wireguard"' ]] || fail "mwcli0 is not a wireguard link: $kind"
        want_key=$(sed -n 's/.*msg="meshd starting".* wg_public_key="\([^"]*\)".*/\1/p' "$log")
        got_key=$(ip netns exec "$ns" wg show mwcli0 public-key 2>&1)
        got_port=$(ip netns exec "$ns" wg show mwcli0 listen-port 2>&1)
        if [[ -n "$want_key" && "$got_key" == "$want_key" && "$got_port" == 51820 ]]; then
            ok "the kernel device has meshd's key and port ($got_key :$got_port)"
        else
            fail "kernel device: key '$got_key' port '$got_port', meshd logged '$want_key'"
        fi
    fi
    if [[ -n "$daemon" ]]; then
        stop_daemon
        rc=$?
        if [[ $rc -eq 0 ]] && grep -q 'msg="meshd stopping"' "$log"; then
            ok "backend kernel: SIGTERM stops meshd with exit 0"
        else
            fail "backend kernel: exit $rc after SIGTERM:"$'\n'"$(cat "$log")"
        fi
    fi
    out=$(cat "$log")
else
    log="$tmp/kernel.log"
    logs+=("$log")
    start_meshd --config "$tmp/good.yaml" >"$log" 2>&1
    rc=$?
    out=$(cat "$log")
    if [[ $rc -eq 1 && "$out" == *"cannot set up the wireguard interface"* ]]; then
        ok "backend kernel: the start stops at the WireGuard interface with exit 1"
    else
        fail "backend kernel: exit $rc, output:"$'\n'"$out"
    fi
    if [[ $root -eq 1 ]]; then
        if [[ "$out" == *"wireguard.backend: userspace or auto"* ]]; then
            ok "without the module the error names the userspace fallback"
        else
            fail "the error does not name the userspace fallback:"$'\n'"$out"
        fi
    fi
fi
[[ "$out" == *"created a new node identity"* ]] || fail "no new identity on the first start:"$'\n'"$out"
if [[ "$(stat -c %a "$tmp/state/node.seed" 2>/dev/null)" != 600 ]]; then fail "node.seed is not 0600"; fi
if [[ "$(stat -c %a "$tmp/state")" != 700 ]]; then fail "stateDir is not 0700"; fi
grep -q '"podCIDRs"' "$tmp/run/node.json" || fail "node.json lacks podCIDRs"
id1=$(sed -n 's/.*msg="meshd starting".* node_id=\([0-9a-f]*\).*/\1/p' <<<"$out" | head -1)
id2=$("$meshd" --check-config --config "$tmp/good.yaml" 2>&1 | sed -n 's/.*node ID \([0-9a-f]*\),.*/\1/p')

# `backend: auto`: the kernel where it works, else wireguard-go (what the error above names).
if [[ $root -eq 1 ]]; then
    want=userspace
    [[ $wg_state != absent ]] && want=kernel
    log="$tmp/auto.log"
    logs+=("$log")
    if [[ $want == userspace ]] && ! command -v wireguard-go >/dev/null; then
        fail "backend auto: wireguard-go is not installed (install/deps.sh)"
    elif ! start_daemon "$tmp/auto.yaml" "$log"; then
        fail "backend auto: meshd not ready:"$'\n'"$(cat "$log")"
    else
        if grep -q "msg=\"wireguard backend: $want" "$log" &&
            grep -q "msg=\"wireguard interface up\" interface=mwcli0 backend=$want" "$log"; then
            ok "backend auto picks $want here"
        else
            fail "backend auto: expected $want:"$'\n'"$(cat "$log")"
        fi
        id3=$(sed -n 's/.*msg="meshd starting".* node_id=\([0-9a-f]*\).*/\1/p' "$log" | head -1)
        [[ "$id3" == "$id1" ]] || fail "node ID changed on the second start: '$id1' vs '$id3'"
    fi
    if [[ -n "$daemon" ]]; then
        stop_daemon
        rc=$?
        left=$(ip netns pids "$ns")
        if [[ $rc -eq 0 && -z "$left" ]]; then
            ok "backend auto: SIGTERM stops meshd with exit 0, nothing left in its namespace"
        else
            fail "backend auto: exit $rc after SIGTERM, processes left: '$left'"$'\n'"$(cat "$log")"
        fi
    fi
fi

if [[ -z "$id1" || "$id1" != "$id2" ]]; then fail "node ID not stable across runs: '$id1' vs '$id2'"; else ok "stable node ID"; fi
seed=$(base64 -w0 "$tmp/state/node.seed")
for l in "${logs[@]}"; do
    grep -qF "$seed" "$l" && fail "the seed appears in $l"
done

chmod 644 "$tmp/state/node.seed"
expect "loose identity permissions" 1 "is accessible by group or others" -- --config "$tmp/good.yaml"

if [[ $all -eq 1 ]]; then
    expect "example config parses (PSK path aside)" 78 "psk.path: PSK file /etc/meshwire/psk" \
        -- --check-config -c "$src/conf/meshd.yaml"
fi

if [[ $failures -ne 0 ]]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "all meshd CLI checks passed"
