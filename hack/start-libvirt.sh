#!/usr/bin/env bash
# Starts virtlogd and libvirtd when they are not running (on machines where
# systemd does not start them) and waits for libvirtd's socket.
set -euo pipefail

sock=/run/libvirt/libvirt-sock
if ! pgrep -x virtlogd >/dev/null; then
	virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
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
