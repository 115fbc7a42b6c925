package lifecycletest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/cgroups"
	"github.com/vmpod/vmpod/pkg/lifecycle"
)

// Cgroups is a fake lifecycle.Cgroups. cgroup_parent is resolved and
// placements planned by a real cgroups.Host (over an empty cgroup v2
// root: planning touches nothing); what Apply, SetLimits, Verify and
// Remove would do to the cgroups is kept in memory: where each VM is,
// with which pid and limits. Tests set usage figures, OOM kills, threads
// that left, and failures.
type Cgroups struct {
	planner *cgroups.Host

	mu     sync.Mutex
	placed map[string]Placed // by the VM cgroup's path
	usage  map[string]cgroups.Usage
	oom    map[string]uint64
	stray  map[string]int // threads Verify finds outside, by path, once
	fail   map[string]error
	calls  []string
}

// Placed is a VM the fake has in a cgroup.
type Placed struct {
	Placement cgroups.Placement
	PID       int
}

var _ lifecycle.Cgroups = (*Cgroups)(nil)

// What the fake's Apply says QEMU used before it was placed.
const (
	StartCPUNs       = 8e8
	StartMemoryBytes = 20 << 20
)

// NewCgroups returns a fake for the given cgroup driver.
func NewCgroups(t testing.TB, driver string) *Cgroups {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := cgroups.Open(cgroups.Options{Root: root, Driver: driver})
	if err != nil {
		t.Fatal(err)
	}
	return &Cgroups{planner: h, placed: map[string]Placed{}, usage: map[string]cgroups.Usage{},
		oom: map[string]uint64{}, stray: map[string]int{}, fail: map[string]error{}}
}

func (f *Cgroups) begin(method, path string) error {
	f.calls = append(f.calls, method+" "+path)
	if err, ok := f.fail[method]; ok {
		delete(f.fail, method)
		return err
	}
	return nil
}

// ResolveParent implements lifecycle.Cgroups.
func (f *Cgroups) ResolveParent(p string) (string, error) { return f.planner.ResolveParent(p) }

// Plan implements lifecycle.Cgroups.
func (f *Cgroups) Plan(parent, id string) (cgroups.Placement, error) {
	return f.planner.Plan(parent, id)
}

// Apply implements lifecycle.Cgroups: the VM is in the placement, with
// its limits; libvirt's directory is recorded as left behind, with
// StartMemoryBytes (20 MiB) charged to it, and QEMU had used
// StartCPUNs (0.8 s) starting.
func (f *Cgroups) Apply(p cgroups.Placement, pid int) (cgroups.Placement, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("Apply", p.Path); err != nil {
		return p, err
	}
	p.Libvirt = []string{fmt.Sprintf("/sys/fs/cgroup/memory/machine/qemu-%d.libvirt-qemu", pid)}
	p.StartCPUNs, p.StartMemoryBytes = StartCPUNs, StartMemoryBytes
	f.placed[p.Path] = Placed{Placement: p, PID: pid}
	return p, nil
}

// Verify implements lifecycle.Cgroups: it reports the threads
// SetStray put outside, once.
func (f *Cgroups) Verify(p cgroups.Placement, pid int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("Verify", p.Path); err != nil {
		return 0, err
	}
	if got, ok := f.placed[p.Path]; !ok || got.PID != pid {
		return 0, fmt.Errorf("fake cgroups: no VM with pid %d in %s: %w", pid, p.Path, errdefs.ErrNotFound)
	}
	n := f.stray[p.Path]
	delete(f.stray, p.Path)
	return n, nil
}

// SetLimits implements lifecycle.Cgroups.
func (f *Cgroups) SetLimits(p cgroups.Placement, l cgroups.Limits) (cgroups.Placement, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("SetLimits", p.Path); err != nil {
		return p, err
	}
	got, ok := f.placed[p.Path]
	if !ok {
		return p, fmt.Errorf("fake cgroups: nothing in %s: %w", p.Path, errdefs.ErrNotFound)
	}
	p.Limits = l
	got.Placement = p
	f.placed[p.Path] = got
	return p, nil
}

// Stats implements lifecycle.Cgroups: what SetUsage gave the path.
func (f *Cgroups) Stats(p cgroups.Placement) (cgroups.Usage, error) {
	return f.read("Stats", p.Path)
}

// PodStats implements lifecycle.Cgroups: what SetUsage gave the parent.
func (f *Cgroups) PodStats(p cgroups.Placement) (cgroups.Usage, error) {
	return f.read("PodStats", p.Parent)
}

func (f *Cgroups) read(method, path string) (cgroups.Usage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(method, path); err != nil {
		return cgroups.Usage{}, err
	}
	u, ok := f.usage[path]
	if !ok {
		return u, fmt.Errorf("fake cgroups: no usage for %s: %w", path, errdefs.ErrNotFound)
	}
	return u, nil
}

// OOMKills implements lifecycle.Cgroups.
func (f *Cgroups) OOMKills(p cgroups.Placement) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.oom[p.Path]
}

// Remove implements lifecycle.Cgroups.
func (f *Cgroups) Remove(p cgroups.Placement) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("Remove", p.Path); err != nil {
		return err
	}
	delete(f.placed, p.Path)
	return nil
}

// Placed returns the VMs in cgroups, by path.
func (f *Cgroups) Placed() map[string]Placed {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]Placed{}
	for k, v := range f.placed {
		out[k] = v
	}
	return out
}

// SetUsage sets what Stats (for a VM's path) or PodStats (for a pod's
// parent path) read.
func (f *Cgroups) SetUsage(path string, u cgroups.Usage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.usage[path] = u
}

// SetOOMKills sets the OOM kill count of a VM's cgroup.
func (f *Cgroups) SetOOMKills(path string, n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.oom[path] = n
}

// SetStray makes the next Verify of path find n threads outside.
func (f *Cgroups) SetStray(path string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stray[path] = n
}

// FailNext makes the next call of method fail with err.
func (f *Cgroups) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = err
}

// Calls returns the calls made, "Method path", in order.
func (f *Cgroups) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}
