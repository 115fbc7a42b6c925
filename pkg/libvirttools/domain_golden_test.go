package libvirttools

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"libvirt.org/go/libvirtxml"
)

// The -update flag rewrites the golden files instead of comparing with
// them. It is registered only if another test file of this package has not
// registered it already (package variables initialise before init runs),
// so several golden tests can share `go test -update`.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files under testdata/ instead of comparing")
	}
}

func updateGolden() bool {
	f := flag.Lookup("update")
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	v, _ := g.Get().(bool)
	return v
}

// baseSpec is the smallest valid spec: a TCG BIOS guest with a qcow2 root
// disk and a serial console. Paths are fixed so the output is too.
func baseSpec() DomainSpec {
	return DomainSpec{
		Name:        "vmpod-0123456789ab",
		UUID:        "6f1c8a7e-2d3b-5c4a-9e8f-0123456789ab",
		Type:        DomainTypeQEMU,
		VCPUs:       1,
		MemoryBytes: 512 << 20,
		Firmware:    FirmwareBIOS,
		RootDisk: Disk{
			Path:   "/var/lib/vmpod/containers/0123456789ab/root.qcow2",
			Format: DiskFormatQCOW2,
		},
		SerialSocket: "/run/vmpod/containers/0123456789ab/console.sock",
		SerialLog:    "/var/lib/vmpod/containers/0123456789ab/console.log",
		Metadata: Metadata{
			SandboxID:    "5ad3f1e0c0ffee",
			ContainerID:  "0123456789abcdef",
			PodName:      "web",
			PodNamespace: "default",
			PodUID:       "uid-1",
			Attempt:      0,
		},
	}
}

// goldenCases are the specs with golden XML under testdata/domain-<name>.xml.
func goldenCases() []struct {
	name string
	spec DomainSpec
} {
	kvm := baseSpec()
	kvm.Type = DomainTypeKVM
	kvm.Emulator = "/usr/bin/qemu-system-x86_64"
	kvm.VCPUs = 4
	kvm.MemoryBytes = 2 << 30
	kvm.CPUModel = CPUModeHostPassthrough
	kvm.CPUShares = 2048
	kvm.CPUQuotaUS = 150000
	kvm.CPUPeriodUS = 100000
	kvm.CgroupPartition = "/machine/vmpod"
	kvm.NoBalloon = true // a VM in a cgroup: memory figures from there

	kvmDefault := baseSpec()
	kvmDefault.Type = DomainTypeKVM

	named := baseSpec()
	named.CPUModel = "Skylake-Client"
	named.VCPUs = 2

	uefi := baseSpec()
	uefi.Firmware = FirmwareUEFI
	uefi.UEFI = UEFIFirmware{
		Code:         "/usr/share/OVMF/OVMF_CODE_4M.fd",
		VarsTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd",
		Vars:         "/var/lib/vmpod/containers/0123456789ab/OVMF_VARS.fd",
	}

	scsi := baseSpec()
	scsi.RootDisk.Bus = DiskBusSCSI
	scsi.RootDisk.Serial = "vmpod-root"

	sata := baseSpec()
	sata.RootDisk.Bus = DiskBusSATA

	tbCache := baseSpec()
	tbCache.TBCacheMiB = 256
	tbCache.VCPUs = 2

	full := baseSpec()
	full.GuestAgentSocket = "/run/vmpod/containers/0123456789ab/qga.sock"
	full.ExecSockets = []string{"/run/vmpod/containers/0123456789ab/exec0.sock", "/run/vmpod/containers/0123456789ab/exec1.sock"}
	full.NICs = []NIC{{TapName: "tap0", MAC: "52:54:00:12:34:56"}}
	full.ExtraDisks = []Disk{
		{Path: "/var/lib/vmpod/containers/0123456789ab/seed.iso", Format: DiskFormatRaw, Device: DiskDeviceCDROM, ReadOnly: true},
		{Path: "/dev/vg0/data", Block: true, Format: DiskFormatRaw, Serial: "data"},
	}

	command := baseSpec()
	command.GuestAgentSocket = "/run/vmpod/containers/0123456789ab/qga.sock"
	command.StdoutSocket = "/run/vmpod/containers/0123456789ab/stdout.sock"
	command.StderrSocket = "/run/vmpod/containers/0123456789ab/stderr.sock"

	shares := baseSpec()
	shares.Filesystems = []Filesystem{
		{Source: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~empty-dir/cache", Tag: "vmpod-fs0", Driver: FilesystemVirtiofs},
		{Source: "/srv/data", Tag: "vmpod-fs1", Driver: Filesystem9p, ReadOnly: true},
		{Source: "/srv/secrets", Tag: "vmpod-fs2", Driver: FilesystemVirtiofs, ReadOnly: true, Binary: "/var/lib/vmpod/bin/vmpod-virtiofsd-ro"},
	}

	return []struct {
		name string
		spec DomainSpec
	}{
		{"filesystems", shares},
		{"minimal-tcg", baseSpec()},
		{"kvm-passthrough-cputune-partition", kvm},
		{"kvm-default-cpu", kvmDefault},
		{"tcg-named-cpu", named},
		{"uefi", uefi},
		{"scsi-root", scsi},
		{"sata-root", sata},
		{"tcg-tb-cache", tbCache},
		{"agent-nic-cdrom-block", full},
		{"command-output", command},
	}
}

func goldenPath(name string) string {
	return filepath.Join("testdata", "domain-"+name+".xml")
}

func TestDomainXMLGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DomainXML(tc.spec)
			if err != nil {
				t.Fatalf("DomainXML: %v", err)
			}
			got += "\n"
			path := goldenPath(tc.name)
			if updateGolden() {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from the builder's output (rerun with -update and review the diff):\n%s", path, got)
			}
		})
	}
}

// TestDomainXMLGoldenDeterministic builds each case twice.
func TestDomainXMLGoldenDeterministic(t *testing.T) {
	for _, tc := range goldenCases() {
		a, errA := DomainXML(tc.spec)
		b, errB := DomainXML(tc.spec)
		if errA != nil || errB != nil || a != b {
			t.Errorf("%s: two builds differ (errors %v, %v)", tc.name, errA, errB)
		}
	}
}

// TestGoldenFilesUnmarshal checks every golden file is a domain libvirtxml
// reads back to the same structure the builder produced.
func TestGoldenFilesUnmarshal(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := os.ReadFile(goldenPath(tc.name))
			if err != nil {
				t.Fatal(err)
			}
			var dom libvirtxml.Domain
			if err := dom.Unmarshal(string(doc)); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if dom.Name != tc.spec.Name || dom.UUID != tc.spec.UUID || dom.Type != tc.spec.Type {
				t.Errorf("identity = %q %q %q, want %q %q %q", dom.Name, dom.UUID, dom.Type, tc.spec.Name, tc.spec.UUID, tc.spec.Type)
			}
			again, err := dom.Marshal()
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			if again+"\n" != string(doc) {
				t.Errorf("unmarshal+marshal changed the document:\n%s", again)
			}
		})
	}
}
