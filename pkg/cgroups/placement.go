package cgroups

import (
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
	// StartCPUNs is the CPU time QEMU had used when it was placed
	// (starting up, in libvirt's cgroup): the pod's cgroup never counts
	// it, as CPU time already used does not move with a process. QEMU's
	// own CPU time less StartCPUNs is what the pod's cgroup counts.
	StartCPUNs uint64 `json:"start_cpu_ns,omitempty"`
	// StartMemoryBytes is the memory charged to libvirt's memory cgroup
	// of this QEMU just after the move (0 when QEMU was in no such
	// directory of libvirt's): allocated before the move, it stays
	// charged there (Linux no longer moves charges with a process), and
	// it can only shrink, as QEMU frees it. So it bounds what of QEMU's
	// memory the pod's cgroup does not count.
	StartMemoryBytes uint64 `json:"start_memory_bytes,omitempty"`
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
// directories QEMU left, what QEMU had used before). On failure it
// removes the cgroups it made where it can; the caller stops QEMU and
// calls Remove with the planned placement.
func (h *Host) Apply(p Placement, pid int) (Placement, error) {
	if pid <= 1 {
		return p, fmt.Errorf("QEMU pid %d: %w", pid, errdefs.ErrInvalidArgument)
	}
	before, err := h.k.threads(pid)
	if err != nil {
		return p, err
	}
	// QEMU is paused: it uses next to no CPU until the guest runs.
	if p.StartCPUNs, err = h.k.cpuTime(pid); err != nil {
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
	// A VM placed again (a checkpoint restores it in place: a new QEMU,
	// in new directories of libvirt's) keeps the directories of its
	// earlier QEMU in the list, for Remove: libvirt removes its own when
	// that QEMU ends only if it still knows them, which a libvirtd
	// restarted since it moved out of them does not. The start-up memory
	// is the new QEMU's.
	earlier := p.Libvirt
	p.Libvirt = h.libvirtDirs(before, p.Hierarchies)
	p.StartMemoryBytes = h.startMemory(p)
	for _, d := range earlier {
		if !slices.Contains(p.Libvirt, d) {
			p.Libvirt = append(p.Libvirt, d)
		}
	}
	return p, nil
}

// startMemory reads the memory charged to libvirt's memory cgroup of
// the VM (QEMU's allocations before it moved): memory.usage_in_bytes, v2
// memory.current; 0 without one.
func (h *Host) startMemory(p Placement) uint64 {
	hier, file := h.dirOf["memory"], "memory.usage_in_bytes"
	if h.v2 {
		hier, file = "", "memory.current"
	}
	for _, d := range p.Libvirt {
		if !strings.HasPrefix(d, h.dir(hier, "")+"/") {
			continue
		}
		v, err := readTrimmed(d, file)
		if err != nil {
			return 0
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		return n
	}
	return 0
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
// its children (emulator, vcpuN) when no task is in them; libvirt removes
// them itself when it still knows them, and one that holds a process is
// in use (rmdir fails, and the directory stays).
func (h *Host) removeLibvirtDir(d string) {
	rel, err := filepath.Rel(h.root, d)
	if err != nil || strings.HasPrefix(rel, "..") || !strings.HasSuffix(d, ".libvirt-qemu") {
		return // not one of libvirt's: never touched
	}
	h.k.removeCgroup(d)
}

// removeDirs removes the VM's cgroup in the given hierarchies (a failed
// Apply's own cleanup).
func (h *Host) removeDirs(p string, hiers []string) {
	for _, hier := range hiers {
		h.k.removeCgroup(h.dir(hier, p))
	}
}
