package lifecycle

import (
	"context"

	"github.com/vmpod/vmpod/pkg/cgroups"
	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/vm"
)

// Stats come from the collector's samples (stats_collector.go): a VM's CPU
// and memory from its cgroup when it runs in its pod's (the figures the
// kubelet's cAdvisor reads from the same files), and a pod's from the
// pod's cgroup; a VM of a pod without a cgroup_parent from libvirt
// (vm.UsageOf says what each figure is). The root overlay's allocated
// bytes are the writable layer, and the pod interfaces' counters in the
// netns the pod's network.

// ContainerStats is a container's usage at one moment.
type ContainerStats struct {
	ContainerView
	// Timestamp is when Usage was sampled (Unix nanoseconds); the time of
	// the call when there is no usage.
	Timestamp int64
	// Usage is the VM's; zero unless Running.
	vm.Usage
	// Running says the VM runs and Usage is a sample of it younger than
	// stats_max_age; a stopped VM, or one whose figures libvirt kept
	// skipping, has no usage.
	Running bool
	// CgroupUsage is the usage of the VM's cgroup, which Usage then
	// comes from; nil when the VM does not run in its pod's cgroup.
	CgroupUsage *cgroups.Usage
	// RootDiskBytes is the space the root overlay takes; HasRootDisk says
	// it exists.
	RootDiskBytes uint64
	HasRootDisk   bool
	// DiskTimestamp is when RootDiskBytes was read.
	DiskTimestamp int64
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
	// NetworkTimestamp is when Network was read.
	NetworkTimestamp int64
}

// ContainerStats returns one container's usage.
func (c *Controller) ContainerStats(ctx context.Context, id string) (ContainerStats, error) {
	ct, err := c.reg.container(id)
	if err != nil {
		return ContainerStats{}, err
	}
	vms, _ := c.freshStats(ctx)
	return c.containerStats(ct.view(), vms), nil
}

// AllContainerStats returns the usage of every container past CREATING.
func (c *Controller) AllContainerStats(ctx context.Context) ([]ContainerStats, error) {
	vms, _ := c.freshStats(ctx)
	var out []ContainerStats
	for _, v := range c.Containers() {
		out = append(out, c.containerStats(v, vms))
	}
	return out, nil
}

// SandboxStats returns a pod's usage.
func (c *Controller) SandboxStats(ctx context.Context, id string) (SandboxStats, error) {
	sb, err := c.reg.sandbox(id)
	if err != nil {
		return SandboxStats{}, err
	}
	vms, pods := c.freshStats(ctx)
	return c.sandboxStats(sb.view(), vms, pods), nil
}

// AllSandboxStats returns the usage of every pod.
func (c *Controller) AllSandboxStats(ctx context.Context) ([]SandboxStats, error) {
	vms, pods := c.freshStats(ctx)
	var out []SandboxStats
	for _, v := range c.Sandboxes() {
		out = append(out, c.sandboxStats(v, vms, pods))
	}
	return out, nil
}

// containerStats is a container's usage from its sample: CPU and memory
// only while its record says it runs and the sample is younger than
// stats_max_age.
func (c *Controller) containerStats(v ContainerView, vms map[string]vmSample) ContainerStats {
	now := c.now()
	cs := ContainerStats{ContainerView: v, Timestamp: now.UnixNano(), DiskTimestamp: now.UnixNano()}
	smp, ok := vms[v.ID]
	if !ok {
		return cs
	}
	if v.State == ContainerRunning && !smp.at.IsZero() && now.Sub(smp.at) <= c.statsMaxAge() {
		cs.Running, cs.Usage, cs.CgroupUsage, cs.Timestamp = true, smp.usage, smp.cgroup, smp.at.UnixNano()
	}
	if smp.hasDisk {
		cs.RootDiskBytes, cs.HasRootDisk, cs.DiskTimestamp = smp.disk, true, smp.diskAt.UnixNano()
	}
	return cs
}

// sandboxStats adds up the pod's containers' usage (its cgroup's instead
// when a VM of it was placed there); its timestamp is the oldest of the
// figures it adds up.
func (c *Controller) sandboxStats(v SandboxView, vms map[string]vmSample, pods map[string]podSample) SandboxStats {
	ps := SandboxStats{SandboxView: v, Timestamp: c.now().UnixNano()}
	var oldest int64
	for _, ct := range c.reg.containersOf(v.ID) {
		if ct.Get().State == ContainerCreating {
			continue
		}
		cs := c.containerStats(ct.view(), vms)
		ps.Containers = append(ps.Containers, cs)
		if cs.Running {
			ps.CPUTimeNs += cs.CPUTimeNs
			ps.WorkingSetBytes += cs.WorkingSetBytes
			if oldest == 0 || cs.Timestamp < oldest {
				oldest = cs.Timestamp
			}
		}
	}
	if oldest != 0 {
		ps.Timestamp = oldest
	}
	p, ok := pods[v.ID]
	if !ok {
		return ps
	}
	if p.cgroup != nil && c.now().Sub(p.cgroupAt) <= c.statsMaxAge() {
		ps.CgroupUsage, ps.Timestamp = p.cgroup, p.cgroupAt.UnixNano()
		ps.CPUTimeNs, ps.WorkingSetBytes = p.cgroup.CPUNs, p.cgroup.WorkingSetBytes
	}
	if len(p.net) > 0 && v.LiveNetwork() != nil {
		ps.Network, ps.NetworkTimestamp = p.net, p.netAt.UnixNano()
	}
	return ps
}
