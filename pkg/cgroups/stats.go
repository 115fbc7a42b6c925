package cgroups

import (
	"errors"
	"fmt"
	"os"

	occgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
	"github.com/opencontainers/cgroups/fs2"
	"github.com/opencontainers/cgroups/fscommon"
)

// Usage is what a cgroup used, as the kernel counts it: the figures
// cAdvisor (and so the kubelet's summary) reads from the same files.
type Usage struct {
	// CPUNs is the CPU time of every task in the cgroup since it was
	// made; CPUUserNs and CPUSystemNs split it.
	CPUNs, CPUUserNs, CPUSystemNs uint64
	// CFSPeriods, CFSThrottledPeriods and CFSThrottledNs count the CFS
	// quota's enforcement periods, those in which the cgroup was
	// throttled, and for how long.
	CFSPeriods, CFSThrottledPeriods, CFSThrottledNs uint64
	// MemoryBytes is the memory charged to the cgroup (page cache
	// included); WorkingSetBytes is that minus the inactive file pages,
	// cAdvisor's working set, which eviction reads; RSSBytes its
	// anonymous memory; CacheBytes its page cache.
	MemoryBytes, WorkingSetBytes, RSSBytes, CacheBytes uint64
	// PageFaults and MajorPageFaults count the cgroup's page faults.
	PageFaults, MajorPageFaults uint64
	// OOMKills counts the processes the kernel's OOM killer killed in
	// the cgroup (and below it on cgroup v2).
	OOMKills uint64
}

// Stats reads the VM's usage from its cgroup.
func (h *Host) Stats(p Placement) (Usage, error) {
	return h.usage(p.Hierarchies, p.Path)
}

// PodStats reads the usage of the pod's cgroup, the VM's parent: what
// the kubelet's cAdvisor reads for the pod.
func (h *Host) PodStats(p Placement) (Usage, error) {
	return h.usage(p.Hierarchies, p.Parent)
}

func (h *Host) usage(hiers []string, p string) (Usage, error) {
	st := occgroups.NewStats()
	var u Usage
	if h.v2 {
		d := h.dir("", p)
		m, err := fs2.NewManager(&occgroups.Cgroup{Resources: &occgroups.Resources{}}, d)
		if err == nil {
			st, err = m.Stats(&occgroups.StatsOptions{Controllers: occgroups.CPU | occgroups.Memory})
		}
		if err != nil {
			return Usage{}, fmt.Errorf("read cgroup %s: %w", d, err)
		}
		u.RSSBytes, u.CacheBytes = st.MemoryStats.Stats["anon"], st.MemoryStats.Stats["file"]
		u.PageFaults, u.MajorPageFaults = st.MemoryStats.Stats["pgfault"], st.MemoryStats.Stats["pgmajfault"]
		u.setWorkingSet(st.MemoryStats.Usage.Usage, st.MemoryStats.Stats["inactive_file"])
		u.OOMKills, _ = fs2.OOMKillCount(d)
	} else {
		pl := Placement{Hierarchies: hiers, Path: p}
		mem, okMem := h.joinedDir(pl, "memory")
		cpuacct, okAcct := h.joinedDir(pl, "cpuacct")
		cpu, okCPU := h.joinedDir(pl, "cpu")
		if !okMem || !okAcct || !okCPU {
			return Usage{}, fmt.Errorf("cgroup %s is not in the memory, cpu and cpuacct hierarchies", p)
		}
		if err := (&fs.MemoryGroup{}).GetStats(mem, st); err != nil {
			return Usage{}, fmt.Errorf("read memory cgroup %s: %w", mem, err)
		}
		if err := (&fs.CpuacctGroup{}).GetStats(cpuacct, st); err != nil {
			return Usage{}, fmt.Errorf("read cpuacct cgroup %s: %w", cpuacct, err)
		}
		if err := (&fs.CpuGroup{}).GetStats(cpu, st); err != nil && !errors.Is(err, os.ErrNotExist) {
			return Usage{}, fmt.Errorf("read cpu cgroup %s: %w", cpu, err)
		}
		ms := st.MemoryStats.Stats
		u.RSSBytes, u.CacheBytes = ms["total_rss"], ms["total_cache"]
		u.PageFaults, u.MajorPageFaults = ms["total_pgfault"], ms["total_pgmajfault"]
		u.setWorkingSet(st.MemoryStats.Usage.Usage, ms["total_inactive_file"])
		u.OOMKills, _ = fscommon.GetValueByKey(mem, "memory.oom_control", "oom_kill")
	}
	cs := st.CpuStats
	u.CPUNs, u.CPUUserNs, u.CPUSystemNs = cs.CpuUsage.TotalUsage, cs.CpuUsage.UsageInUsermode, cs.CpuUsage.UsageInKernelmode
	u.CFSPeriods, u.CFSThrottledPeriods, u.CFSThrottledNs = cs.ThrottlingData.Periods, cs.ThrottlingData.ThrottledPeriods, cs.ThrottlingData.ThrottledTime
	return u, nil
}

// setWorkingSet sets the memory figures the way cAdvisor does: the
// working set is the usage minus the inactive file pages, never below 0.
func (u *Usage) setWorkingSet(usage, inactiveFile uint64) {
	u.MemoryBytes = usage
	if inactiveFile < usage {
		u.WorkingSetBytes = usage - inactiveFile
	}
}

// OOMKills counts the OOM kills in the VM's cgroup (0 when it cannot be
// read).
func (h *Host) OOMKills(p Placement) uint64 {
	if h.v2 {
		n, _ := fs2.OOMKillCount(h.dir("", p.Path))
		return n
	}
	if d, ok := h.joinedDir(p, "memory"); ok {
		n, _ := fscommon.GetValueByKey(d, "memory.oom_control", "oom_kill")
		return n
	}
	return 0
}
