package libvirttools

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestBuildDomainRejectsInvalidSpecs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*DomainSpec)
		want   string // substring of the error
	}{
		{"empty name", func(s *DomainSpec) { s.Name = "" }, "empty name"},
		{"slash in name", func(s *DomainSpec) { s.Name = "a/b" }, "contains '/'"},
		{"empty uuid", func(s *DomainSpec) { s.UUID = "" }, "empty uuid"},
		{"malformed uuid", func(s *DomainSpec) { s.UUID = "6f1c8a7e2d3b5c4a9e8f0123456789ab" }, "8-4-4-4-12"},
		{"bad type", func(s *DomainSpec) { s.Type = "xen" }, `type "xen"`},
		{"empty type", func(s *DomainSpec) { s.Type = "" }, `type ""`},
		{"relative emulator", func(s *DomainSpec) { s.Emulator = "qemu-system-x86_64" }, "emulator path"},
		{"zero vcpus", func(s *DomainSpec) { s.VCPUs = 0 }, "vcpus 0"},
		{"too little memory", func(s *DomainSpec) { s.MemoryBytes = 63 << 20 }, "below the 64 MiB minimum"},
		{"cpu model with space", func(s *DomainSpec) { s.CPUModel = "Skylake Client" }, "cpu model"},
		{"host-passthrough on tcg", func(s *DomainSpec) { s.CPUModel = CPUModeHostPassthrough }, `needs type "kvm"`},
		{"short cpu period", func(s *DomainSpec) { s.CPUPeriodUS = 999 }, "cpu period"},
		{"long cpu period", func(s *DomainSpec) { s.CPUPeriodUS = 1000001 }, "cpu period"},
		{"small cpu quota", func(s *DomainSpec) { s.CPUQuotaUS = 999 }, "cpu quota"},
		{"negative cpu quota", func(s *DomainSpec) { s.CPUQuotaUS = -2 }, "cpu quota"},
		{"huge cpu shares", func(s *DomainSpec) { s.CPUShares = 262145 }, "cpu shares"},
		{"relative partition", func(s *DomainSpec) { s.CgroupPartition = "machine" }, "cgroup partition"},
		{"unknown firmware", func(s *DomainSpec) { s.Firmware = "coreboot" }, `firmware "coreboot"`},
		{"uefi without paths", func(s *DomainSpec) { s.Firmware = FirmwareUEFI }, "empty uefi code path; empty uefi vars template path"},
		{"negative tb-cache", func(s *DomainSpec) { s.TBCacheMiB = -1 }, "tb-cache"},
		{"root disk without path", func(s *DomainSpec) { s.RootDisk.Path = "" }, "empty root disk path"},
		{"root disk relative", func(s *DomainSpec) { s.RootDisk.Path = "root.qcow2" }, "not absolute"},
		{"unknown format", func(s *DomainSpec) { s.RootDisk.Format = "vmdk" }, `format "vmdk"`},
		{"format left to probing", func(s *DomainSpec) { s.RootDisk.Format = "" }, `format ""`},
		{"unknown bus", func(s *DomainSpec) { s.RootDisk.Bus = "ide" }, `bus "ide"`},
		{"unknown device", func(s *DomainSpec) { s.RootDisk.Device = "floppy" }, `device "floppy"`},
		{"virtio cdrom", func(s *DomainSpec) {
			s.ExtraDisks = []Disk{{Path: "/seed.iso", Format: DiskFormatRaw, Device: DiskDeviceCDROM, Bus: DiskBusVirtio}}
		}, "extra disk 0 is a cdrom on bus"},
		{"bad serial", func(s *DomainSpec) { s.RootDisk.Serial = "a/b" }, "serial"},
		{"negative boot order", func(s *DomainSpec) { s.RootDisk.BootOrder = -1 }, "boot order -1"},
		{"duplicate boot order", func(s *DomainSpec) {
			s.ExtraDisks = []Disk{{Path: "/data.raw", Format: DiskFormatRaw, BootOrder: 1}}
		}, "boot order 1 is used twice"},
		{"no serial socket", func(s *DomainSpec) { s.SerialSocket = "" }, "empty serial socket path"},
		{"serial socket too long", func(s *DomainSpec) { s.SerialSocket = "/" + strings.Repeat("s", 107) }, "unix socket limit"},
		{"no serial log", func(s *DomainSpec) { s.SerialLog = "" }, "empty serial log path"},
		{"relative agent socket", func(s *DomainSpec) { s.GuestAgentSocket = "qga.sock" }, "guest agent socket"},
		{"relative exec socket", func(s *DomainSpec) { s.ExecSockets = []string{"/run/exec0.sock", "exec1.sock"} }, "exec socket 1"},
		{"stdout without stderr", func(s *DomainSpec) { s.StdoutSocket = "/run/stdout.sock" }, "come together"},
		{"relative stderr socket", func(s *DomainSpec) { s.StdoutSocket, s.StderrSocket = "/run/o.sock", "e.sock" }, "stderr socket"},
		{"nic without tap", func(s *DomainSpec) { s.NICs = []NIC{{MAC: "52:54:00:00:00:01"}} }, "empty tap name"},
		{"nic tap too long", func(s *DomainSpec) { s.NICs = []NIC{{TapName: "tap0123456789abc", MAC: "52:54:00:00:00:01"}} }, "longer than 15"},
		{"nic bad mac", func(s *DomainSpec) { s.NICs = []NIC{{TapName: "tap0", MAC: "52:54:00"}} }, "not a 48-bit MAC"},
		{"nic multicast mac", func(s *DomainSpec) { s.NICs = []NIC{{TapName: "tap0", MAC: "01:00:5e:00:00:01"}} }, "multicast"},
		{"nic duplicate mac", func(s *DomainSpec) {
			s.NICs = []NIC{{TapName: "tap0", MAC: "52:54:00:00:00:01"}, {TapName: "tap1", MAC: "52:54:00:00:00:01"}}
		}, "used twice"},
		{"nic duplicate tap", func(s *DomainSpec) {
			s.NICs = []NIC{{TapName: "tap0", MAC: "52:54:00:00:00:01"}, {TapName: "tap0", MAC: "52:54:00:00:00:02"}}
		}, "tap \"tap0\" is used twice"},
		{"nic unknown model", func(s *DomainSpec) { s.NICs = []NIC{{TapName: "tap0", MAC: "52:54:00:00:00:01", Model: "ne2k"}} }, `unknown model "ne2k"`},
		{"no sandbox id", func(s *DomainSpec) { s.Metadata.SandboxID = "" }, "empty sandbox id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := baseSpec()
			tc.modify(&spec)
			dom, err := BuildDomain(spec)
			if err == nil {
				t.Fatalf("BuildDomain succeeded: %+v", dom)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v does not wrap ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if _, err := DomainXML(spec); err == nil {
				t.Error("DomainXML succeeded where BuildDomain failed")
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	err := (&DomainSpec{}).Validate()
	if err == nil {
		t.Fatal("empty spec validated")
	}
	for _, want := range []string{"empty name", "empty uuid", "type", "vcpus", "memory", "root disk", "serial socket", "sandbox id"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestBuildDomainDefaults(t *testing.T) {
	t.Run("empty firmware is bios", func(t *testing.T) {
		spec := baseSpec()
		spec.Firmware = ""
		dom, err := BuildDomain(spec)
		if err != nil {
			t.Fatal(err)
		}
		if dom.OS.Type.Machine != "pc" || dom.OS.Loader != nil {
			t.Errorf("machine %q, loader %+v; want pc and none", dom.OS.Type.Machine, dom.OS.Loader)
		}
	})
	t.Run("uefi vars location left to libvirt", func(t *testing.T) {
		spec := baseSpec()
		spec.Firmware = FirmwareUEFI
		spec.UEFI = UEFIFirmware{Code: "/code.fd", VarsTemplate: "/vars.fd"}
		dom, err := BuildDomain(spec)
		if err != nil {
			t.Fatal(err)
		}
		if dom.OS.NVRam.NVRam != "" || dom.OS.NVRam.Template != "/vars.fd" {
			t.Errorf("nvram = %+v", dom.OS.NVRam)
		}
	})
	t.Run("tb-cache ignored for kvm", func(t *testing.T) {
		spec := baseSpec()
		spec.Type = DomainTypeKVM
		spec.TBCacheMiB = 128
		dom, err := BuildDomain(spec)
		if err != nil {
			t.Fatal(err)
		}
		if dom.Features.TCG != nil {
			t.Errorf("tcg features on a kvm domain: %+v", dom.Features.TCG)
		}
	})
	t.Run("memory rounded up to KiB", func(t *testing.T) {
		spec := baseSpec()
		spec.MemoryBytes = 64<<20 + 1
		dom, err := BuildDomain(spec)
		if err != nil {
			t.Fatal(err)
		}
		if dom.Memory.Value != 64<<10+1 || dom.Memory.Unit != "KiB" {
			t.Errorf("memory = %+v", dom.Memory)
		}
	})
	t.Run("explicit root boot order kept", func(t *testing.T) {
		spec := baseSpec()
		spec.RootDisk.BootOrder = 2
		spec.ExtraDisks = []Disk{{Path: "/boot.iso", Format: DiskFormatRaw, Device: DiskDeviceCDROM, BootOrder: 1}}
		dom, err := BuildDomain(spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := dom.Devices.Disks[0].Boot.Order; got != 2 {
			t.Errorf("root boot order = %d, want 2", got)
		}
		if got := dom.Devices.Disks[1].Boot.Order; got != 1 {
			t.Errorf("cdrom boot order = %d, want 1", got)
		}
	})
	t.Run("mac normalised", func(t *testing.T) {
		spec := baseSpec()
		spec.NICs = []NIC{{TapName: "tap0", MAC: "52-54-00-AB-CD-EF"}}
		dom, err := BuildDomain(spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := dom.Devices.Interfaces[0].MAC.Address; got != "52:54:00:ab:cd:ef" {
			t.Errorf("mac = %q", got)
		}
	})
}

func TestDiskTargets(t *testing.T) {
	spec := baseSpec()
	spec.ExtraDisks = []Disk{
		{Path: "/a", Format: DiskFormatRaw, Bus: DiskBusSCSI},
		{Path: "/b", Format: DiskFormatRaw, Bus: DiskBusSATA},
		{Path: "/c", Format: DiskFormatRaw},
		{Path: "/d", Format: DiskFormatRaw, Device: DiskDeviceCDROM},
	}
	dom, err := BuildDomain(spec)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range dom.Devices.Disks {
		got = append(got, d.Target.Dev+"/"+d.Target.Bus)
	}
	want := "vda/virtio sda/scsi sdb/sata vdb/virtio sdc/scsi"
	if strings.Join(got, " ") != want {
		t.Errorf("targets = %v, want %s", got, want)
	}
	var controllers []string
	for _, c := range dom.Devices.Controllers {
		controllers = append(controllers, c.Type)
	}
	if strings.Join(controllers, " ") != "scsi sata usb" {
		t.Errorf("controllers = %v", controllers)
	}
}

func TestDiskLetters(t *testing.T) {
	for i, want := range map[int]string{0: "a", 1: "b", 25: "z", 26: "aa", 27: "ab", 51: "az", 52: "ba", 701: "zz", 702: "aaa"} {
		if got := diskLetters(i); got != want {
			t.Errorf("diskLetters(%d) = %q, want %q", i, got, want)
		}
	}
}
