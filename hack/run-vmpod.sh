#!/usr/bin/env bash
# Installs and runs vmpod on a Debian 12 machine, as root, with a working
# default configuration: installs the dependencies, starts virtlogd and
# libvirtd, builds and installs /usr/local/bin/vmpod, writes
# /etc/vmpod/vmpod.toml (from `vmpod config default`), an example image
# translation file and, when /etc/cni/net.d has no network config at all, a
# bridge network for the pods (examples/cni/10-vmpod-bridge.conflist:
# bridge vmpod0, 10.89.0.0/16, masquerading), then runs `vmpod serve` in
# the foreground (Ctrl-C stops it). Extra arguments go to `vmpod serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/local/bin:/usr/sbin:/sbin

hack/install-deps.sh
hack/start-libvirt.sh
go build -o /usr/local/bin/vmpod ./cmd/vmpod
install -d -m 0755 /etc/vmpod /etc/vmpod/images.d
[ -e /etc/vmpod/vmpod.toml ] || vmpod config default > /etc/vmpod/vmpod.toml
[ -e /etc/vmpod/images.d/examples.toml ] || install -m 0644 examples/images.d/examples.toml /etc/vmpod/images.d/examples.toml
install -d -m 0755 /etc/cni/net.d
if ! ls /etc/cni/net.d/*.conf /etc/cni/net.d/*.conflist /etc/cni/net.d/*.json >/dev/null 2>&1; then
	install -m 0644 examples/cni/10-vmpod-bridge.conflist /etc/cni/net.d/10-vmpod-bridge.conflist
	echo "run-vmpod: installed the pod network /etc/cni/net.d/10-vmpod-bridge.conflist (bridge vmpod0, 10.89.0.0/16)"
fi
echo "run-vmpod: CRI socket unix:///run/vmpod/vmpod.sock; try: crictl -r unix:///run/vmpod/vmpod.sock version"
exec vmpod serve "$@"
