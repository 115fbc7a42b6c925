#!/usr/bin/env bash
# Runs the real-kubelet end-to-end test (tests/k8s) on a Debian 12 machine,
# as root (hack/test.sh runs it last): installs what it needs
# (hack/install-deps.sh: Debian's etcd-server, containerd and runc among
# them), builds kubelet, kube-apiserver, kube-controller-manager (its Job
# controller, for the Jobs of VM pods) and kubectl from the
# k8s.io/kubernetes module (hack/k8s/) into a cache directory that later
# runs reuse, starts libvirt, builds the test guest, then runs the test. Everything it starts listens on 127.0.0.1 or on unix
# sockets under a temp dir; pods use a private bridge (10.252.0.0/16) that
# the test makes and removes.
#
#   hack/k8s-e2e.sh                 # install, build (or reuse), run the test
#   hack/k8s-e2e.sh --build-only    # install and build only; prints the bin dir
#
# VMPOD_K8S_CACHE (default /var/cache/vmpod-e2e) holds k8s-<version>/bin.
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

# kubelet, kube-apiserver, kube-controller-manager and kubectl, built once
# per Kubernetes version.
# The version is stamped in as the release build does, so the node reports
# it and kubectl's skew check is quiet.
if [ ! -x "$bin/kubelet" ] || [ ! -x "$bin/kube-apiserver" ] || [ ! -x "$bin/kubectl" ] || [ ! -x "$bin/kube-controller-manager" ]; then
	echo "k8s-e2e: building Kubernetes $K8S_VERSION into $bin (a cold build takes several minutes)"
	minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	pkg=k8s.io/component-base/version
	ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	tmp=$(mktemp -d "$cache/build-XXXXXX" 2>/dev/null || { mkdir -p "$cache" && mktemp -d "$cache/build-XXXXXX"; })
	start=$SECONDS
	for cmd in kube-apiserver kube-controller-manager kubectl kubelet; do
		t=$SECONDS
		(cd hack/k8s && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
			-o "$tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
		echo "k8s-e2e: built $cmd in $((SECONDS - t)) s"
	done
	mkdir -p "$(dirname "$bin")"
	rm -rf "$bin"
	mv "$tmp" "$bin"
	echo "k8s-e2e: Kubernetes binaries built in $((SECONDS - start)) s"
else
	echo "k8s-e2e: reusing $bin"
fi
"$bin/kubelet" --version

if $build_only; then
	echo "$bin"
	exit 0
fi

hack/start-libvirt.sh
guest=${VMPOD_TEST_GUEST:-$PWD/tests/e2e/images/out/vmpod-test-guest.qcow2}
if [ ! -f "$guest" ]; then
	tests/e2e/images/build-guest.sh "$guest"
fi

echo "== real-kubelet end-to-end test"
VMPOD_K8S_E2E=1 VMPOD_K8S_BIN="$bin" VMPOD_TEST_GUEST="$guest" \
	go test -count=1 -timeout 20m -v ./tests/k8s/...
