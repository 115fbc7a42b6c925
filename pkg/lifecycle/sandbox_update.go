package lifecycle

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// UpdateSandboxResources takes the pod's new overhead and resources after
// the kubelet resized the pod's cgroup (which it writes itself). The
// overhead is recorded, and a VM running in the pod's cgroup gets its
// memory limit (guest RAM plus the overhead) changed live; the pod-level
// resources are the kubelet's own to enforce. A nil overhead changes
// nothing. A memory limit the kernel cannot reclaim down to fails with
// FailedPrecondition (the overhead stays recorded: the next start of the
// VM uses it).
func (c *Controller) UpdateSandboxResources(ctx context.Context, id string, overhead, resources *runtimeapi.LinuxContainerResources) error {
	sb, err := c.reg.sandbox(id)
	if err != nil {
		return err
	}
	if overhead == nil {
		return nil
	}
	if overhead.GetMemoryLimitInBytes() < 0 || overhead.GetCpuQuota() < 0 {
		return fmt.Errorf("pod sandbox %s: a negative overhead (memory %d bytes, CPU quota %d): %w",
			id, overhead.GetMemoryLimitInBytes(), overhead.GetCpuQuota(), errdefs.ErrInvalidArgument)
	}
	raw, err := protojson.Marshal(overhead)
	if err != nil {
		return err
	}
	// Recorded first: a VM that starts from now on is planned with it,
	// one that started before is updated below (its op lock orders the
	// two).
	if _, err := sb.Update(func(r *SandboxRecord) error { r.Overhead = raw; return nil }); err != nil {
		return fmt.Errorf("store sandbox record: %w", err)
	}
	for _, ct := range c.reg.containersOf(id) {
		if err := c.updateVMOverhead(ct, overhead); err != nil {
			return err
		}
	}
	return nil
}

// updateVMOverhead changes a running placed VM's limits for a new pod
// overhead.
func (c *Controller) updateVMOverhead(ct *container, overhead *runtimeapi.LinuxContainerResources) error {
	ct.op.Lock()
	defer ct.op.Unlock()
	rec := ct.Get()
	if rec.State != ContainerRunning || rec.Cgroup == nil || c.cgroups == nil {
		return nil
	}
	l := c.vmLimits(rec.VM, overhead)
	if l == rec.Cgroup.Limits {
		return nil
	}
	p, err := c.cgroups.SetLimits(*rec.Cgroup, l)
	if err != nil {
		return fmt.Errorf("update the cgroup limits of container %s: %w", rec.ID, err)
	}
	_, err = ct.Update(func(r *ContainerRecord) error { r.Cgroup = &p; return nil })
	return err
}
