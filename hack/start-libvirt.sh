#!/usr/bin/env bash
# Starts virtlogd and libvirtd when they are not running (on machines where
# systemd does not start them) and waits for libvirtd's socket.
#
# "Running" means this mount namespace's daemon: a libvirtd or virtlogd in
# another one (the DaemonSet's, in the real-kubelet test) has its own
# sockets and pid files and does not count, so processes are found by
# their pid files, not by name.
set -euo pipefail

sock=/run/libvirt/libvirt-sock
self_ns=$(readlink /proc/self/ns/mnt)

# running PIDFILE: the pid file names a live process of this mount namespace.
running() {
	local pid
	pid=$(cat "$1" 2>/dev/null) || return 1
	[ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
	[ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$self_ns" ] || return 1
	# A zombie or a reused pid is not the daemon.
	grep -q '^State:[[:space:]]*[^Z]' "/proc/$pid/status" 2>/dev/null || return 1
	case $(cat "/proc/$pid/comm" 2>/dev/null) in virtlogd | libvirtd) return 0 ;; esac
	return 1
}

if ! running /run/virtlogd.pid; then
	rm -f /run/virtlogd.pid
	virtlogd -d
fi
if ! running /run/libvirtd.pid; then
	rm -f /run/libvirtd.pid
	libvirtd -d
fi
for _ in $(seq 1 300); do
	if [ -S "$sock" ] && virsh -c qemu:///system version >/dev/null 2>&1; then
		echo "start-libvirt: libvirtd is up ($sock)"
		exit 0
	fi
	sleep 0.2
done
echo "start-libvirt: libvirtd did not come up; see its log (journalctl or /var/log/libvirt)" >&2
exit 1
