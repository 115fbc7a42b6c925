#!/usr/bin/env bash
# Installs everything vmpod and its tests need on Debian 12, from Debian's
# packages and the Go module proxy. Idempotent: re-running installs nothing
# that is already there. Run as root.
set -euo pipefail

CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}
GOBIN_DIR=${GOBIN_DIR:-/usr/local/bin}

packages=(
	libvirt-daemon-system libvirt-dev pkg-config gcc
	qemu-system-x86 qemu-utils genisoimage ovmf
	containernetworking-plugins docker-registry skopeo apache2-utils
	extlinux syslinux-common fdisk cpio kmod socat e2fsprogs dosfstools
	iproute2 iptables iputils-ping util-linux curl python3 ca-certificates
	# The tests read the pods' anti-spoofing rules back with nft; bench/net
	# measures their cost with iperf3.
	nftables iperf3
	# tests/k8s: the API server's store and the kubelet's primary runtime.
	etcd-server containerd runc
	# hack/build-image.sh: the image's Debian base.
	mmdebstrap
)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "install-deps: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null; then
	export PATH=$PATH:/usr/local/go/bin
fi
command -v go >/dev/null || { echo "install-deps: Go is required (/usr/local/go/bin/go)" >&2; exit 1; }

# crictl, built from sigs.k8s.io/cri-tools with its version stamped in.
want=${CRICTL_VERSION#v}
if ! "$GOBIN_DIR/crictl" --version 2>/dev/null | grep -q "$want"; then
	echo "install-deps: building crictl $CRICTL_VERSION"
	GOBIN=$GOBIN_DIR go install \
		-ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$want" \
		"sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
fi

# QEMU must be able to open /dev/kvm; otherwise libvirt re-probes QEMU on
# every call and each domain create takes about a minute.
if [ -e /dev/kvm ]; then
	chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi
echo "install-deps: done"
