package cri

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// Pod annotations that shape the VM. The kubelet passes the pod's
// annotations in the PodSandboxConfig (to RunPodSandbox and again to
// CreateContainer); container-level annotations of the same name win.
const (
	annVCPUs          = "vmpod.dev/vcpus"
	annMemory         = "vmpod.dev/memory"
	annRootVolumeSize = "vmpod.dev/root-volume-size"
	annDiskBus        = "vmpod.dev/disk-bus"
	annCPUModel       = "vmpod.dev/cpu-model"
	annFirmware       = "vmpod.dev/firmware"
)

// annPrefix starts every annotation vmpod reads; an unknown one with this
// prefix is refused, so a typo does not pass silently.
const annPrefix = "vmpod.dev/"

var knownAnnotations = append([]string{annVCPUs, annMemory, annRootVolumeSize, annDiskBus, annCPUModel, annFirmware}, cloudinit.Annotations...)

const maxVCPUs = 64

var cpuModelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// vmSpec is the VM shape resolved from the pod, its annotations, its
// resources and the runtime handler. It is stored with the container.
type vmSpec struct {
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

// vmAnnotations are the validated vmpod.dev/* annotations.
type vmAnnotations struct {
	vcpus          int
	memory         int64
	rootVolumeSize int64
	diskBus        string
	cpuModel       string
	firmware       string
}

// parseAnnotations validates every vmpod.dev/* annotation of the merged
// maps (later maps win) and returns them; all problems are reported at once,
// each naming the annotation and what it accepts.
func parseAnnotations(sources ...map[string]string) (vmAnnotations, error) {
	ann := map[string]string{}
	for _, m := range sources {
		for k, v := range m {
			ann[k] = v
		}
	}
	var a vmAnnotations
	var errs []error
	bad := func(key, val, accepted string) {
		errs = append(errs, fmt.Errorf("annotation %s=%q is invalid: accepted values are %s", key, val, accepted))
	}
	for _, k := range slices.Sorted(maps.Keys(ann)) {
		if strings.HasPrefix(k, annPrefix) && !slices.Contains(knownAnnotations, k) {
			errs = append(errs, fmt.Errorf("annotation %s is not one vmpod knows (a typo?); known: %s", k, strings.Join(knownAnnotations, ", ")))
		}
	}
	if v, ok := ann[annVCPUs]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxVCPUs {
			bad(annVCPUs, v, fmt.Sprintf("an integer from 1 to %d", maxVCPUs))
		}
		a.vcpus = n
	}
	if v, ok := ann[annMemory]; ok {
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Value() < libvirttools.MinMemoryBytes {
			bad(annMemory, v, "a quantity of at least 64Mi (e.g. 512Mi, 2Gi)")
		}
		a.memory = q.Value()
	}
	if v, ok := ann[annRootVolumeSize]; ok {
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Value() <= 0 {
			bad(annRootVolumeSize, v, "a positive quantity no smaller than the image's virtual size (e.g. 10Gi)")
		}
		a.rootVolumeSize = q.Value()
	}
	a.diskBus = libvirttools.DiskBusVirtio
	if v, ok := ann[annDiskBus]; ok {
		switch v {
		case libvirttools.DiskBusVirtio, libvirttools.DiskBusSCSI, libvirttools.DiskBusSATA:
			a.diskBus = v
		default:
			bad(annDiskBus, v, "virtio, scsi or sata")
		}
	}
	if v, ok := ann[annCPUModel]; ok {
		if v != libvirttools.CPUModeHostModel && v != libvirttools.CPUModeHostPassthrough && !cpuModelRE.MatchString(v) {
			bad(annCPUModel, v, "host-model, host-passthrough or a libvirt CPU model name (virsh cpu-models x86_64)")
		}
		a.cpuModel = v
	}
	a.firmware = libvirttools.FirmwareBIOS
	if v, ok := ann[annFirmware]; ok {
		switch v {
		case libvirttools.FirmwareBIOS, libvirttools.FirmwareUEFI:
			a.firmware = v
		default:
			bad(annFirmware, v, "bios or uefi")
		}
	}
	if err := cloudinit.ValidateAnnotations(ann); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return vmAnnotations{}, fmt.Errorf("%w: %w", errors.Join(errs...), errdefs.ErrInvalidArgument)
	}
	return a, nil
}

// domainType picks the libvirt domain type for an accelerator setting.
func domainType(accel string) string {
	switch accel {
	case "kvm":
		return libvirttools.DomainTypeKVM
	case "tcg":
		return libvirttools.DomainTypeQEMU
	}
	// auto: KVM when /dev/kvm can be opened.
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		return libvirttools.DomainTypeKVM
	}
	return libvirttools.DomainTypeQEMU
}

// resolveVMSpec combines the handler, the annotations and the container's
// Linux resources into the VM's shape.
func resolveVMSpec(cfg config.Config, h config.Handler, a vmAnnotations, res *runtimeapi.LinuxContainerResources, cgroupParent string, imageVirtualSize int64) (vmSpec, error) {
	s := vmSpec{
		Handler:      h.Name,
		DomainType:   domainType(h.Accelerator),
		VCPUs:        1,
		MemoryBytes:  int64(cfg.DefaultMemoryMiB) << 20,
		DiskBus:      a.diskBus,
		CPUModel:     a.cpuModel,
		Firmware:     a.firmware,
		CgroupParent: cgroupParent,
	}
	if q, p := res.GetCpuQuota(), res.GetCpuPeriod(); q > 0 && p > 0 {
		s.VCPUs = int((q + p - 1) / p) // limits round up to whole vCPUs
		s.CPUQuotaUS, s.CPUPeriodUS = q, uint64(p)
	}
	if sh := res.GetCpuShares(); sh > 0 {
		s.CPUShares = uint64(sh)
	}
	if m := res.GetMemoryLimitInBytes(); m > 0 {
		s.MemoryBytes = m
	}
	if a.vcpus > 0 {
		s.VCPUs, s.VCPUsFixed = a.vcpus, true
	}
	if a.memory > 0 {
		s.MemoryBytes, s.MemoryFixed = a.memory, true
	}
	if s.VCPUs > maxVCPUs {
		s.VCPUs = maxVCPUs
	}
	if s.MemoryBytes < libvirttools.MinMemoryBytes {
		return vmSpec{}, fmt.Errorf("memory limit %d bytes is below the 64Mi a VM needs; raise the container's memory limit or set %s: %w",
			s.MemoryBytes, annMemory, errdefs.ErrInvalidArgument)
	}
	if a.rootVolumeSize > 0 {
		if a.rootVolumeSize < imageVirtualSize {
			return vmSpec{}, fmt.Errorf("annotation %s=%d bytes is smaller than the image's virtual size %d bytes; it can only grow the disk: %w",
				annRootVolumeSize, a.rootVolumeSize, imageVirtualSize, errdefs.ErrInvalidArgument)
		}
		s.RootVolumeSize = a.rootVolumeSize
	}
	if s.DomainType == libvirttools.DomainTypeQEMU {
		s.TBCacheMiB = h.TCGTBCacheMiB
		if s.CPUModel == libvirttools.CPUModeHostPassthrough {
			return vmSpec{}, fmt.Errorf("annotation %s=host-passthrough needs KVM, but handler %q runs guests under TCG; use host-model or a model name: %w",
				annCPUModel, h.Name, errdefs.ErrInvalidArgument)
		}
	}
	return s, nil
}
