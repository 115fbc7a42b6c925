package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	occgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
	"golang.org/x/sys/unix"
)

// Placement is where a VM's QEMU runs: the same path below the root of
// each hierarchy. It is stored with the container's record (the JSON
// names are the record format).
type Placement struct {
	// Parent is the pod's cgroup (cgroup_parent resolved for the driver),
	// the same below every hierarchy's root.
	Parent string `json:"parent"`
	// Path is the VM's cgroup: Parent/vmpod-<container ID>.
	Path string `json:"path"`
	// Hierarchies are the directories under the cgroup root QEMU is in
	// ("" for cgroup v2's single hierarchy). Before Apply, every one it
	// may join.
	Hierarchies []string `json:"hierarchies"`
	// Limits are the limits last applied.
	Limits Limits `json:"limits"`
	// Libvirt are the cgroup directories libvirt made for this QEMU
	// (absolute, .libvirt-qemu), removed with the placement: once QEMU
	// has left them, a restarted libvirtd no longer knows them.
	Libvirt []string `json:"libvirt,omitempty"`
}

// ChildName is the cgroup of a container's VM below its pod's.
func ChildName(containerID string) string { return "vmpod-" + containerID }

// Plan says where the VM of container id goes, without touching
// anything: below cgroupParent (resolved for the driver) in every
// hierarchy. Errors wrap errdefs.ErrInvalidArgument.
func (h *Host) Plan(cgroupParent, containerID string) (Placement, error) {
	parent, err := h.ResolveParent(cgroupParent)
	if err != nil {
		return Placement{}, err
	}
	name := ChildName(containerID)
	if err := checkComponent(name); err != nil {
		return Placement{}, fmt.Errorf("container ID %q: cgroup name %s: %w", truncate(containerID), err, errdefs.ErrInvalidArgument)
	}
	return Placement{Parent: parent, Path: path.Join(parent, name), Hierarchies: slices.Clone(h.hierarchies)}, nil
}

// dir is the placement's directory in hierarchy hier.
func (h *Host) dir(hier, p string) string { return filepath.Join(h.root, hier, p) }

// essential says whether a VM needs hierarchy hier even when the pod's
// cgroup does not exist in it (the kubelet makes it in every hierarchy;
// a pod run by hand may not have one): the ones its limits and
// accounting live in.
func (h *Host) essential(hier string) bool {
	if h.v2 {
		return true
	}
	for _, c := range []string{"memory", "cpu", "cpuacct", "pids"} {
		if h.dirOf[c] == hier {
			return true
		}
	}
	return false
}

// Apply puts QEMU (every thread of process pid) into the placement and
// sets p.Limits there first: it makes the VM's cgroup in each hierarchy
// (with the pod's cgroup when missing, in the hierarchies the VM needs;
// others it joins only when the pod has a cgroup there), writes the
// limits, moves the process, and checks that every thread moved. It
// returns the placement as applied (the hierarchies joined, libvirt's
// directories QEMU left). On failure it removes the cgroups it made
// where it can; the caller stops QEMU and calls Remove with the planned
// placement.
func (h *Host) Apply(p Placement, pid int) (Placement, error) {
	if pid <= 1 {
		return p, fmt.Errorf("QEMU pid %d: %w", pid, errdefs.ErrInvalidArgument)
	}
	before, err := h.k.threads(pid)
	if err != nil {
		return p, err
	}
	var joined []string
	for _, hier := range p.Hierarchies {
		d := h.dir(hier, p.Path)
		if !exists(filepath.Dir(d)) && !h.essential(hier) {
			continue
		}
		if err := h.mkdir(hier, d); err != nil {
			h.removeDirs(p.Path, joined)
			return p, fmt.Errorf("make cgroup %s: %w", d, err)
		}
		joined = append(joined, hier)
	}
	p.Hierarchies = joined
	if err := h.setLimits(p, p.Limits); err != nil {
		h.removeDirs(p.Path, joined)
		return p, err
	}
	for _, hier := range joined {
		if err := h.k.moveProcess(h.dir(hier, p.Path), pid); err != nil {
			return p, fmt.Errorf("move QEMU (pid %d) into %s: %w", pid, h.dir(hier, p.Path), err)
		}
	}
	if _, err := h.Verify(p, pid); err != nil {
		return p, err
	}
	p.Libvirt = h.libvirtDirs(before, p.Hierarchies)
	return p, nil
}

// mkdir makes a VM's cgroup directory d in hierarchy hier (and the pod's
// when missing): a v1 cpuset cgroup gets its CPUs and memory nodes from
// its parent first (a new one has none, and takes no tasks), a v2 one
// has the controllers enabled down to it.
func (h *Host) mkdir(hier, d string) error {
	if h.v2 {
		return h.mkdirV2(d)
	}
	if h.dirOf["cpuset"] == hier {
		return (&fs.CpusetGroup{}).ApplyDir(d, &occgroups.Resources{}, -1)
	}
	return os.MkdirAll(d, 0o755)
}

// Verify checks that every thread of QEMU (pid) is in the placement and
// moves those that are not (libvirt could move a thread it makes into
// its own cgroup); it also writes the limits again if a file no longer
// holds them. It returns how many threads it moved.
func (h *Host) Verify(p Placement, pid int) (moved int, err error) {
	for attempt := 0; ; attempt++ {
		threads, err := h.k.threads(pid)
		if err != nil {
			return moved, err
		}
		stray := h.strays(p, threads)
		if len(stray) == 0 {
			break
		}
		if attempt == 2 {
			return moved, fmt.Errorf("QEMU (pid %d): threads %v stay outside cgroup %s after two moves: %w", pid, stray, p.Path, errdefs.ErrInternal)
		}
		for _, s := range stray {
			if err := h.moveThread(p, s, pid); err != nil {
				return moved, err
			}
			moved++
		}
	}
	if err := h.restoreLimits(p); err != nil {
		return moved, err
	}
	return moved, nil
}

// stray is a thread outside the placement in one hierarchy.
type stray struct {
	tid  int
	hier string
}

func (s stray) String() string { return fmt.Sprintf("%d(%s)", s.tid, s.hier) }

// strays lists the threads outside the placement.
func (h *Host) strays(p Placement, threads map[int]map[string]string) []stray {
	var out []stray
	for _, tid := range slices.Sorted(maps.Keys(threads)) {
		for _, hier := range p.Hierarchies {
			if threads[tid][hier] != p.Path {
				out = append(out, stray{tid, hier})
			}
		}
	}
	return out
}

// moveThread moves a thread back: on v1 the thread alone, on v2 its
// whole process (threads of a process share a domain cgroup).
func (h *Host) moveThread(p Placement, s stray, pid int) error {
	d := h.dir(s.hier, p.Path)
	if h.v2 {
		return h.k.moveProcess(d, pid)
	}
	if err := h.k.moveThread(d, s.tid); err != nil {
		return fmt.Errorf("move QEMU thread %d into %s: %w", s.tid, d, err)
	}
	return nil
}

// kernel moves tasks between cgroups and says where they are: procKernel
// on a real host (tests put a fake in its place).
type kernel interface {
	// moveProcess moves every thread of pid into cgroup dir.
	moveProcess(dir string, pid int) error
	// moveThread moves one thread into cgroup dir (v1).
	moveThread(dir string, tid int) error
	// removeCgroup removes a cgroup and the cgroups below it; a missing
	// one is fine, one with tasks fails.
	removeCgroup(dir string) error
	// threads says where each thread of pid is: its cgroup path by
	// hierarchy directory, by thread ID. A process that is gone is
	// errdefs.ErrNotFound.
	threads(pid int) (map[int]map[string]string, error)
}

// procKernel is the kernel's cgroup interface: cgroup.procs and tasks
// files, /proc/<pid>/task/<tid>/cgroup.
type procKernel struct{ h *Host }

func (k procKernel) moveProcess(dir string, pid int) error {
	return occgroups.WriteCgroupProc(dir, pid)
}

func (k procKernel) removeCgroup(dir string) error { return occgroups.RemovePath(dir) }

func (k procKernel) moveThread(dir string, tid int) error {
	err := occgroups.WriteFile(dir, "tasks", strconv.Itoa(tid))
	if errors.Is(err, unix.ESRCH) {
		return nil // the thread ended
	}
	return err
}

func (k procKernel) threads(pid int) (map[int]map[string]string, error) {
	h := k.h
	taskDir := filepath.Join(h.proc, strconv.Itoa(pid), "task")
	ents, err := os.ReadDir(taskDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("QEMU (pid %d) is gone: %w", pid, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("list QEMU's threads: %w", err)
	}
	out := map[int]map[string]string{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		m, err := h.parseCgroupFile(filepath.Join(taskDir, e.Name(), "cgroup"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread ended
		}
		if err != nil {
			return nil, err
		}
		out[tid] = m
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("QEMU (pid %d) has no threads left: %w", pid, errdefs.ErrNotFound)
	}
	return out, nil
}

// parseCgroupFile reads a /proc/<pid>/cgroup file: each line is
// "ID:controllers:path", mapped here to the hierarchy's directory.
func (h *Host) parseCgroupFile(name string) (map[string]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		first, _, _ := strings.Cut(parts[1], ",")
		if hier, ok := h.dirOf[first]; ok {
			m[hier] = parts[2]
		}
	}
	return m, sc.Err()
}

// libvirtDirs picks, from where QEMU's threads were before the move,
// libvirt's per-domain directories (qemu-N-<name>.libvirt-qemu) in the
// hierarchies QEMU left.
func (h *Host) libvirtDirs(before map[int]map[string]string, hiers []string) []string {
	seen := map[string]bool{}
	for _, m := range before {
		for _, hier := range hiers {
			p := m[hier]
			for p != "/" && p != "." && p != "" {
				if strings.HasSuffix(p, ".libvirt-qemu") {
					seen[h.dir(hier, p)] = true
					break
				}
				p = path.Dir(p)
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// Remove removes the VM's cgroup in every hierarchy of the placement
// (and any cgroups below it), then, once that worked (QEMU is gone),
// libvirt's directories QEMU left when they are empty. Missing directories are fine, so it finishes a
// half-done removal. A cgroup that still has processes cannot be removed:
// stop QEMU first.
func (h *Host) Remove(p Placement) error {
	var errs []error
	for _, hier := range p.Hierarchies {
		if err := h.k.removeCgroup(h.dir(hier, p.Path)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove cgroup %s: %w", p.Path, err)
	}
	for _, d := range p.Libvirt {
		h.removeLibvirtDir(d)
	}
	return nil
}

// removeLibvirtDir removes one of libvirt's per-domain directories and
// its children (emulator, vcpuN) when they are empty; libvirt removes
// them itself when it still knows them, and one that holds a process is
// in use (rmdir fails).
func (h *Host) removeLibvirtDir(d string) {
	rel, err := filepath.Rel(h.root, d)
	if err != nil || strings.HasPrefix(rel, "..") || !strings.HasSuffix(d, ".libvirt-qemu") {
		return // not one of libvirt's: never touched
	}
	if ents, err := os.ReadDir(d); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				os.Remove(filepath.Join(d, e.Name()))
			}
		}
	}
	os.Remove(d)
}

// removeDirs removes the VM's cgroup in the given hierarchies (a failed
// Apply's own cleanup).
func (h *Host) removeDirs(p string, hiers []string) {
	for _, hier := range hiers {
		h.k.removeCgroup(h.dir(hier, p))
	}
}
