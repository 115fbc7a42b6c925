package lifecycle

import (
	"context"

	"github.com/vmpod/vmpod/pkg/cgroups"
	"github.com/vmpod/vmpod/pkg/logging"

	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/vm"
)

// Stats read a VM's CPU and memory from its cgroup when it runs in its
// pod's (the figures the kubelet's cAdvisor reads from the same files),
// and a pod's from the pod's cgroup; a VM of a pod without a
// cgroup_parent is read with one bulk libvirt call for all VMs (cheap
// enough for the kubelet's polling; vm.UsageOf says what each figure is).
// The root overlay's allocated bytes are the writable layer, and the pod
// interfaces' counters in the netns the pod's network.

// ContainerStats is a container's usage at one moment.
type ContainerStats struct {
	ContainerView
	// Timestamp is when the usage was read (Unix nanoseconds).
	Timestamp int64
	// Usage is the VM's; zero unless the VM runs.
	vm.Usage
	// Running says the VM runs and Usage is its.
	Running bool
	// CgroupUsage is the usage of the VM's cgroup, which Usage then
	// comes from; nil when the VM does not run in its pod's cgroup.
	CgroupUsage *cgroups.Usage
	// RootDiskBytes is the space the root overlay takes; HasRootDisk says
	// it exists.
	RootDiskBytes uint64
	HasRootDisk   bool
}

// InterfaceUsage is a pod interface's traffic counters.
type InterfaceUsage = cni.Usage

// CgroupUsage is what a VM's or a pod's cgroup used (pkg/cgroups).
type CgroupUsage = cgroups.Usage

// CgroupLimits are a VM's limits in its cgroup (pkg/cgroups).
type CgroupLimits = cgroups.Limits

// SandboxStats is a pod's usage at one moment: its VM's.
type SandboxStats struct {
	SandboxView
	Timestamp  int64
	Containers []ContainerStats
	// CPUTimeNs and WorkingSetBytes are the pod cgroup's (CgroupUsage)
	// when its VM runs in it, else they add up the containers'.
	CPUTimeNs, WorkingSetBytes uint64
	// CgroupUsage is the usage of the pod's cgroup; nil when no VM of
	// the pod was placed in it.
	CgroupUsage *cgroups.Usage
	// Network holds the pod interfaces' counters, the default one first;
	// nil without a network (or when they cannot be read: stats are best
	// effort).
	Network []InterfaceUsage
}

// domainStats reads the usage of every running vmpod domain at once.
func (c *Controller) domainStats(ctx context.Context) (map[string]libvirttools.DomainStats, error) {
	list, err := c.libvirt.Stats(ctx, DomainPrefix)
	if err != nil {
		return nil, err
	}
	m := make(map[string]libvirttools.DomainStats, len(list))
	for _, d := range list {
		m[d.Name] = d
	}
	return m, nil
}

// ContainerStats returns one container's usage.
func (c *Controller) ContainerStats(ctx context.Context, id string) (ContainerStats, error) {
	ct, err := c.reg.container(id)
	if err != nil {
		return ContainerStats{}, err
	}
	stats, err := c.domainStats(ctx)
	if err != nil {
		return ContainerStats{}, err
	}
	return c.containerStats(ct.view(), stats), nil
}

// AllContainerStats returns the usage of every container past CREATING.
func (c *Controller) AllContainerStats(ctx context.Context) ([]ContainerStats, error) {
	stats, err := c.domainStats(ctx)
	if err != nil {
		return nil, err
	}
	var out []ContainerStats
	for _, v := range c.Containers() {
		out = append(out, c.containerStats(v, stats))
	}
	return out, nil
}

// SandboxStats returns a pod's usage.
func (c *Controller) SandboxStats(ctx context.Context, id string) (SandboxStats, error) {
	sb, err := c.reg.sandbox(id)
	if err != nil {
		return SandboxStats{}, err
	}
	stats, err := c.domainStats(ctx)
	if err != nil {
		return SandboxStats{}, err
	}
	return c.sandboxStats(sb.view(), stats), nil
}

// AllSandboxStats returns the usage of every pod.
func (c *Controller) AllSandboxStats(ctx context.Context) ([]SandboxStats, error) {
	stats, err := c.domainStats(ctx)
	if err != nil {
		return nil, err
	}
	var out []SandboxStats
	for _, v := range c.Sandboxes() {
		out = append(out, c.sandboxStats(v, stats))
	}
	return out, nil
}

func (c *Controller) containerStats(v ContainerView, stats map[string]libvirttools.DomainStats) ContainerStats {
	cs := ContainerStats{ContainerView: v, Timestamp: c.now().UnixNano()}
	if d, ok := stats[v.Domain]; ok && v.State == ContainerRunning {
		cs.Running = true
		cs.Usage = vm.UsageOf(d)
		if v.Cgroup != nil && c.cgroups != nil {
			if u, err := c.cgroups.Stats(*v.Cgroup); err == nil {
				cs.CgroupUsage = &u
				cs.Usage = vm.Usage{CPUTimeNs: u.CPUNs, WorkingSetBytes: u.WorkingSetBytes, UsageBytes: u.MemoryBytes, RSSBytes: u.RSSBytes}
			} else {
				c.log.Debug("reading the VM's cgroup; libvirt's figures instead", logging.KeyContainerID, v.ID, logging.KeyErr, err)
			}
		}
	}
	cs.RootDiskBytes, cs.HasRootDisk = vm.DiskBytes(v.RootDisk)
	return cs
}

func (c *Controller) sandboxStats(v SandboxView, stats map[string]libvirttools.DomainStats) SandboxStats {
	ps := SandboxStats{SandboxView: v, Timestamp: c.now().UnixNano()}
	var placed *cgroups.Placement
	for _, ct := range c.reg.containersOf(v.ID) {
		cs := c.containerStats(ct.view(), stats)
		ps.Containers = append(ps.Containers, cs)
		ps.CPUTimeNs += cs.CPUTimeNs
		ps.WorkingSetBytes += cs.WorkingSetBytes
		if cs.Cgroup != nil && (placed == nil || cs.Running) {
			placed = cs.Cgroup
		}
	}
	if placed != nil && c.cgroups != nil {
		if u, err := c.cgroups.PodStats(*placed); err == nil {
			ps.CgroupUsage = &u
			ps.CPUTimeNs, ps.WorkingSetBytes = u.CPUNs, u.WorkingSetBytes
		}
	}
	if att := v.LiveNetwork(); att != nil && c.net != nil {
		if usage, err := c.net.Usage(att); err == nil && len(usage) > 0 {
			ps.Network = usage
		}
	}
	return ps
}
