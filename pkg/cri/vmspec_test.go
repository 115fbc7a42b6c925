package cri

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/libvirttools"
)

func TestParseAnnotations(t *testing.T) {
	defaults := vmAnnotations{diskBus: libvirttools.DiskBusVirtio, firmware: libvirttools.FirmwareBIOS}
	with := func(f func(*vmAnnotations)) vmAnnotations { a := defaults; f(&a); return a }
	for _, tc := range []struct {
		name string
		maps []map[string]string
		want vmAnnotations
	}{
		{"none", nil, defaults},
		{"other annotations ignored", []map[string]string{{"io.kubernetes.pod.terminationGracePeriod": "30", "example.com/vcpus": "x"}}, defaults},
		{"all", []map[string]string{{
			annVCPUs: "4", annMemory: "2Gi", annRootVolumeSize: "10Gi", annDiskBus: "scsi", annCPUModel: "host-passthrough", annFirmware: "uefi",
		}}, vmAnnotations{vcpus: 4, memory: 2 << 30, rootVolumeSize: 10 << 30, diskBus: "scsi", cpuModel: "host-passthrough", firmware: "uefi"}},
		{"decimal quantities", []map[string]string{{annMemory: "1G", annRootVolumeSize: "20G"}},
			with(func(a *vmAnnotations) { a.memory, a.rootVolumeSize = 1e9, 20e9 })},
		{"smallest memory", []map[string]string{{annMemory: "64Mi"}}, with(func(a *vmAnnotations) { a.memory = 64 << 20 })},
		{"most vcpus", []map[string]string{{annVCPUs: "64"}}, with(func(a *vmAnnotations) { a.vcpus = 64 })},
		{"sata", []map[string]string{{annDiskBus: "sata"}}, with(func(a *vmAnnotations) { a.diskBus = "sata" })},
		{"host-model", []map[string]string{{annCPUModel: "host-model"}}, with(func(a *vmAnnotations) { a.cpuModel = "host-model" })},
		{"named model", []map[string]string{{annCPUModel: "EPYC-Rome-v4"}}, with(func(a *vmAnnotations) { a.cpuModel = "EPYC-Rome-v4" })},
		{"later map wins", []map[string]string{{annVCPUs: "2", annDiskBus: "sata"}, {annVCPUs: "4"}},
			with(func(a *vmAnnotations) { a.vcpus, a.diskBus = 4, "sata" })},
		{"later map overrides a bad value", []map[string]string{{annVCPUs: "many"}, {annVCPUs: "2"}},
			with(func(a *vmAnnotations) { a.vcpus = 2 })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseAnnotations(tc.maps...)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseAnnotationsInvalid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		mention []string
	}{
		{"vcpus 0", map[string]string{annVCPUs: "0"}, []string{annVCPUs, `"0"`, "1 to 64"}},
		{"vcpus 65", map[string]string{annVCPUs: "65"}, []string{annVCPUs}},
		{"vcpus fraction", map[string]string{annVCPUs: "1.5"}, []string{annVCPUs}},
		{"memory below 64Mi", map[string]string{annMemory: "63Mi"}, []string{annMemory, "64Mi"}},
		{"memory garbage", map[string]string{annMemory: "2 GB"}, []string{annMemory}},
		{"memory negative", map[string]string{annMemory: "-1Gi"}, []string{annMemory}},
		{"root volume zero", map[string]string{annRootVolumeSize: "0"}, []string{annRootVolumeSize}},
		{"root volume negative", map[string]string{annRootVolumeSize: "-10Gi"}, []string{annRootVolumeSize}},
		{"root volume garbage", map[string]string{annRootVolumeSize: "big"}, []string{annRootVolumeSize}},
		{"disk bus ide", map[string]string{annDiskBus: "ide"}, []string{annDiskBus, "virtio, scsi or sata"}},
		{"disk bus case", map[string]string{annDiskBus: "VirtIO"}, []string{annDiskBus}},
		{"firmware", map[string]string{annFirmware: "efi"}, []string{annFirmware, "bios or uefi"}},
		{"cpu model empty", map[string]string{annCPUModel: ""}, []string{annCPUModel}},
		{"cpu model space", map[string]string{annCPUModel: "Skylake Client"}, []string{annCPUModel}},
		{"cpu model leading dash", map[string]string{annCPUModel: "-cpu"}, []string{annCPUModel}},
		{"cpu model too long", map[string]string{annCPUModel: strings.Repeat("a", 65)}, []string{annCPUModel}},
		{"cpu model markup", map[string]string{annCPUModel: "<model>"}, []string{annCPUModel}},
		{"unknown vmpod annotation", map[string]string{"vmpod.dev/cpus": "2"}, []string{"vmpod.dev/cpus", "typo", annVCPUs}},
		{"all problems at once", map[string]string{annVCPUs: "0", annDiskBus: "ide", annFirmware: "efi", annMemory: "1Ki"},
			[]string{annVCPUs, annDiskBus, annFirmware, annMemory}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseAnnotations(map[string]string{"unrelated": "x"}, tc.ann)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
		})
	}
}

func TestResolveVMSpec(t *testing.T) {
	cfg := config.Default()
	cfg.Accelerator = "tcg"
	cfg.DefaultMemoryMiB = 256
	cfg.Runtimes = map[string]config.Runtime{"vmpod": {}, "kvm": {Accelerator: "kvm"}, "small": {TCGTBCacheMiB: 128}}
	const imageSize = 2 << 30
	base := vmSpec{
		Handler: "vmpod", DomainType: libvirttools.DomainTypeQEMU, VCPUs: 1, MemoryBytes: 256 << 20,
		DiskBus: libvirttools.DiskBusVirtio, Firmware: libvirttools.FirmwareBIOS, TBCacheMiB: 1024,
	}
	with := func(f func(*vmSpec)) vmSpec { s := base; f(&s); return s }
	res := func(quota, period, shares, mem int64) *runtimeapi.LinuxContainerResources {
		return &runtimeapi.LinuxContainerResources{CpuQuota: quota, CpuPeriod: period, CpuShares: shares, MemoryLimitInBytes: mem}
	}
	for _, tc := range []struct {
		name    string
		handler string
		ann     map[string]string
		res     *runtimeapi.LinuxContainerResources
		cgroup  string
		want    vmSpec
		wantErr string // substring of an InvalidArgument error
	}{
		{name: "defaults", want: base},
		{name: "kvm handler", handler: "kvm", ann: map[string]string{annCPUModel: "host-passthrough"},
			want: with(func(s *vmSpec) {
				s.Handler, s.DomainType, s.TBCacheMiB, s.CPUModel = "kvm", libvirttools.DomainTypeKVM, 0, "host-passthrough"
			})},
		{name: "handler tb cache", handler: "small", want: with(func(s *vmSpec) { s.Handler, s.TBCacheMiB = "small", 128 })},
		{name: "quota 1.5 CPUs", res: res(150000, 100000, 0, 0),
			want: with(func(s *vmSpec) { s.VCPUs, s.CPUQuotaUS, s.CPUPeriodUS = 2, 150000, 100000 })},
		{name: "quota just over 1 CPU", res: res(100001, 100000, 0, 0),
			want: with(func(s *vmSpec) { s.VCPUs, s.CPUQuotaUS, s.CPUPeriodUS = 2, 100001, 100000 })},
		{name: "quota just under 1 CPU", res: res(99999, 100000, 0, 0),
			want: with(func(s *vmSpec) { s.VCPUs, s.CPUQuotaUS, s.CPUPeriodUS = 1, 99999, 100000 })},
		{name: "quota with a short period", res: res(30000, 10000, 0, 0),
			want: with(func(s *vmSpec) { s.VCPUs, s.CPUQuotaUS, s.CPUPeriodUS = 3, 30000, 10000 })},
		{name: "quota beyond 64 CPUs is capped", res: res(100*100000, 100000, 0, 0),
			want: with(func(s *vmSpec) { s.VCPUs, s.CPUQuotaUS, s.CPUPeriodUS = 64, 100*100000, 100000 })},
		{name: "quota without period ignored", res: res(150000, 0, 0, 0), want: base},
		{name: "unlimited quota ignored", res: res(-1, 100000, 0, 0), want: base},
		{name: "shares", res: res(0, 0, 2048, 0), want: with(func(s *vmSpec) { s.CPUShares = 2048 })},
		{name: "memory limit", res: res(0, 0, 0, 3<<30), want: with(func(s *vmSpec) { s.MemoryBytes = 3 << 30 })},
		{name: "annotations win over resources", ann: map[string]string{annVCPUs: "2", annMemory: "1Gi"}, res: res(400000, 100000, 0, 3<<30),
			want: with(func(s *vmSpec) {
				s.VCPUs, s.MemoryBytes, s.CPUQuotaUS, s.CPUPeriodUS = 2, 1<<30, 400000, 100000
				s.VCPUsFixed, s.MemoryFixed = true, true
			})},
		{name: "disk, firmware, model", ann: map[string]string{annDiskBus: "sata", annFirmware: "uefi", annCPUModel: "qemu64"},
			want: with(func(s *vmSpec) { s.DiskBus, s.Firmware, s.CPUModel = "sata", "uefi", "qemu64" })},
		{name: "cgroup parent", cgroup: "/kubepods/burstable/podabc", want: with(func(s *vmSpec) { s.CgroupParent = "/kubepods/burstable/podabc" })},
		{name: "root volume larger than the image", ann: map[string]string{annRootVolumeSize: "3Gi"},
			want: with(func(s *vmSpec) { s.RootVolumeSize = 3 << 30 })},
		{name: "root volume as large as the image", ann: map[string]string{annRootVolumeSize: "2Gi"},
			want: with(func(s *vmSpec) { s.RootVolumeSize = 2 << 30 })},
		{name: "root volume smaller than the image", ann: map[string]string{annRootVolumeSize: "1Gi"}, wantErr: annRootVolumeSize},
		{name: "memory limit below 64Mi", res: res(0, 0, 0, 32<<20), wantErr: "64Mi"},
		{name: "host-passthrough under TCG", ann: map[string]string{annCPUModel: "host-passthrough"}, wantErr: "needs KVM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := parseAnnotations(tc.ann)
			if err != nil {
				t.Fatal(err)
			}
			h, err := cfg.ResolveHandler(tc.handler)
			if err != nil {
				t.Fatal(err)
			}
			got, err := resolveVMSpec(cfg, h, a, tc.res, tc.cgroup, imageSize)
			if tc.wantErr != "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want InvalidArgument mentioning %q (spec %+v)", err, tc.wantErr, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDomainType(t *testing.T) {
	auto := libvirttools.DomainTypeQEMU
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		auto = libvirttools.DomainTypeKVM
	}
	for accel, want := range map[string]string{
		"kvm": libvirttools.DomainTypeKVM, "tcg": libvirttools.DomainTypeQEMU, "auto": auto,
	} {
		if got := domainType(accel); got != want {
			t.Errorf("domainType(%q) = %q, want %q", accel, got, want)
		}
	}
}
