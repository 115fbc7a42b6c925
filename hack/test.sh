#!/usr/bin/env bash
# Runs every vmpod test on a Debian 12 machine, as root: installs what the
# tests need, starts virtlogd + libvirtd, builds the test guest image, then
# runs vet, the unit tests (no root or libvirtd needed; ./pkg/... with the
# race detector), every fuzz target for a few seconds, the end-to-end
# tests (real vmpod, libvirtd, QEMU/TCG, crictl) and the real-kubelet test
# (hack/k8s-e2e.sh: kubelet, API server, containerd, the router; its
# Kubernetes binaries are built once and cached in /var/cache/vmpod-e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/local/bin:/usr/sbin:/sbin

hack/install-deps.sh
hack/start-libvirt.sh
tests/e2e/images/build-guest.sh tests/e2e/images/out/vmpod-test-guest.qcow2

echo "== go vet"
go vet ./...
go vet -tags failpoints ./...
echo "== unit tests (pkg with the race detector)"
# -race instead of a second run: on this 2-core machine a cold race build
# and run of ./pkg/... took about as long as the plain one (580 s and
# 658 s), warm 113 s and 106 s (docs/reliability.md).
go test -race -count=1 ./pkg/...
go test -count=1 ./internal/... ./bench/... ./hack/...
# The failpoints themselves, in the build the crash e2e uses.
go test -count=1 -tags failpoints ./pkg/failpoint/
echo "== fuzzing: every fuzz target for 3 s (hack/fuzz.sh)"
hack/fuzz.sh -t 3s -c none
echo "== end-to-end tests"
VMPOD_E2E=1 VMPOD_TEST_GUEST="$PWD/tests/e2e/images/out/vmpod-test-guest.qcow2" \
	go test -count=1 -timeout 40m -v ./tests/e2e/...
echo "== real-kubelet end-to-end test"
hack/k8s-e2e.sh
