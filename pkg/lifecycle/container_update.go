package lifecycle

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/podspec"
)

// UpdateContainerResources applies CPU shares and quota live: in the VM's
// cgroup when it runs in its pod's (a VM not started yet gets them when
// it starts), else through libvirt's <cputune> (safe on a running VM). A change that would change the guest's
// memory, or need more vCPUs than the VM has, needs memory/CPU hotplug the
// guest may not support, so it fails with FailedPrecondition; recreate the
// pod instead. When vmpod.dev/memory or vmpod.dev/vcpus fix the VM's shape,
// limits do not change it and are accepted. A nil res changes nothing.
func (c *Controller) UpdateContainerResources(ctx context.Context, id string, res *runtimeapi.LinuxContainerResources) error {
	ct, err := c.reg.container(id)
	if err != nil {
		return err
	}
	if res == nil {
		return nil
	}
	ct.op.Lock()
	defer ct.op.Unlock()
	cur := ct.view()
	vm := cur.VM
	if m := res.GetMemoryLimitInBytes(); m > 0 && !vm.MemoryFixed && m != vm.MemoryBytes {
		return fmt.Errorf("container %s: changing guest memory from %d to %d bytes on a live VM is not supported; recreate the pod: %w",
			cur.ID, vm.MemoryBytes, m, errdefs.ErrFailedPrecondition)
	}
	if n := podspec.VCPUsForCPULimit(res.GetCpuQuota(), res.GetCpuPeriod()); n > 0 {
		if !vm.VCPUsFixed && n > vm.VCPUs {
			return fmt.Errorf("container %s: a CPU limit of %.2f CPUs needs %d vCPUs but the VM has %d; adding vCPUs to a live VM is not supported, recreate the pod: %w",
				cur.ID, float64(res.GetCpuQuota())/float64(res.GetCpuPeriod()), n, vm.VCPUs, errdefs.ErrFailedPrecondition)
		}
		vm.CPUQuotaUS, vm.CPUPeriodUS = res.GetCpuQuota(), uint64(res.GetCpuPeriod())
	}
	if sh := res.GetCpuShares(); sh > 0 {
		vm.CPUShares = uint64(sh)
	}
	placement := cur.Cgroup
	switch {
	case vm == cur.VM:
	case cur.Cgroup != nil && cur.State == ContainerRunning:
		// The VM runs in its pod's cgroup: the limits are there.
		sb, err := c.reg.sandbox(cur.SandboxID)
		if err != nil {
			return err
		}
		p, err := c.cgroups.SetLimits(*cur.Cgroup, c.vmLimits(vm, sandboxOverhead(sb.Get(), sb.config)))
		if err != nil {
			return fmt.Errorf("update the cgroup limits of container %s: %w", cur.ID, err)
		}
		placement = &p
	case cur.Cgroup == nil && cur.VM.CgroupParent == "":
		if err := c.libvirt.SetCPUTune(ctx, cur.Domain, vm.CPUShares, vm.CPUPeriodUS, vm.CPUQuotaUS); err != nil {
			return fmt.Errorf("update cputune of %s: %w", cur.Domain, err)
		}
	}
	applied := proto.Clone(cur.AppliedResources()).(*runtimeapi.LinuxContainerResources)
	if applied == nil {
		applied = &runtimeapi.LinuxContainerResources{}
	}
	proto.Merge(applied, res)
	raw, err := encodeResources(applied)
	if err != nil {
		return err
	}
	_, err = ct.Update(func(r *ContainerRecord) error {
		r.VM, r.Resources, r.Cgroup = vm, raw, placement
		return nil
	})
	return err
}

// ReopenLog reopens the container's log file after the kubelet rotated it.
func (c *Controller) ReopenLog(id string) error {
	ct, err := c.reg.container(id)
	if err != nil {
		return err
	}
	con := ct.getConsole()
	if con == nil {
		return fmt.Errorf("container %s is not running; its log is closed: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err := con.ReopenLog(); err != nil {
		return fmt.Errorf("reopen log of %s: %w", id, err)
	}
	return nil
}
