package lifecycle

import (
	"context"

	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/vm"
)

// Stats read every running VM's usage with one bulk libvirt call (cheap
// enough for the kubelet's polling; vm.UsageOf says what each figure is),
// the root overlay's allocated bytes as the writable layer, and for pods
// the pod interfaces' counters in the netns.

// ContainerStats is a container's usage at one moment.
type ContainerStats struct {
	ContainerView
	// Timestamp is when the usage was read (Unix nanoseconds).
	Timestamp int64
	// Usage is the VM's; zero unless the VM runs.
	vm.Usage
	// Running says the VM runs and Usage is its.
	Running bool
	// RootDiskBytes is the space the root overlay takes; HasRootDisk says
	// it exists.
	RootDiskBytes uint64
	HasRootDisk   bool
}

// InterfaceUsage is a pod interface's traffic counters.
type InterfaceUsage = cni.Usage

// SandboxStats is a pod's usage at one moment: its VM's.
type SandboxStats struct {
	SandboxView
	Timestamp  int64
	Containers []ContainerStats
	// CPUTimeNs and WorkingSetBytes add up the containers'.
	CPUTimeNs, WorkingSetBytes uint64
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
	}
	cs.RootDiskBytes, cs.HasRootDisk = vm.DiskBytes(v.RootDisk)
	return cs
}

func (c *Controller) sandboxStats(v SandboxView, stats map[string]libvirttools.DomainStats) SandboxStats {
	ps := SandboxStats{SandboxView: v, Timestamp: c.now().UnixNano()}
	for _, ct := range c.reg.containersOf(v.ID) {
		cs := c.containerStats(ct.view(), stats)
		ps.Containers = append(ps.Containers, cs)
		ps.CPUTimeNs += cs.CPUTimeNs
		ps.WorkingSetBytes += cs.WorkingSetBytes
	}
	if att := v.LiveNetwork(); att != nil && c.net != nil {
		if usage, err := c.net.Usage(att); err == nil && len(usage) > 0 {
			ps.Network = usage
		}
	}
	return ps
}
