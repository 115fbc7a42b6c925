package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	occgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
	"github.com/opencontainers/cgroups/fs2"
	"golang.org/x/sys/unix"
)

// Limits are a VM's limits in its cgroup (the JSON names are the record
// format).
type Limits struct {
	// MemoryBytes is the most memory QEMU may use (guest RAM plus
	// overhead); above it the kernel reclaims, then OOM-kills QEMU. No
	// swap on top. 0 sets no limit.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// CPUShares is the relative CPU weight on the cgroup v1 scale
	// (2..262144; on v2 it becomes cpu.weight as the kubelet converts
	// it); 0 leaves the kernel's default.
	CPUShares uint64 `json:"cpu_shares,omitempty"`
	// CPUQuotaUS is the CFS quota per period of the whole VM (all its
	// threads), in microseconds; 0 or less is no quota.
	CPUQuotaUS int64 `json:"cpu_quota_us,omitempty"`
	// CPUPeriodUS is the CFS period in microseconds; 0 is the kernel's
	// (100000).
	CPUPeriodUS uint64 `json:"cpu_period_us,omitempty"`
}

// CPUWeight converts CPU shares (cgroup v1, 2..262144) to cgroup v2's
// cpu.weight (1..10000) the way the kubelet converts them for the pod
// and QoS cgroups it writes itself: 1 + ((shares-2)*9999)/262142. 0
// stays 0 (unset).
func CPUWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	shares = min(max(shares, 2), 262144)
	return 1 + ((shares-2)*9999)/262142
}

// SetLimits writes new limits into the VM's cgroup and returns the
// placement with them. A memory limit below what QEMU uses now is
// refused by the kernel after it tried to reclaim: the error wraps
// errdefs.ErrFailedPrecondition and the old limits stay.
func (h *Host) SetLimits(p Placement, l Limits) (Placement, error) {
	if err := h.setLimits(p, l); err != nil {
		return p, err
	}
	p.Limits = l
	return p, nil
}

func (h *Host) setLimits(p Placement, l Limits) error {
	if h.v2 {
		return h.setLimitsV2(p, l)
	}
	if d, ok := h.joinedDir(p, "memory"); ok && l.MemoryBytes > 0 {
		r := &occgroups.Resources{Memory: l.MemoryBytes}
		if isFile(filepath.Join(d, "memory.memsw.limit_in_bytes")) {
			r.MemorySwap = l.MemoryBytes // no swap on top
		}
		if err := (&fs.MemoryGroup{}).Set(d, r); err != nil {
			return memoryErr(d, l, err)
		}
	}
	if d, ok := h.joinedDir(p, "cpu"); ok {
		if err := (&fs.CpuGroup{}).Set(d, h.cpuResources(l)); err != nil {
			return fmt.Errorf("set CPU limits in %s: %w", d, err)
		}
	}
	return nil
}

func (h *Host) setLimitsV2(p Placement, l Limits) error {
	d := h.dir("", p.Path)
	r := h.cpuResources(l)
	r.CpuWeight, r.CpuShares = CPUWeight(l.CPUShares), 0
	if l.MemoryBytes > 0 {
		r.Memory = l.MemoryBytes
		if isFile(filepath.Join(d, "memory.swap.max")) {
			r.MemorySwap = l.MemoryBytes // memory.swap.max 0: no swap on top
		}
	}
	m, err := fs2.NewManager(&occgroups.Cgroup{Resources: r}, d)
	if err == nil {
		err = m.Set(r)
	}
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return memoryErr(d, l, err)
		}
		return fmt.Errorf("set limits in %s: %w", d, err)
	}
	return nil
}

// cpuResources are the CPU limits as runc's cgroup code takes them: no
// quota is -1 ("max"), written so that an update can lift a quota.
func (h *Host) cpuResources(l Limits) *occgroups.Resources {
	r := &occgroups.Resources{CpuShares: l.CPUShares, CpuQuota: l.CPUQuotaUS, CpuPeriod: l.CPUPeriodUS}
	if r.CpuQuota <= 0 {
		r.CpuQuota = -1
	}
	return r
}

func memoryErr(d string, l Limits, err error) error {
	if errors.Is(err, unix.EBUSY) || strings.Contains(err.Error(), "current usage") {
		return fmt.Errorf("the VM uses more memory than the new limit of %d bytes and the kernel could not reclaim enough (%v): %w",
			l.MemoryBytes, err, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("set the memory limit in %s: %w", d, err)
}

// joinedDir is the placement's directory in the hierarchy holding
// controller c, if QEMU joined it.
func (h *Host) joinedDir(p Placement, c string) (string, bool) {
	hier, ok := h.dirOf[c]
	if !ok || !slices.Contains(p.Hierarchies, hier) {
		return "", false
	}
	return h.dir(hier, p.Path), true
}

// restoreLimits writes the limits again when the memory limit or the CPU
// quota no longer holds (a v2 controller disabled and enabled again
// above the VM's cgroup resets them).
func (h *Host) restoreLimits(p Placement) error {
	if h.v2 && !isFile(filepath.Join(h.dir("", p.Path), "memory.max")) {
		if err := h.mkdirV2(h.dir("", p.Path)); err != nil {
			return err
		}
	}
	ok, err := h.limitsHold(p)
	if err != nil || ok {
		return err
	}
	return h.setLimits(p, p.Limits)
}

// limitsHold reads back the memory limit and CPU quota.
func (h *Host) limitsHold(p Placement) (bool, error) {
	l := p.Limits
	if h.v2 {
		d := h.dir("", p.Path)
		mem, err := readTrimmed(d, "memory.max")
		if err != nil {
			return false, err
		}
		if l.MemoryBytes > 0 && !sameLimit(mem, l.MemoryBytes) {
			return false, nil
		}
		cpu, err := readTrimmed(d, "cpu.max")
		if err != nil {
			return false, err
		}
		quota, _, _ := strings.Cut(cpu, " ")
		return l.CPUQuotaUS <= 0 && quota == "max" || quota == strconv.FormatInt(l.CPUQuotaUS, 10), nil
	}
	if d, ok := h.joinedDir(p, "memory"); ok && l.MemoryBytes > 0 {
		mem, err := readTrimmed(d, "memory.limit_in_bytes")
		if err != nil {
			return false, err
		}
		if !sameLimit(mem, l.MemoryBytes) {
			return false, nil
		}
	}
	if d, ok := h.joinedDir(p, "cpu"); ok {
		q, err := readTrimmed(d, "cpu.cfs_quota_us")
		if err != nil {
			return false, err
		}
		want := l.CPUQuotaUS
		if want <= 0 {
			want = -1
		}
		return q == strconv.FormatInt(want, 10), nil
	}
	return true, nil
}

// sameLimit says whether a memory limit file holds want: the kernel
// keeps limits in whole pages, rounded down.
func sameLimit(file string, want int64) bool {
	v, err := strconv.ParseInt(file, 10, 64)
	return err == nil && (v == want || v == want&^int64(os.Getpagesize()-1))
}

func readTrimmed(dir, file string) (string, error) {
	s, err := occgroups.ReadFile(dir, file)
	return strings.TrimSpace(s), err
}

// v2Controllers are the controllers a VM's cgroup needs on cgroup v2.
var v2Controllers = []string{"cpu", "memory", "pids"}

// mkdirV2 makes cgroup d and every missing cgroup above it, enabling
// the VM's controllers in each parent's subtree_control from the root
// down (a controller reaches a cgroup only when every cgroup above it
// enabled it for its children).
func (h *Host) mkdirV2(d string) error {
	rel, err := filepath.Rel(h.root, d)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("cgroup %s is not below %s", d, h.root)
	}
	avail, err := readTrimmed(h.root, "cgroup.controllers")
	if err != nil {
		return err
	}
	var enable []string
	for _, c := range v2Controllers {
		if slices.Contains(strings.Fields(avail), c) {
			enable = append(enable, "+"+c)
		}
	}
	cur := h.root
	for _, c := range strings.Split(rel, "/") {
		for _, e := range enable {
			if err := occgroups.WriteFile(cur, "cgroup.subtree_control", e); err != nil {
				return fmt.Errorf("enable %s for the cgroups below %s (a cgroup with processes of its own cannot): %w", e[1:], cur, err)
			}
		}
		cur = filepath.Join(cur, c)
		if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}
