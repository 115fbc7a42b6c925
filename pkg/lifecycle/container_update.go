package lifecycle

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/podspec"
)

// UpdateContainerResources applies CPU shares and quota live (libvirt
// <cputune>, safe on a running VM). A change that would change the guest's
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
	if vm != cur.VM {
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
		r.VM, r.Resources = vm, raw
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
