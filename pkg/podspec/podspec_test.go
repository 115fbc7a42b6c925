package podspec

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/libvirttools"
)

func TestParseVM(t *testing.T) {
	with := func(f func(*VMOptions)) VMOptions { var a VMOptions; f(&a); return a }
	for _, tc := range []struct {
		name string
		maps []map[string]string // the pod's, then the container's
		want VMOptions
	}{
		{"none", nil, VMOptions{}},
		{"other annotations ignored", []map[string]string{{"io.kubernetes.pod.terminationGracePeriod": "30", "example.com/vcpus": "x"}}, VMOptions{}},
		{"all", []map[string]string{{
			AnnVCPUs: "4", AnnMemory: "2Gi", AnnRootVolumeSize: "10Gi", AnnDiskBus: "scsi", AnnCPUModel: "host-passthrough", AnnFirmware: "uefi",
		}}, VMOptions{VCPUs: 4, MemoryBytes: 2 << 30, RootVolumeSize: 10 << 30, DiskBus: "scsi", CPUModel: "host-passthrough", Firmware: "uefi"}},
		{"decimal quantities", []map[string]string{{AnnMemory: "1G", AnnRootVolumeSize: "20G"}},
			with(func(a *VMOptions) { a.MemoryBytes, a.RootVolumeSize = 1e9, 20e9 })},
		{"smallest memory", []map[string]string{{AnnMemory: "64Mi"}}, with(func(a *VMOptions) { a.MemoryBytes = 64 << 20 })},
		{"most vcpus", []map[string]string{{AnnVCPUs: "64"}}, with(func(a *VMOptions) { a.VCPUs = 64 })},
		{"sata", []map[string]string{{AnnDiskBus: "sata"}}, with(func(a *VMOptions) { a.DiskBus = "sata" })},
		{"host-model", []map[string]string{{AnnCPUModel: "host-model"}}, with(func(a *VMOptions) { a.CPUModel = "host-model" })},
		{"named model", []map[string]string{{AnnCPUModel: "EPYC-Rome-v4"}}, with(func(a *VMOptions) { a.CPUModel = "EPYC-Rome-v4" })},
		{"container's win", []map[string]string{{AnnVCPUs: "2", AnnDiskBus: "sata"}, {AnnVCPUs: "4"}},
			with(func(a *VMOptions) { a.VCPUs, a.DiskBus = 4, "sata" })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o Options
			var err error
			for i, m := range tc.maps {
				if i == 0 {
					o, err = Parse(m)
				} else {
					o, err = o.Merge(m)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if o.VM != tc.want {
				t.Errorf("got %+v, want %+v", o.VM, tc.want)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		mention []string
	}{
		{"vcpus 0", map[string]string{AnnVCPUs: "0"}, []string{AnnVCPUs, `"0"`, "1 to 64"}},
		{"vcpus 65", map[string]string{AnnVCPUs: "65"}, []string{AnnVCPUs}},
		{"vcpus fraction", map[string]string{AnnVCPUs: "1.5"}, []string{AnnVCPUs}},
		{"memory below 64Mi", map[string]string{AnnMemory: "63Mi"}, []string{AnnMemory, "64Mi"}},
		{"memory garbage", map[string]string{AnnMemory: "2 GB"}, []string{AnnMemory}},
		{"memory negative", map[string]string{AnnMemory: "-1Gi"}, []string{AnnMemory}},
		{"root volume zero", map[string]string{AnnRootVolumeSize: "0"}, []string{AnnRootVolumeSize}},
		{"root volume negative", map[string]string{AnnRootVolumeSize: "-10Gi"}, []string{AnnRootVolumeSize}},
		{"root volume garbage", map[string]string{AnnRootVolumeSize: "big"}, []string{AnnRootVolumeSize}},
		{"disk bus ide", map[string]string{AnnDiskBus: "ide"}, []string{AnnDiskBus, "virtio, scsi or sata"}},
		{"disk bus case", map[string]string{AnnDiskBus: "VirtIO"}, []string{AnnDiskBus}},
		{"firmware", map[string]string{AnnFirmware: "efi"}, []string{AnnFirmware, "bios or uefi"}},
		{"cpu model empty", map[string]string{AnnCPUModel: ""}, []string{AnnCPUModel}},
		{"cpu model space", map[string]string{AnnCPUModel: "Skylake Client"}, []string{AnnCPUModel}},
		{"cpu model leading dash", map[string]string{AnnCPUModel: "-cpu"}, []string{AnnCPUModel}},
		{"cpu model too long", map[string]string{AnnCPUModel: strings.Repeat("a", 65)}, []string{AnnCPUModel}},
		{"cpu model markup", map[string]string{AnnCPUModel: "<model>"}, []string{AnnCPUModel}},
		{"unknown vmpod annotation", map[string]string{"vmpod.dev/cpus": "2"}, []string{"vmpod.dev/cpus", "typo", AnnVCPUs}},
		{"all problems at once", map[string]string{AnnVCPUs: "0", AnnDiskBus: "ide", AnnFirmware: "efi", AnnMemory: "1Ki"},
			[]string{AnnVCPUs, AnnDiskBus, AnnFirmware, AnnMemory}},
		{"bad datasource", map[string]string{AnnDatasource: "ec2"}, []string{AnnDatasource, `"ec2"`, "nocloud, configdrive"}},
		{"bad key", map[string]string{AnnSSHAuthorizedKeys: "ssh-rsa AAAAnotbase64!!\n"}, []string{AnnSSHAuthorizedKeys, "line 1"}},
		{"malformed meta-data", map[string]string{AnnMetaData: "a: [b\n"}, []string{AnnMetaData, "not valid YAML"}},
		{"meta-data not a map", map[string]string{AnnMetaData: "- a\n- b\n"}, []string{AnnMetaData, "YAML map"}},
		{"malformed network-config", map[string]string{AnnNetworkConfig: "version: [2\n"}, []string{AnnNetworkConfig, "YAML"}},
		{"network-config not JSON for configdrive", map[string]string{AnnDatasource: "configdrive", AnnNetworkConfig: "version: 2\n"}, []string{AnnNetworkConfig, "JSON"}},
		{"empty network-config", map[string]string{AnnNetworkConfig: ""}, []string{AnnNetworkConfig}},
		{"malformed cloud-config", map[string]string{AnnUserData: "#cloud-config\nruncmd: [ls\n"}, []string{AnnUserData, "not valid YAML"}},
		{"unknown user-data kind", map[string]string{AnnUserData: "just text"}, []string{AnnUserData, "#cloud-config", "#!", "multipart"}},
		{"cloud-init problems at once", map[string]string{AnnDatasource: "x", AnnMetaData: "[", AnnSSHAuthorizedKeys: "nope"},
			[]string{AnnDatasource, AnnMetaData, AnnSSHAuthorizedKeys}},
		{"bandwidth", map[string]string{AnnIngressBandwidth: "fast"}, []string{AnnIngressBandwidth, "bits per second"}},
		{"bandwidth zero", map[string]string{AnnEgressBandwidth: "0"}, []string{AnnEgressBandwidth}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, err := Parse(map[string]string{"unrelated": "x"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := base.Merge(tc.ann)
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

func TestResolveShape(t *testing.T) {
	cfg := config.Default()
	cfg.Accelerator = "tcg"
	cfg.DefaultMemoryMiB = 256
	cfg.Runtimes = map[string]config.Runtime{"vmpod": {}, "kvm": {Accelerator: "kvm"}, "small": {TCGTBCacheMiB: 128}}
	const imageSize = 2 << 30
	base := Shape{
		Handler: "vmpod", DomainType: libvirttools.DomainTypeQEMU, VCPUs: 1, MemoryBytes: 256 << 20,
		DiskBus: libvirttools.DiskBusVirtio, Firmware: libvirttools.FirmwareBIOS, TBCacheMiB: 1024,
	}
	with := func(f func(*Shape)) Shape { s := base; f(&s); return s }
	res := func(quota, period, shares, mem int64) *runtimeapi.LinuxContainerResources {
		return &runtimeapi.LinuxContainerResources{CpuQuota: quota, CpuPeriod: period, CpuShares: shares, MemoryLimitInBytes: mem}
	}
	for _, tc := range []struct {
		name    string
		handler string
		ann     map[string]string
		res     *runtimeapi.LinuxContainerResources
		cgroup  string
		want    Shape
		wantErr string // substring of an InvalidArgument error
	}{
		{name: "defaults", want: base},
		{name: "kvm handler", handler: "kvm", ann: map[string]string{AnnCPUModel: "host-passthrough"},
			want: with(func(s *Shape) {
				s.Handler, s.DomainType, s.TBCacheMiB, s.CPUModel = "kvm", libvirttools.DomainTypeKVM, 0, "host-passthrough"
			})},
		{name: "handler tb cache", handler: "small", want: with(func(s *Shape) { s.Handler, s.TBCacheMiB = "small", 128 })},
		{name: "quota 1.5 CPUs", res: res(150000, 100000, 0, 0),
			want: with(func(s *Shape) { s.VCPUs, s.CPUQuotaUS, s.CPUPeriodUS = 2, 150000, 100000 })},
		{name: "quota just over 1 CPU", res: res(100001, 100000, 0, 0),
			want: with(func(s *Shape) { s.VCPUs, s.CPUQuotaUS, s.CPUPeriodUS = 2, 100001, 100000 })},
		{name: "quota just under 1 CPU", res: res(99999, 100000, 0, 0),
			want: with(func(s *Shape) { s.VCPUs, s.CPUQuotaUS, s.CPUPeriodUS = 1, 99999, 100000 })},
		{name: "quota with a short period", res: res(30000, 10000, 0, 0),
			want: with(func(s *Shape) { s.VCPUs, s.CPUQuotaUS, s.CPUPeriodUS = 3, 30000, 10000 })},
		{name: "quota beyond 64 CPUs is capped", res: res(100*100000, 100000, 0, 0),
			want: with(func(s *Shape) { s.VCPUs, s.CPUQuotaUS, s.CPUPeriodUS = 64, 100*100000, 100000 })},
		{name: "quota without period ignored", res: res(150000, 0, 0, 0), want: base},
		{name: "unlimited quota ignored", res: res(-1, 100000, 0, 0), want: base},
		{name: "shares", res: res(0, 0, 2048, 0), want: with(func(s *Shape) { s.CPUShares = 2048 })},
		{name: "memory limit", res: res(0, 0, 0, 3<<30), want: with(func(s *Shape) { s.MemoryBytes = 3 << 30 })},
		{name: "annotations win over resources", ann: map[string]string{AnnVCPUs: "2", AnnMemory: "1Gi"}, res: res(400000, 100000, 0, 3<<30),
			want: with(func(s *Shape) {
				s.VCPUs, s.MemoryBytes, s.CPUQuotaUS, s.CPUPeriodUS = 2, 1<<30, 400000, 100000
				s.VCPUsFixed, s.MemoryFixed = true, true
			})},
		{name: "disk, firmware, model", ann: map[string]string{AnnDiskBus: "sata", AnnFirmware: "uefi", AnnCPUModel: "qemu64"},
			want: with(func(s *Shape) { s.DiskBus, s.Firmware, s.CPUModel = "sata", "uefi", "qemu64" })},
		{name: "cgroup parent", cgroup: "/kubepods/burstable/podabc", want: with(func(s *Shape) { s.CgroupParent = "/kubepods/burstable/podabc" })},
		{name: "root volume larger than the image", ann: map[string]string{AnnRootVolumeSize: "3Gi"},
			want: with(func(s *Shape) { s.RootVolumeSize = 3 << 30 })},
		{name: "root volume as large as the image", ann: map[string]string{AnnRootVolumeSize: "2Gi"},
			want: with(func(s *Shape) { s.RootVolumeSize = 2 << 30 })},
		{name: "root volume smaller than the image", ann: map[string]string{AnnRootVolumeSize: "1Gi"}, wantErr: AnnRootVolumeSize},
		{name: "memory limit below 64Mi", res: res(0, 0, 0, 32<<20), wantErr: "64Mi"},
		{name: "host-passthrough under TCG", ann: map[string]string{AnnCPUModel: "host-passthrough"}, wantErr: "needs KVM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.ann)
			if err != nil {
				t.Fatal(err)
			}
			h, err := cfg.ResolveHandler(tc.handler)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ResolveShape(h, cfg.DefaultMemoryMiB, LimitsOf(cfg), o.VM, tc.res, tc.cgroup, imageSize)
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
	for accel, want := range map[string]string{"kvm": libvirttools.DomainTypeKVM, "tcg": libvirttools.DomainTypeQEMU} {
		if got := DomainType(accel); got != want {
			t.Errorf("DomainType(%q) = %q, want %q", accel, got, want)
		}
	}
}

func TestVCPUsForCPULimit(t *testing.T) {
	for _, tc := range []struct {
		quota, period int64
		want          int
	}{
		{0, 100000, 0}, {-1, 100000, 0}, {100000, 0, 0},
		{99999, 100000, 1}, {100000, 100000, 1}, {100001, 100000, 2}, {30000, 10000, 3},
		{100 * 100000, 100000, MaxVCPUs},
		{math.MaxInt64, 100000, MaxVCPUs}, {math.MaxInt64, 1, MaxVCPUs},
	} {
		if got := VCPUsForCPULimit(tc.quota, tc.period); got != tc.want {
			t.Errorf("VCPUsForCPULimit(%d, %d) = %d, want %d", tc.quota, tc.period, got, tc.want)
		}
	}
}

func TestParseCloudInitAndNetwork(t *testing.T) {
	o, err := Parse(map[string]string{
		AnnUserData:          "#cloud-config\nruncmd: [[ls]]\n",
		AnnMetaData:          "a: b\n",
		AnnNetworkConfig:     `{"links": []}`,
		AnnDatasource:        "configdrive",
		AnnIngressBandwidth:  "10M",
		AnnEgressBandwidth:   "1G",
		AnnSSHAuthorizedKeys: "",
	})
	if err != nil {
		t.Fatal(err)
	}
	ci := o.CloudInit
	if ci.Datasource != "configdrive" || ci.UserData != "#cloud-config\nruncmd: [[ls]]\n" || ci.MetaData["a"] != "b" ||
		ci.NetworkConfig != `{"links": []}` || len(ci.SSHKeys) != 0 {
		t.Errorf("cloud-init options %+v", ci)
	}
	if o.Network != (NetworkOptions{IngressRate: 10e6, EgressRate: 1e9}) {
		t.Errorf("network options %+v", o.Network)
	}
	// A container switching the datasource re-checks the pod's network config.
	yamlNet, err := Parse(map[string]string{AnnNetworkConfig: "version: 2\n"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := yamlNet.Merge(map[string]string{AnnDatasource: "configdrive"}); err == nil || !strings.Contains(err.Error(), AnnNetworkConfig) {
		t.Errorf("configdrive with a YAML network config: %v", err)
	}
	// Merge leaves the options it started from alone.
	m, err := o.Merge(map[string]string{AnnMetaData: "c: d\n"})
	if err != nil || m.CloudInit.MetaData["c"] != "d" || o.CloudInit.MetaData["c"] != nil {
		t.Errorf("merge: %+v, %v; base %+v", m.CloudInit.MetaData, err, o.CloudInit.MetaData)
	}
}

// TestBounds: every size and count a pod asks for is bounded, without
// wrapping, and annotated guest RAM fits the container's memory limit.
func TestBounds(t *testing.T) {
	cfg := config.Default()
	cfg.Accelerator = "tcg"
	cfg.MaxVMMemory, cfg.MaxVCPUs, cfg.MaxRootVolumeSize = 8<<30, 4, 100<<30
	h, _ := cfg.ResolveHandler("")
	l := LimitsOf(cfg)
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		res     *runtimeapi.LinuxContainerResources
		mention []string // an InvalidArgument error naming these; nil: accepted
	}{
		{name: "memory 8Ei", ann: map[string]string{AnnMemory: "8Ei"}, mention: []string{AnnMemory}},
		{name: "memory 16Ei does not wrap", ann: map[string]string{AnnMemory: "16Ei"}, mention: []string{AnnMemory}},
		{name: "memory above max_vm_memory", ann: map[string]string{AnnMemory: "9Gi"}, mention: []string{AnnMemory, "max_vm_memory"}},
		{name: "memory at max_vm_memory", ann: map[string]string{AnnMemory: "8Gi"}},
		{name: "root volume 8Ei", ann: map[string]string{AnnRootVolumeSize: "8Ei"}, mention: []string{AnnRootVolumeSize}},
		{name: "root volume above the max", ann: map[string]string{AnnRootVolumeSize: "101Gi"}, mention: []string{AnnRootVolumeSize, "max_root_volume_size"}},
		{name: "vcpus above max_vcpus", ann: map[string]string{AnnVCPUs: "5"}, mention: []string{AnnVCPUs, "max_vcpus"}},
		{name: "annotated memory above the limit", ann: map[string]string{AnnMemory: "2Gi"},
			res: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 30}, mention: []string{AnnMemory, "memory limit"}},
		{name: "annotated memory within the limit", ann: map[string]string{AnnMemory: "1Gi"},
			res: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2 << 30}},
		{name: "memory limit above max_vm_memory", res: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 30}, mention: []string{"max_vm_memory"}},
		{name: "huge CPU quota", res: &runtimeapi.LinuxContainerResources{CpuQuota: math.MaxInt64, CpuPeriod: 100000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.ann)
			if err == nil {
				err = o.Check(l)
			}
			var s Shape
			if err == nil {
				s, err = ResolveShape(h, cfg.DefaultMemoryMiB, l, o.VM, tc.res, "", 1<<30)
			}
			if tc.mention == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if s.VCPUs < 1 || s.VCPUs > 4 || s.MemoryBytes < 64<<20 || s.MemoryBytes > 8<<30 {
					t.Fatalf("shape out of bounds: %+v", s)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("got %v (shape %+v), want InvalidArgument", err, s)
			}
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
		})
	}
}

func TestWarmStartAnnotations(t *testing.T) {
	o, err := Parse(map[string]string{AnnWarmStart: "true", AnnWarmStartMarker: `^ready \d+$`})
	if err != nil || o.WarmStart.Enabled == nil || !*o.WarmStart.Enabled || o.WarmStart.Marker != `^ready \d+$` {
		t.Fatalf("Parse = %+v, %v", o.WarmStart, err)
	}
	off, err := o.Merge(map[string]string{AnnWarmStart: "false"})
	if err != nil || *off.WarmStart.Enabled || !*o.WarmStart.Enabled {
		t.Fatalf("a container's false over the pod's true: %+v (pod's now %v), %v", off.WarmStart, *o.WarmStart.Enabled, err)
	}
	for _, bad := range []map[string]string{
		{AnnWarmStart: "yes"},
		{AnnWarmStartMarker: "("},
		{AnnWarmStartMarker: ""},
		{AnnWarmStartMarker: strings.Repeat("a", MaxWarmStartMarker+1)},
	} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}
