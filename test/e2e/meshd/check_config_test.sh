#!/usr/bin/env bash
# Runs the real meshd binary on good and bad config files in a temp dir and checks exit codes and
# messages: --check-config, --help, --version, usage errors, and a start that stops at the WireGuard
# interface (identity created 0600, node.json written; the config asks for the kernel backend,
# which these machines lack, and as root meshd runs in a private network namespace so it can never
# touch the host's network). Needs no root. Usage: check_config_test.sh MESHD_BINARY SRC_DIR
set -u
meshd=$1
src=$2
tmp=$(mktemp -d /tmp/mw-meshd-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# meshd in a network namespace of its own when root (unshare -n), bounded in time.
start_meshd() {
    if [[ $(id -u) -eq 0 ]]; then
        unshare -n timeout 10 "$meshd" "$@"
    else
        timeout 10 "$meshd" "$@"
    fi
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
        echo "ok: $name"
    fi
}

head -c 32 /dev/urandom | base64 >"$tmp/psk"
chmod 600 "$tmp/psk"
good() {
    cat <<YAML
nodeName: edge-1
podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"]
psk: {path: $tmp/psk}
stateDir: $tmp/state
runDir: $tmp/run
interface: mwcli0
wireguard: {backend: kernel}
relayNodes:
  - nodeName: relay-a
    advertiseAddress: [192.0.2.1]
YAML
}
good >"$tmp/good.yaml"

expect "help" 0 "EXIT STATUS" -- --help
expect "version" 0 "meshd " -- --version
expect "unknown argument" 64 'unknown argument "--frob"' -- --frob
expect "valid config" 0 'advertiseAddress: ["192.0.2.1"]' -- --check-config --config "$tmp/good.yaml"
expect "defaults are printed" 0 'socket: "'"$tmp"'/run/meshd.sock"' -- --check-config --config "$tmp/good.yaml"
expect "no identity yet" 0 "does not exist yet" -- --check-config --config "$tmp/good.yaml"
[[ -e "$tmp/state" ]] && fail "--check-config created the state dir"

{ good; echo "  - nodeName: relay-b"; echo '    advertiseAddress: ["1.2.3"]'; } >"$tmp/bad-ip.yaml"
expect "bad relay address" 78 'relayNodes[1].advertiseAddress[0]: "1.2.3" is not an IP address (line 12)' \
    -- --check-config --config "$tmp/bad-ip.yaml"
{ good; echo "relayNode: []"; } >"$tmp/unknown.yaml"
expect "unknown field" 78 "relayNode: unknown field (expected one of:" -- --check-config -c "$tmp/unknown.yaml"
expect "missing file" 78 "config file $tmp/none.yaml does not exist" -- --check-config -c "$tmp/none.yaml"

chmod 644 "$tmp/psk"
expect "world-readable PSK" 78 "is readable or writable by others (mode 0644)" -- --check-config -c "$tmp/good.yaml"
chmod 600 "$tmp/psk"
printf 'too-short' >"$tmp/psk-short"
chmod 600 "$tmp/psk-short"
sed "s|$tmp/psk}|$tmp/psk-short}|" "$tmp/good.yaml" >"$tmp/short.yaml"
expect "short PSK" 78 "has 9 bytes; at least 16 are required" -- --check-config -c "$tmp/short.yaml"

# A start: identity and node.json are created before the WireGuard interface, which fails here.
out=$(start_meshd --config "$tmp/good.yaml" 2>&1)
rc=$?
if [[ $rc -eq 1 && "$out" == *"cannot set up the wireguard interface"* && "$out" == *"created a new node identity"* ]]; then
    echo "ok: start stops at the WireGuard interface with exit 1"
else
    fail "start: exit $rc, output:"$'\n'"$out"
fi
if [[ "$(stat -c %a "$tmp/state/node.seed" 2>/dev/null)" != 600 ]]; then fail "node.seed is not 0600"; fi
if [[ "$(stat -c %a "$tmp/state")" != 700 ]]; then fail "stateDir is not 0700"; fi
grep -q '"podCIDRs"' "$tmp/run/node.json" || fail "node.json lacks podCIDRs"
id1=$(start_meshd --config "$tmp/good.yaml" 2>&1 | sed -n 's/.*node_id=\([0-9a-f]*\).*/\1/p')
id2=$("$meshd" --check-config --config "$tmp/good.yaml" 2>&1 | sed -n 's/.*node ID \([0-9a-f]*\),.*/\1/p')
if [[ -z "$id1" || "$id1" != "$id2" ]]; then fail "node ID not stable across runs: '$id1' vs '$id2'"; else echo "ok: stable node ID"; fi
if start_meshd --config "$tmp/good.yaml" 2>&1 | grep -q "$(base64 -w0 "$tmp/state/node.seed")"; then
    fail "the seed appears in the log"
fi

chmod 644 "$tmp/state/node.seed"
expect "loose identity permissions" 1 "is accessible by group or others" -- --config "$tmp/good.yaml"

expect "example config parses (PSK path aside)" 78 "psk.path: PSK file /etc/meshwire/psk" \
    -- --check-config -c "$src/conf/meshd.yaml"

if [[ $failures -ne 0 ]]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "all meshd CLI checks passed"
