#!/usr/bin/env bash
# Runs the real-kubelet end-to-end test (tests/k8s) on a Debian 12 machine,
# as root (hack/test.sh runs it last): installs what it needs
# (hack/install-deps.sh: Debian's etcd-server, containerd, runc and
# mmdebstrap among them), builds kubelet, kube-apiserver,
# kube-controller-manager, kube-scheduler and kubectl from the
# k8s.io/kubernetes module (hack/k8s/) into a cache directory that later
# runs reuse, builds the vmpod image twice (hack/build-image.sh; two tags,
# for the upgrade; its Debian base is cached too), builds the test guest,
# then runs the test. Everything it starts listens on 127.0.0.1 or on unix
# sockets under a temp dir; pods use a private bridge (10.252.0.0/16) that
# the test makes and removes. The DaemonSet's libvirtd runs on a private
# root, beside the host's libvirtd, which the test leaves alone.
#
#   hack/k8s-e2e.sh                 # install, build (or reuse), run the test
#   hack/k8s-e2e.sh --build-only    # install and build only; prints the bin dir
#
# VMPOD_K8S_CACHE (default /var/cache/vmpod-e2e) holds k8s-<version>/bin;
# VMPOD_IMAGE_CACHE (default $VMPOD_K8S_CACHE/image) the image's base.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/local/bin:/usr/sbin:/sbin

K8S_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' hack/k8s/go.mod)
cache=${VMPOD_K8S_CACHE:-/var/cache/vmpod-e2e}
bin=$cache/k8s-$K8S_VERSION/bin

build_only=false
[ "${1:-}" = --build-only ] && build_only=true

# Debian's packages (etcd-server, containerd and runc among them). Where
# systemd runs, the packages start their own etcd and containerd; the
# test's instances use other ports and sockets, so they do not meet.
hack/install-deps.sh

# The Kubernetes commands, built once per Kubernetes version (a missing one
# is built alone). The version is stamped in as the release build does, so
# the node reports it and kubectl's skew check is quiet.
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
missing=()
for cmd in "${cmds[@]}"; do
	[ -x "$bin/$cmd" ] || missing+=("$cmd")
done
if ((${#missing[@]})); then
	echo "k8s-e2e: building ${missing[*]} $K8S_VERSION into $bin (a cold build takes several minutes)"
	minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	pkg=k8s.io/component-base/version
	ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	mkdir -p "$bin"
	tmp=$(mktemp -d "$bin/.build-XXXXXX")
	start=$SECONDS
	# One go build for all of them: their packages compile once and in
	# parallel, and the links overlap.
	pkgs=()
	for cmd in "${missing[@]}"; do
		pkgs+=("k8s.io/kubernetes/cmd/$cmd")
	done
	(cd hack/k8s && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
	mv "$tmp"/* "$bin/"
	rmdir "$tmp"
	echo "k8s-e2e: Kubernetes binaries built in $((SECONDS - start)) s"
else
	echo "k8s-e2e: reusing $bin"
fi
"$bin/kubelet" --version

# The vmpod image, twice: the install and the upgrade (another tag, another
# version stamped into vmpod). The Debian base is built once and cached.
export VMPOD_IMAGE_CACHE=${VMPOD_IMAGE_CACHE:-$cache/image}
images=$(mktemp -d)
trap 'rm -rf "$images"' EXIT
version=$(hack/build-image.sh --print-version)
t=$SECONDS
hack/build-image.sh --tag "$version" --out "$images/vmpod-1.tar"
hack/build-image.sh --tag "$version-upgrade" --out "$images/vmpod-2.tar"
echo "k8s-e2e: images built in $((SECONDS - t)) s"

if $build_only; then
	echo "$bin"
	exit 0
fi

guest=${VMPOD_TEST_GUEST:-$PWD/tests/e2e/images/out/vmpod-test-guest.qcow2}
if [ ! -f "$guest" ]; then
	tests/e2e/images/build-guest.sh "$guest"
fi

echo "== real-kubelet end-to-end test"
VMPOD_K8S_E2E=1 VMPOD_K8S_BIN="$bin" VMPOD_TEST_GUEST="$guest" \
	VMPOD_K8S_IMAGE="$images/vmpod-1.tar" VMPOD_K8S_UPGRADE_IMAGE="$images/vmpod-2.tar" \
	go test -count=1 -timeout 30m -v ./tests/k8s/
