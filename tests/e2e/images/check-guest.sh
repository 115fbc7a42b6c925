#!/usr/bin/env bash
# Guest commands are single-quoted on purpose (they expand in the guest):
# shellcheck disable=SC2016
# Boots the test guest under QEMU (TCG) and checks what the e2e tests rely on:
#   1. -smp 2 -m 300 + user-mode NIC with a hostfwd to guest port 8080:
#      ready/cpus/mem_kb/hostname lines, DHCP "ip eth0=" line, HTTP index page,
#      commands typed on the serial console, ACPI power button -> QEMU exits.
#   2. -m 256, no NIC: `poweroff` typed on the serial console -> QEMU exits.
#   3. (VMPOD_GUEST_CHECK_BOOTS=N, default 3) N plain boots, boot-to-ready times.
# Only QEMU user networking is used (10.0.2.x inside QEMU, 127.0.0.1 outside).
#
# Usage: tests/e2e/images/check-guest.sh [IMAGE.qcow2]
# VMPOD_GUEST_CHECK_KEEP=1 keeps the console logs (printed path).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMG=${1:-$SCRIPT_DIR/out/vmpod-test-guest.qcow2}
BOOTS=${VMPOD_GUEST_CHECK_BOOTS:-3}
READY_TIMEOUT=${VMPOD_GUEST_READY_TIMEOUT:-60}

[ -f "$IMG" ] || { echo "no image at $IMG (run build-guest.sh first)" >&2; exit 1; }
missing=()
command -v socat >/dev/null || missing+=(socat)
command -v curl >/dev/null || missing+=(curl)
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
if [ "${#missing[@]}" -gt 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

T=$(mktemp -d /tmp/vmpod-guest-check.XXXXXX)
QPID=""
cleanup() {
	if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then kill "$QPID" 2>/dev/null || true; fi
	if [ "${VMPOD_GUEST_CHECK_KEEP:-0}" = 1 ]; then echo "kept logs in $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT

fails=0
ok() { printf 'ok   %s\n' "$*"; }
bad() { printf 'FAIL %s\n' "$*"; fails=$((fails + 1)); }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 20000))
		if ! ss -Hltn "sport = :$p" | grep -q .; then echo "$p"; return 0; fi
	done
	return 1
}

# start_vm NAME QEMU-ARGS... : boots $IMG (snapshot=on, the image is not changed)
start_vm() {
	local name=$1
	shift
	D=$T/$name
	mkdir -p "$D"
	T0=$(now)
	qemu-system-x86_64 -accel tcg -display none -no-reboot \
		-drive "file=$IMG,if=virtio,format=qcow2,snapshot=on" \
		-chardev "socket,id=ser0,path=$D/serial.sock,server=on,wait=off,logfile=$D/console.log" \
		-serial chardev:ser0 \
		-monitor "unix:$D/monitor.sock,server=on,wait=off" \
		"$@" </dev/null >"$D/qemu.out" 2>&1 &
	QPID=$!
}

# wait_console REGEX SECONDS: waits until the console log matches REGEX.
wait_console() {
	local re=$1 limit=$2 t0
	t0=$(now)
	while ! grep -aqE "$re" "$D/console.log" 2>/dev/null; do
		if ! kill -0 "$QPID" 2>/dev/null; then return 1; fi
		if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then return 1; fi
		sleep 0.05
	done
}

# type_line TEXT: types TEXT + Enter on the serial console. The connection is
# held open for a moment: QEMU drops bytes still unread (its 16550 FIFO holds
# 16) when the socket client hangs up. The client also reads (and discards) the
# guest's output: one that does not read stalls the UART and garbles the log.
# The output is checked in the chardev's logfile.
type_line() { (printf '%s\r' "$1"; sleep 1) | socat - "UNIX-CONNECT:$D/serial.sock" >/dev/null; }

# wait_exit SECONDS: waits for QEMU to exit by itself.
wait_exit() {
	local i
	for i in $(seq $(($1 * 10))); do
		if ! kill -0 "$QPID" 2>/dev/null; then wait "$QPID" 2>/dev/null || true; QPID=""; return 0; fi
		sleep 0.1
	done
	return 1
}

stop_vm() {
	if [ -n "$QPID" ]; then kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; QPID=""; fi
}

echo "== image: $IMG ($(stat -c %s "$IMG") bytes)"

# ---------------------------------------------------------------- scenario 1
PORT=$(free_port)
echo "== 1: -smp 2 -m 300, virtio-net (user, hostfwd 127.0.0.1:$PORT -> :8080)"
start_vm s1 -smp 2 -m 300 \
	-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:8080" -device virtio-net-pci,netdev=n0
if wait_console '^vmpod-test-guest ready' "$READY_TIMEOUT"; then
	ok "ready after $(elapsed "$T0") s"
else
	bad "no ready line"; cat -v "$D/console.log"; exit 1
fi
wait_console '^vmpod-test-guest hostname=' 10 || true
if grep -aq '^vmpod-test-guest cpus=2' "$D/console.log"; then ok "cpus=2"; else bad "cpus line"; fi
mem=$(grep -ao '^vmpod-test-guest mem_kb=[0-9]*' "$D/console.log" | cut -d= -f2)
if [ -n "$mem" ] && [ "$mem" -gt 250000 ] && [ "$mem" -le 307200 ]; then ok "mem_kb=$mem"; else bad "mem_kb=$mem"; fi
if grep -aq '^vmpod-test-guest hostname=vmpod-test-guest' "$D/console.log"; then ok "hostname line"; else bad "hostname line"; fi
if wait_console 'vmpod-test-guest ip eth0=10\.0\.2\.15/24' 20; then ok "DHCP: ip eth0=10.0.2.15/24"; else bad "no DHCP ip line"; fi
body=$(curl -s -m 10 "http://127.0.0.1:$PORT/" || true)
case "$body" in *vmpod-test-guest*) ok "http index via hostfwd" ;; *) bad "http index: $body" ;; esac
info=$(curl -s -m 10 "http://127.0.0.1:$PORT/cgi-bin/info" || true)
case "$info" in *"ip eth0=10.0.2.15/24"*) ok "http /cgi-bin/info" ;; *) bad "cgi info: $info" ;; esac
type_line 'echo "cpu-count=$(grep -c ^processor /proc/cpuinfo)"'
if wait_console '^cpu-count=2' 10; then ok "shell: typed command ran"; else bad "shell: typed command"; fi
type_line 'echo "gw=$(ip route | grep -c "default via 10.0.2.2") dns=$(grep -c nameserver /etc/resolv.conf) host=$(hostname)"'
if wait_console '^gw=1 dns=1 host=vmpod-test-guest' 10; then ok "shell: route/dns/hostname"; else bad "shell: route/dns/hostname"; fi
type_line 'sleep 30'
sleep 1
(printf '\003'; sleep 0.5) | socat - "UNIX-CONNECT:$D/serial.sock" >/dev/null
type_line 'echo "after-ctrl-c"'
if wait_console '^after-ctrl-c' 5; then ok "shell: Ctrl-C interrupts a command (job control)"; else bad "shell: Ctrl-C"; fi
echo system_powerdown | socat - "UNIX-CONNECT:$D/monitor.sock" >/dev/null
T1=$(now)
if wait_exit 30; then ok "ACPI power button (system_powerdown): QEMU exited after $(elapsed "$T1") s"; else bad "ACPI power button: still running"; stop_vm; fi

# ---------------------------------------------------------------- scenario 2
echo "== 2: -m 256, no NIC, 'poweroff' typed on the console"
start_vm s2 -m 256 -nic none
if wait_console '^vmpod-test-guest ready' "$READY_TIMEOUT"; then ok "ready after $(elapsed "$T0") s"; else bad "no ready line"; fi
# Typed right after the ready line: must not be lost.
type_line 'echo "typeahead-$((6*7))"'
if wait_console '^typeahead-42' 10; then ok "input typed right after ready is not lost"; else bad "typeahead lost"; fi
if grep -aq '^vmpod-test-guest cpus=1' "$D/console.log"; then ok "cpus=1"; else bad "cpus=1"; fi
type_line 'poweroff'
T1=$(now)
if wait_exit 30; then ok "poweroff: QEMU exited after $(elapsed "$T1") s"; else bad "poweroff: still running"; stop_vm; fi

# ---------------------------------------------------------------- scenario 3
if [ "$BOOTS" -gt 0 ]; then
	echo "== 3: $BOOTS boots, -m 256, no NIC: boot-to-ready"
	times=()
	for i in $(seq "$BOOTS"); do
		start_vm "s3-$i" -m 256 -nic none
		if wait_console '^vmpod-test-guest ready' "$READY_TIMEOUT"; then times+=("$(elapsed "$T0")"); else bad "boot $i: no ready"; fi
		stop_vm
	done
	echo "   boot-to-ready (s): ${times[*]}"
fi

echo "== $fails failure(s)"
[ "$fails" = 0 ]
