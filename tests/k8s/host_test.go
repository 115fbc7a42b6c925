package k8se2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostDirs are the host paths that the kubelet and containerd use whatever
// their configuration says: the kubelet's device plugin socket, libcni's
// cache (containerd's CNI), the shims' sockets and runc's state. The test
// removes those it made, deepest first, when they are empty again.
var hostDirs = []string{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet",
	"/var/lib/cni/results", "/var/lib/cni",
	"/run/containerd/s", "/run/containerd/runc/k8s.io", "/run/containerd/runc", "/run/containerd"}

// runLock is held by the run of TestKubelet on this machine: the test
// uses fixed names (the bridge, its subnet, the kubelet's cgroupRoot,
// host directories), so a second run at the same time would fail, and
// its teardown would remove the first run's bridge under its pods.
const runLock = "/run/lock/vmpod-k8s-e2e.lock"

// lockRun waits (up to 20 minutes) until no other run of the test holds
// runLock, then holds it until the test ends.
func lockRun(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(runLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Minute)
	for waited := false; ; waited = true {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("lock %s (another run of this test on this machine?): %v", runLock, err)
		}
		if !waited {
			t.Logf("another run of this test holds %s; waiting for it", runLock)
		}
		time.Sleep(5 * time.Second)
	}
	t.Cleanup(func() { f.Close() }) // the lock goes with the descriptor
}

// noteHostDirs records which hostDirs do not exist yet.
func (c *cluster) noteHostDirs() {
	for _, d := range hostDirs {
		if _, err := os.Stat(d); err != nil {
			c.made = append(c.made, d)
		}
	}
}

// kubeletSysctls are the kernel settings the kubelet sets at start-up
// (setupKernelTunables: protectKernelDefaults false makes it change them,
// true makes it refuse to start when they differ). The test puts back what
// was there.
var kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// shimPIDs lists the containerd-shim processes started for this run's
// containerd.
func (c *cluster) shimPIDs() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(args[0], "containerd-shim") && bytes.Contains(b, []byte(c.containerdSock)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// mountsUnder lists mount points under the test's dir, deepest first.
func (c *cluster) mountsUnder() []string {
	b, _ := os.ReadFile("/proc/self/mounts")
	var ms []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && strings.HasPrefix(f[1], c.dir+"/") {
			ms = append(ms, f[1])
		}
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms
}

// removeCgroups removes the kubelet's cgroup tree (empty once its pods are
// gone) in every v1 hierarchy and the unified one.
func removeCgroups(top string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, root := range roots {
		dir := filepath.Join(root, top)
		var dirs []string
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	}
}
