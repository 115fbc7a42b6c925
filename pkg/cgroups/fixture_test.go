package cgroups

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	occgroups "github.com/opencontainers/cgroups"
)

// The tests here run against a temporary directory as the cgroup root:
// runc's cgroup code, in its test mode, creates the files it writes
// (cgroupfs has them already). Where the kernel would fill in a new
// cgroup's files (cpuset.cpus, cgroup.controllers), the fixtures write
// them first; fakeKernel stands in for the kernel's task moves and
// /proc. real_test.go runs the same calls against the host's cgroups.

// testMode switches runc's cgroup code to creating the files it writes
// for the test's duration.
func testMode(t *testing.T) {
	occgroups.TestMode = true
	t.Cleanup(func() { occgroups.TestMode = false })
}

// write creates a file (and its directory) under root.
func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// read returns a file under root, trimmed; "<missing>" when absent.
func read(t *testing.T, root, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if os.IsNotExist(err) {
		return "<missing>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// v1Root makes a cgroup v1 root like this project's hosts: cpu and
// cpuacct co-mounted (with the usual symlinks), memory, cpuset, devices,
// pids, freezer, name=systemd, and on a hybrid host the unified
// hierarchy.
func v1Root(t *testing.T, hybrid bool) string {
	t.Helper()
	root := t.TempDir()
	hiers := []string{"cpu,cpuacct", "memory", "cpuset", "devices", "pids", "freezer", "systemd"}
	if hybrid {
		hiers = append(hiers, "unified")
	}
	for _, h := range hiers {
		write(t, root, h+"/cgroup.procs", "")
	}
	for _, l := range []string{"cpu", "cpuacct"} {
		if err := os.Symlink("cpu,cpuacct", filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	write(t, root, "cpuset/cpuset.cpus", "0-1\n")
	write(t, root, "cpuset/cpuset.mems", "0\n")
	return root
}

// v1Pod makes a pod's cgroup in every hierarchy of a v1 root, as the
// kubelet does.
func v1Pod(t *testing.T, root, parent string) {
	t.Helper()
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if e.IsDir() {
			write(t, root, e.Name()+parent+"/cgroup.procs", "")
		}
	}
	write(t, root, "cpuset"+parent+"/cpuset.cpus", "0-1\n")
	write(t, root, "cpuset"+parent+"/cpuset.mems", "0\n")
}

// v1NewCgroupFiles writes what the kernel puts in a new v1 cgroup that
// the code reads before it writes: an empty cpuset, unlimited memory.
func v1NewCgroupFiles(t *testing.T, root, p string) {
	t.Helper()
	write(t, root, "cpuset"+p+"/cpuset.cpus", "\n")
	write(t, root, "cpuset"+p+"/cpuset.mems", "\n")
	write(t, root, "memory"+p+"/memory.limit_in_bytes", "9223372036854771712\n")
	write(t, root, "memory"+p+"/memory.memsw.limit_in_bytes", "9223372036854771712\n")
}

// v2Root makes a cgroup v2 root with the usual controllers.
func v2Root(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	write(t, root, "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
	write(t, root, "cgroup.procs", "")
	return root
}

// fakeKernel keeps where each thread of each process is, and moves them
// when told to, the way writes to cgroup.procs and tasks do.
type fakeKernel struct {
	h    *Host
	mu   sync.Mutex
	proc map[int]map[int]map[string]string // pid -> tid -> hierarchy -> path
	// onMove, when set, runs after each move with the lock held.
	onMove func(k *fakeKernel)
}

func newFakeKernel(h *Host) *fakeKernel {
	k := &fakeKernel{h: h, proc: map[int]map[int]map[string]string{}}
	h.k = k
	return k
}

// spawn adds a process with the given threads, each in the cgroups the
// path function gives it by hierarchy.
func (k *fakeKernel) spawn(pid int, tids []int, where func(tid int, hier string) string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := map[int]map[string]string{}
	for _, tid := range tids {
		m := map[string]string{}
		for _, hier := range k.allHierarchies() {
			m[hier] = where(tid, hier)
		}
		p[tid] = m
	}
	k.proc[pid] = p
}

func (k *fakeKernel) allHierarchies() []string {
	seen := map[string]bool{}
	for _, d := range k.h.dirOf {
		seen[d] = true
	}
	seen["devices"] = !k.h.v2
	var out []string
	for d, ok := range seen {
		if ok {
			out = append(out, d)
		}
	}
	return out
}

// split turns a cgroup directory into its hierarchy and path.
func (k *fakeKernel) split(dir string) (hier, p string) {
	rel, err := filepath.Rel(k.h.root, dir)
	if err != nil {
		panic(err)
	}
	if k.h.v2 {
		return "", "/" + rel
	}
	hier, p, _ = strings.Cut(rel, "/")
	return hier, "/" + p
}

func (k *fakeKernel) moveProcess(dir string, pid int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := os.Stat(dir); err != nil {
		return err
	}
	p, ok := k.proc[pid]
	if !ok {
		return fmt.Errorf("no process %d: %w", pid, errdefs.ErrNotFound)
	}
	hier, path := k.split(dir)
	for _, m := range p {
		m[hier] = path
	}
	if k.onMove != nil {
		k.onMove(k)
	}
	return nil
}

func (k *fakeKernel) moveThread(dir string, tid int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	hier, path := k.split(dir)
	for _, p := range k.proc {
		if m, ok := p[tid]; ok {
			m[hier] = path
		}
	}
	if k.onMove != nil {
		k.onMove(k)
	}
	return nil
}

// cpuTime is 0.5 s for every process.
func (k *fakeKernel) cpuTime(pid int) (uint64, error) { return 5e8, nil }

// removeCgroup removes a cgroup directory with its files (cgroupfs
// removes an empty cgroup's files with it), unless a task is in it.
func (k *fakeKernel) removeCgroup(dir string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	hier, path := k.split(dir)
	for pid, p := range k.proc {
		for tid, m := range p {
			if strings.HasPrefix(m[hier]+"/", path+"/") {
				return fmt.Errorf("rmdir %s: task %d of %d in it: device or resource busy", dir, tid, pid)
			}
		}
	}
	return os.RemoveAll(dir)
}

func (k *fakeKernel) threads(pid int) (map[int]map[string]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.proc[pid]
	if !ok {
		return nil, fmt.Errorf("QEMU (pid %d) is gone: %w", pid, errdefs.ErrNotFound)
	}
	out := map[int]map[string]string{}
	for tid, m := range p {
		out[tid] = maps.Clone(m)
	}
	return out, nil
}

// exit ends a process.
func (k *fakeKernel) exit(pid int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.proc, pid)
}

// set puts one thread into a cgroup behind the code's back.
func (k *fakeKernel) set(pid, tid int, hier, path string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.proc[pid][tid][hier] = path
}

// where returns a thread's cgroup path in a hierarchy.
func (k *fakeKernel) where(pid, tid int, hier string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.proc[pid][tid][hier]
}
