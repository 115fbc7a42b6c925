package podspec

import (
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// Shape is a container's VM as resolved from the pod's options, the
// container's Linux resources and the runtime handler. It is stored with
// the container record (the JSON names are the record format).
type Shape struct {
	Handler        string `json:"handler"`
	DomainType     string `json:"domain_type"`
	VCPUs          int    `json:"vcpus"`
	MemoryBytes    int64  `json:"memory_bytes"`
	RootVolumeSize int64  `json:"root_volume_size,omitempty"`
	DiskBus        string `json:"disk_bus"`
	CPUModel       string `json:"cpu_model,omitempty"`
	Firmware       string `json:"firmware"`
	CPUShares      uint64 `json:"cpu_shares,omitempty"`
	CPUQuotaUS     int64  `json:"cpu_quota_us,omitempty"`
	CPUPeriodUS    uint64 `json:"cpu_period_us,omitempty"`
	TBCacheMiB     int    `json:"tb_cache_mib,omitempty"`
	CgroupParent   string `json:"cgroup_parent,omitempty"`
	// VCPUsFixed and MemoryFixed say the annotations set vCPUs and memory,
	// so resource limits do not shape them.
	VCPUsFixed  bool `json:"vcpus_fixed,omitempty"`
	MemoryFixed bool `json:"memory_fixed,omitempty"`
}

// VCPUsForCPULimit is the one rule from a CFS CPU limit to vCPUs: the
// limit (quota/period CPUs) rounded up to whole vCPUs, at most MaxVCPUs; 0
// when there is no limit (quota or period not above 0).
func VCPUsForCPULimit(quota, period int64) int {
	if quota <= 0 || period <= 0 {
		return 0
	}
	n := quota / period // no overflow: quota + period - 1 could
	if quota%period != 0 {
		n++
	}
	return int(min(n, MaxVCPUs))
}

// DomainType is the libvirt domain type for a resolved accelerator: kvm,
// or qemu (TCG) for tcg. "auto" is resolved once at start-up
// (config.Config.ResolveAccelerators), never here.
func DomainType(accel string) string {
	if accel == "kvm" {
		return libvirttools.DomainTypeKVM
	}
	return libvirttools.DomainTypeQEMU
}

// ResolveShape combines the handler, the pod's VM options and the
// container's Linux resources into the VM's shape, within the node's
// limits. Guest RAM set by annotation must fit the container's memory
// limit when it has one (the guest would use memory the pod is not
// allowed). Errors wrap errdefs.ErrInvalidArgument and say what to change.
func ResolveShape(h config.Handler, defaultMemoryMiB int, l Limits, o VMOptions, res *runtimeapi.LinuxContainerResources, cgroupParent string, imageVirtualSize int64) (Shape, error) {
	if err := (Options{VM: o}).Check(l); err != nil {
		return Shape{}, err
	}
	s := Shape{
		Handler:      h.Name,
		DomainType:   DomainType(h.Accelerator),
		VCPUs:        1,
		MemoryBytes:  int64(defaultMemoryMiB) << 20,
		DiskBus:      o.DiskBusOrDefault(),
		CPUModel:     o.CPUModel,
		Firmware:     o.FirmwareOrDefault(),
		CgroupParent: cgroupParent,
	}
	if n := VCPUsForCPULimit(res.GetCpuQuota(), res.GetCpuPeriod()); n > 0 {
		s.VCPUs = n
		if l.MaxVCPUs > 0 {
			s.VCPUs = min(n, l.MaxVCPUs)
		}
		s.CPUQuotaUS, s.CPUPeriodUS = res.GetCpuQuota(), uint64(res.GetCpuPeriod())
	}
	if sh := res.GetCpuShares(); sh > 0 {
		s.CPUShares = uint64(sh)
	}
	limit := res.GetMemoryLimitInBytes()
	if limit > 0 {
		s.MemoryBytes = limit
	}
	if o.VCPUs > 0 {
		s.VCPUs, s.VCPUsFixed = o.VCPUs, true
	}
	if o.MemoryBytes > 0 {
		if limit > 0 && o.MemoryBytes > limit {
			return Shape{}, fmt.Errorf("annotation %s=%d bytes is above the container's memory limit of %d bytes; the guest would use memory the pod is not allowed: lower the annotation or raise the limit: %w",
				AnnMemory, o.MemoryBytes, limit, errdefs.ErrInvalidArgument)
		}
		s.MemoryBytes, s.MemoryFixed = o.MemoryBytes, true
	}
	if l.MaxMemoryBytes > 0 && s.MemoryBytes > l.MaxMemoryBytes {
		return Shape{}, fmt.Errorf("guest RAM of %d bytes (the container's memory limit) is above the %d bytes this node allows (config key max_vm_memory); lower the limit or set %s: %w",
			s.MemoryBytes, l.MaxMemoryBytes, AnnMemory, errdefs.ErrInvalidArgument)
	}
	if s.MemoryBytes < libvirttools.MinMemoryBytes {
		return Shape{}, fmt.Errorf("memory limit %d bytes is below the 64Mi a VM needs; raise the container's memory limit or set %s: %w",
			s.MemoryBytes, AnnMemory, errdefs.ErrInvalidArgument)
	}
	if o.RootVolumeSize > 0 {
		if o.RootVolumeSize < imageVirtualSize {
			return Shape{}, fmt.Errorf("annotation %s=%d bytes is smaller than the image's virtual size %d bytes; it can only grow the disk: %w",
				AnnRootVolumeSize, o.RootVolumeSize, imageVirtualSize, errdefs.ErrInvalidArgument)
		}
		s.RootVolumeSize = o.RootVolumeSize
	}
	if s.DomainType == libvirttools.DomainTypeQEMU {
		s.TBCacheMiB = h.TCGTBCacheMiB
		if s.CPUModel == libvirttools.CPUModeHostPassthrough {
			return Shape{}, fmt.Errorf("annotation %s=host-passthrough needs KVM, but handler %q runs guests under TCG; use host-model or a model name: %w",
				AnnCPUModel, h.Name, errdefs.ErrInvalidArgument)
		}
	}
	return s, nil
}
