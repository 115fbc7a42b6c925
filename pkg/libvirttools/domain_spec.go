package libvirttools

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

// Values accepted in DomainSpec and its parts.
const (
	// DomainTypeKVM runs the guest with hardware virtualization.
	DomainTypeKVM = "kvm"
	// DomainTypeQEMU runs the guest under TCG (pure emulation).
	DomainTypeQEMU = "qemu"

	// FirmwareBIOS boots with SeaBIOS on an i440fx ("pc") machine.
	FirmwareBIOS = "bios"
	// FirmwareUEFI boots with OVMF from pflash on a q35 machine.
	FirmwareUEFI = "uefi"

	// CPUModeHostModel asks libvirt for the closest named model to the host CPU.
	CPUModeHostModel = "host-model"
	// CPUModeHostPassthrough exposes the host CPU as is.
	CPUModeHostPassthrough = "host-passthrough"

	// DiskFormatQCOW2 and DiskFormatRaw are the disk image formats the
	// builder accepts. The format is always explicit: letting QEMU probe
	// it is a known guest-escape vector.
	DiskFormatQCOW2 = "qcow2"
	DiskFormatRaw   = "raw"

	// DiskBusVirtio (virtio-blk, /dev/vdX), DiskBusSCSI (virtio-scsi,
	// /dev/sdX) and DiskBusSATA (AHCI, /dev/sdX) are the disk buses.
	DiskBusVirtio = "virtio"
	DiskBusSCSI   = "scsi"
	DiskBusSATA   = "sata"

	// DiskDeviceDisk and DiskDeviceCDROM are the guest-visible device kinds.
	DiskDeviceDisk  = "disk"
	DiskDeviceCDROM = "cdrom"

	// NICModelVirtio is the default NIC model.
	NICModelVirtio = "virtio"

	// MinMemoryBytes is the smallest guest RAM BuildDomain accepts.
	MinMemoryBytes = 64 << 20
)

// maxUnixSocketPath is the longest path a unix socket can be bound at
// (sizeof(sun_path) - 1 on Linux). QEMU fails at start, not at define,
// when a chardev path is longer, so the builder checks it up front.
const maxUnixSocketPath = 107

// DomainSpec is everything the domain builder needs, already resolved by
// the caller (runtime handler, image, sandbox and container records). The
// builder validates it but never looks anything up.
type DomainSpec struct {
	// Name is the libvirt domain name, e.g. "vmpod-<containerID[:N]>".
	Name string
	// UUID is the domain UUID in canonical 8-4-4-4-12 hex form, derived
	// deterministically by the caller.
	UUID string
	// Type is DomainTypeKVM or DomainTypeQEMU (TCG).
	Type string
	// Emulator is the absolute path of the QEMU binary; "" lets libvirt
	// pick its default.
	Emulator string

	// VCPUs is the number of virtual CPUs, at least 1.
	VCPUs int
	// MemoryBytes is the guest RAM in bytes, at least MinMemoryBytes. It is
	// rounded up to whole KiB, the unit libvirt stores.
	MemoryBytes int64
	// CPUModel is "" (host-model for kvm, libvirt's default model for
	// qemu), CPUModeHostModel, CPUModeHostPassthrough, or a named QEMU CPU
	// model such as "Skylake-Client".
	CPUModel string
	// CPUShares is the relative CPU weight of the whole domain
	// (<cputune><shares>) on the cgroup v1 cpu.shares scale, at most
	// 262144; 0 leaves it unset. On a cgroup v2 host libvirt 9 writes the
	// value to cpu.weight as is, which takes only 1..10000: the caller
	// converts there.
	CPUShares uint64
	// CPUQuotaUS is the CFS quota of the whole domain in microseconds per
	// CPUPeriodUS (<cputune><global_quota>); 0 leaves it unset, -1 means
	// unlimited, otherwise at least 1000.
	CPUQuotaUS int64
	// CPUPeriodUS is the CFS period in microseconds
	// (<cputune><global_period>), 0 (unset, libvirt keeps the kernel's
	// 100000) or 1000..1000000.
	CPUPeriodUS uint64
	// CgroupPartition is the cgroup partition the domain is placed in
	// (<resource><partition>), an absolute path such as /machine/vmpod;
	// "" leaves libvirt's default (/machine). libvirt does not create it:
	// the domain fails to start until it exists (without systemd: the
	// directory machine/vmpod.partition in every cgroup hierarchy).
	CgroupPartition string

	// NoBalloon leaves the virtio balloon out (<memballoon model='none'>,
	// since libvirt adds one otherwise). The balloon is only there for
	// the guest's memory statistics, which a VM whose figures come from
	// its cgroup does not need.
	NoBalloon bool

	// Firmware is FirmwareBIOS or FirmwareUEFI; "" means FirmwareBIOS.
	Firmware string
	// UEFI holds the OVMF paths, required when Firmware is FirmwareUEFI.
	UEFI UEFIFirmware

	// RootDisk is the boot disk, normally the qcow2 overlay over the image.
	RootDisk Disk
	// ExtraDisks are attached after the root disk, in order.
	ExtraDisks []Disk

	// SerialSocket is the absolute path of the unix socket QEMU binds for
	// the guest's first serial port (ttyS0).
	SerialSocket string
	// SerialLog is the absolute path of the file virtlogd appends a raw
	// copy of the serial console to. It is not a CRI log (no timestamps
	// or stream tags), and virtlogd refuses to start a second running
	// domain on the same file.
	SerialLog string

	// GenID gives the VM a VM generation ID device (<genid/>, a value
	// libvirt picks): a guest restored from a snapshot as another VM gets
	// a new ID and reseeds its random number generator (warm start).
	GenID bool
	// TBCacheMiB sets the TCG translation block cache size in MiB; 0 keeps
	// QEMU's default (1 GiB, which dominates the memory overhead of a small
	// TCG guest). Ignored when Type is kvm, where it does not apply.
	TBCacheMiB int

	// GuestAgentSocket is the absolute path of the unix socket QEMU binds
	// for the qemu-guest-agent channel; "" adds no channel.
	GuestAgentSocket string
	// ExecSockets are the absolute paths of the unix sockets QEMU binds for
	// the exec channels: the i-th is the virtio-serial port ExecChannel(i),
	// which carries one TTY exec session at a time. Empty adds none.
	ExecSockets []string
	// StdoutSocket and StderrSocket are the absolute paths of the unix
	// sockets QEMU binds for the ports that carry a container's command's
	// stdout and stderr (StdoutChannel, StderrChannel); "" adds none.
	// Both or neither.
	StdoutSocket, StderrSocket string

	// Metadata identifies the pod and container the domain belongs to; it
	// is stored in the domain so recovery can map domains back.
	Metadata Metadata

	// NICs are the network interfaces, in guest PCI order.
	NICs []NIC

	// Filesystems are host directories shared into the guest.
	Filesystems []Filesystem
}

// UEFIFirmware locates the OVMF images, e.g. Debian's
// /usr/share/OVMF/OVMF_CODE_4M.fd and /usr/share/OVMF/OVMF_VARS_4M.fd.
type UEFIFirmware struct {
	// Code is the read-only firmware image, mapped as pflash.
	Code string
	// VarsTemplate is the pristine variable store libvirt copies to Vars
	// when Vars does not exist yet.
	VarsTemplate string
	// Vars is the per-domain variable store; "" lets libvirt place it
	// under /var/lib/libvirt/qemu/nvram/<name>_VARS.fd. Either way it
	// outlives the domain unless it is undefined with the NVRAM flag.
	Vars string
}

// Disk is one disk or CD-ROM attached to the domain.
type Disk struct {
	// Path is the absolute path of the image file or block device.
	Path string
	// Block says Path is a block device (<disk type='block'>) rather than
	// a file. The builder cannot stat it: it is pure.
	Block bool
	// Format is DiskFormatQCOW2 or DiskFormatRaw, never probed.
	Format string
	// Bus is DiskBusVirtio, DiskBusSCSI or DiskBusSATA; "" means virtio for
	// a disk and scsi for a CD-ROM. CD-ROMs cannot use virtio; prefer scsi,
	// because Debian's cloud kernel has no AHCI driver and cannot see a
	// SATA CD-ROM (so a NoCloud seed there goes unnoticed).
	Bus string
	// Device is DiskDeviceDisk or DiskDeviceCDROM; "" means a disk.
	Device string
	// ReadOnly attaches the disk read-only (CD-ROMs always are).
	ReadOnly bool
	// Serial is the serial number the guest sees (letters, digits, space
	// and _ . + -), "" for none; /dev/disk/by-id uses it.
	Serial string
	// BootOrder is the device's position in the boot order, 0 for none.
	// The root disk boots first when it is 0.
	BootOrder int
}

// NIC is one network interface backed by a tap device vmpod created
// (libvirt neither creates nor configures it).
type NIC struct {
	// TapName is the host tap device, at most 15 bytes.
	TapName string
	// MAC is the guest MAC address (unicast), e.g. the one CNI returned.
	MAC string
	// Model is the emulated NIC model; "" means NICModelVirtio.
	Model string
}

var nicModels = map[string]bool{NICModelVirtio: true, "e1000": true, "e1000e": true, "rtl8139": true}

// specProblems collects validation failures so one error reports all of them.
type specProblems []string

func (p *specProblems) addf(format string, args ...any) {
	*p = append(*p, fmt.Sprintf(format, args...))
}

// Validate checks spec and returns an error wrapping
// errdefs.ErrInvalidArgument that lists every problem found.
func (spec *DomainSpec) Validate() error {
	var p specProblems
	validateIdentity(spec, &p)
	validateMemory(spec, &p)
	validateCPU(spec, &p)
	validateFirmware(spec, &p)
	validateDisks(spec, &p)
	validateConsole(spec, &p)
	validateChannels(spec, &p)
	validateNICs(spec, &p)
	validateFilesystems(spec, &p)
	validateMetadata(&spec.Metadata, &p)
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("domain spec %q: %s: %w", spec.Name, strings.Join(p, "; "), errdefs.ErrInvalidArgument)
}

func validateIdentity(spec *DomainSpec, p *specProblems) {
	switch {
	case spec.Name == "":
		p.addf("empty name")
	case strings.ContainsAny(spec.Name, "/\x00"):
		p.addf("name %q contains '/' or NUL", spec.Name)
	}
	if spec.UUID == "" {
		p.addf("empty uuid")
	} else if !isCanonicalUUID(spec.UUID) {
		p.addf("uuid %q is not in 8-4-4-4-12 hex form", spec.UUID)
	}
	if spec.Type != DomainTypeKVM && spec.Type != DomainTypeQEMU {
		p.addf("type %q is neither %q nor %q", spec.Type, DomainTypeKVM, DomainTypeQEMU)
	}
	checkAbsPath(p, "emulator", spec.Emulator, false)
}

func isCanonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

// checkAbsPath records a problem when path is not absolute, or is empty
// and required.
func checkAbsPath(p *specProblems, what, path string, required bool) {
	switch {
	case path == "" && required:
		p.addf("empty %s path", what)
	case path != "" && !filepath.IsAbs(path):
		p.addf("%s path %q is not absolute", what, path)
	}
}

// checkSocketPath is checkAbsPath plus the unix socket length limit.
func checkSocketPath(p *specProblems, what, path string, required bool) {
	checkAbsPath(p, what, path, required)
	if len(path) > maxUnixSocketPath {
		p.addf("%s path %q is longer than %d bytes, the unix socket limit", what, path, maxUnixSocketPath)
	}
}
