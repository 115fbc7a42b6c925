package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// UpdateContainerResources applies CPU shares and quota live (libvirt
// <cputune>, safe on a running VM). A change that would change the guest's
// memory, or need more vCPUs than the VM has, needs memory/CPU hotplug the
// guest may not support, so it fails with FailedPrecondition; recreate the
// pod instead. When vmpod.dev/memory or vmpod.dev/vcpus fix the VM's shape,
// limits do not change it and are accepted.
func (s *Service) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	c, err := s.state.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	res := req.GetLinux()
	if res == nil {
		return &runtimeapi.UpdateContainerResourcesResponse{}, nil
	}
	c.op.Lock()
	defer c.op.Unlock()
	rec, cfg := c.snapshot()
	vm := rec.VM
	if m := res.GetMemoryLimitInBytes(); m > 0 && !vm.MemoryFixed && m != vm.MemoryBytes {
		return nil, fmt.Errorf("container %s: changing guest memory from %d to %d bytes on a live VM is not supported; recreate the pod: %w",
			rec.ID, vm.MemoryBytes, m, errdefs.ErrFailedPrecondition)
	}
	if q, p := res.GetCpuQuota(), res.GetCpuPeriod(); q > 0 && p > 0 {
		if n := int((q + p - 1) / p); !vm.VCPUsFixed && n > vm.VCPUs {
			return nil, fmt.Errorf("container %s: a CPU limit of %.2f CPUs needs %d vCPUs but the VM has %d; adding vCPUs to a live VM is not supported, recreate the pod: %w",
				rec.ID, float64(q)/float64(p), n, vm.VCPUs, errdefs.ErrFailedPrecondition)
		}
		vm.CPUQuotaUS, vm.CPUPeriodUS = q, uint64(p)
	}
	if sh := res.GetCpuShares(); sh > 0 {
		vm.CPUShares = uint64(sh)
	}
	if vm != rec.VM {
		if err := s.libvirt.SetCPUTune(ctx, rec.Domain, vm.CPUShares, vm.CPUPeriodUS, vm.CPUQuotaUS); err != nil {
			return nil, fmt.Errorf("update cputune of %s: %w", rec.Domain, err)
		}
	}
	applied := proto.Clone(decodeResources(rec.Resources, cfg.GetLinux().GetResources())).(*runtimeapi.LinuxContainerResources)
	if applied == nil {
		applied = &runtimeapi.LinuxContainerResources{}
	}
	proto.Merge(applied, res)
	raw, err := encodeResources(applied)
	if err != nil {
		return nil, err
	}
	rec.VM, rec.Resources = vm, raw
	if err := s.state.saveContainer(rec); err != nil {
		return nil, err
	}
	c.setRec(rec)
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}
