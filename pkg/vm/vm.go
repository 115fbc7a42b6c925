// Package vm is one VM on the host, below the pod lifecycle: where its
// files and sockets live (Layout), its libvirt domain definition built
// from a container's resolved shape (Domain), how a stopped domain is
// reported as a container exit (ExitStatus), and how a VM is removed with
// everything it owns (Remove). It keeps no state.
package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/podspec"
	"github.com/vmpod/vmpod/pkg/volumes"
)

// Layout is where a VM's files live: Dir (under the state directory: root
// overlay, seed, serial log, UEFI variables) and RunDir (beside the CRI
// socket, because unix socket paths are limited to 107 bytes: the serial
// console, guest agent and exec channel sockets).
type Layout struct {
	Dir, RunDir string
}

// RootDisk is the root overlay.
func (l Layout) RootDisk() string { return filepath.Join(l.Dir, "root.qcow2") }

// SeedISO is the cloud-init seed, attached as a read-only CD-ROM
// (virtio-scsi: Debian's cloud kernel has no SATA driver).
func (l Layout) SeedISO() string { return filepath.Join(l.Dir, "seed.iso") }

// SerialSocket is where QEMU serves the serial console (ttyS0).
func (l Layout) SerialSocket() string { return filepath.Join(l.RunDir, "serial.sock") }

// SerialLog is virtlogd's raw copy of the serial console.
func (l Layout) SerialLog() string { return filepath.Join(l.Dir, "serial.log") }

// ConsoleLog is the console reader's log when the container has no CRI
// log path.
func (l Layout) ConsoleLog() string { return filepath.Join(l.Dir, "console.log") }

// AgentSocket is the QEMU guest agent channel.
func (l Layout) AgentSocket() string { return filepath.Join(l.RunDir, "qga.sock") }

// EFIVars is the VM's UEFI variable store.
func (l Layout) EFIVars() string { return filepath.Join(l.Dir, "efivars.fd") }

// ExecSocket is the host socket of exec channel n.
func (l Layout) ExecSocket(n int) string {
	return filepath.Join(l.RunDir, "exec"+strconv.Itoa(n)+".sock")
}

// ExecSockets are the host sockets of all exec channels, in port order.
func (l Layout) ExecSockets() []string {
	var s []string
	for n := range guest.ExecPorts {
		s = append(s, l.ExecSocket(n))
	}
	return s
}

// ExecChannel is exec channel n, host and guest side.
func (l Layout) ExecChannel(n int) guest.Channel {
	return guest.Channel{Socket: l.ExecSocket(n), Device: "/dev/virtio-ports/" + libvirttools.ExecChannel(n)}
}

// StdoutSocket and StderrSocket are the host sockets of the ports that
// carry a container's command's stdout and stderr.
func (l Layout) StdoutSocket() string { return filepath.Join(l.RunDir, "stdout.sock") }

// StderrSocket: see StdoutSocket.
func (l Layout) StderrSocket() string { return filepath.Join(l.RunDir, "stderr.sock") }

// Guest devices of the command's output ports (udev's links).
const (
	StdoutDevice = "/dev/virtio-ports/" + libvirttools.StdoutChannel
	StderrDevice = "/dev/virtio-ports/" + libvirttools.StderrChannel
)

// Spec is what a VM's domain is built from.
type Spec struct {
	Name, UUID string
	Shape      podspec.Shape
	Layout     Layout
	// NICs are the pod's interfaces (taps and MACs); none without a network.
	NICs []libvirttools.NIC
	// Volumes are the container's shares and block devices.
	Volumes volumes.Plan
	// Metadata lets recovery map the domain back to its container.
	Metadata libvirttools.Metadata
	// OVMFCode and OVMFVars are the UEFI firmware files (Firmware uefi).
	OVMFCode, OVMFVars string
	// CommandOutput gives the VM the ports of its container's command's
	// stdout and stderr (a container with a command).
	CommandOutput bool
	// GenID gives the VM a generation ID device (warm start templates).
	GenID bool
}

// Domain builds the VM's libvirt domain XML: the root overlay, the seed
// CD-ROM, the volumes, the serial console, the guest agent and exec
// channels, the command's output ports, the NICs.
func Domain(s Spec) (string, error) {
	vm, l := s.Shape, s.Layout
	spec := libvirttools.DomainSpec{
		Name: s.Name, UUID: s.UUID, Type: vm.DomainType,
		VCPUs: vm.VCPUs, MemoryBytes: vm.MemoryBytes, CPUModel: vm.CPUModel,
		CPUShares: vm.CPUShares, CPUQuotaUS: vm.CPUQuotaUS, CPUPeriodUS: vm.CPUPeriodUS,
		Firmware:     vm.Firmware,
		RootDisk:     libvirttools.Disk{Path: l.RootDisk(), Format: libvirttools.DiskFormatQCOW2, Bus: vm.DiskBus},
		SerialSocket: l.SerialSocket(), SerialLog: l.SerialLog(),
		// Every VM gets the guest agent channel (exec, probes, agent info)
		// and the exec channels (TTY exec).
		GuestAgentSocket: l.AgentSocket(),
		ExecSockets:      l.ExecSockets(),
		TBCacheMiB:       vm.TBCacheMiB,
		GenID:            s.GenID,
		// A VM in its pod's cgroup has its memory figures from there
		// (pkg/lifecycle/stats_collector.go); only the others need the
		// balloon's.
		NoBalloon:   vm.CgroupParent != "",
		Metadata:    s.Metadata,
		NICs:        s.NICs,
		Filesystems: s.Volumes.Filesystems,
	}
	if s.CommandOutput {
		spec.StdoutSocket, spec.StderrSocket = l.StdoutSocket(), l.StderrSocket()
	}
	spec.ExtraDisks = append(spec.ExtraDisks, libvirttools.Disk{
		Path: l.SeedISO(), Format: libvirttools.DiskFormatRaw, Device: libvirttools.DiskDeviceCDROM, ReadOnly: true,
	})
	spec.ExtraDisks = append(spec.ExtraDisks, s.Volumes.Disks...)
	if vm.Firmware == libvirttools.FirmwareUEFI {
		spec.UEFI = libvirttools.UEFIFirmware{Code: s.OVMFCode, VarsTemplate: s.OVMFVars, Vars: l.EFIVars()}
	}
	return libvirttools.DomainXML(spec)
}

// Exit codes and reasons of a VM that stopped. A guest that powers itself
// off (or honours StopContainer's ACPI shutdown) exits 0; being killed is
// 137 as for a container killed by SIGKILL.
const (
	ExitCompleted = 0
	ExitError     = 1
	ExitKilled    = 137
	ExitCrashed   = 139

	ReasonCompleted = "Completed"
	ReasonKilled    = "Killed"
	ReasonCrashed   = "Crashed"
	ReasonError     = "Error"
)

// ExitStatus maps how a domain stopped to the container's exit code,
// reason and message; stopRequested says StopContainer asked for it.
func ExitStatus(st libvirttools.DomainStatus, stopRequested bool) (int32, string, string) {
	if st.State == libvirttools.DomainCrashed {
		return ExitCrashed, ReasonCrashed, "the guest crashed"
	}
	switch st.Reason {
	case libvirttools.ShutoffShutdown:
		return ExitCompleted, ReasonCompleted, "the guest powered off"
	case libvirttools.ShutoffDestroyed:
		if stopRequested {
			return ExitKilled, ReasonKilled, "the guest did not power off within the stop timeout and was destroyed"
		}
		return ExitKilled, ReasonKilled, "the domain was destroyed outside vmpod"
	case libvirttools.ShutoffCrashed:
		return ExitCrashed, ReasonCrashed, "QEMU or the guest crashed"
	case libvirttools.ShutoffFailed:
		return ExitError, ReasonError, "QEMU failed"
	default:
		return ExitError, ReasonError, "the domain stopped (libvirt reason: " + st.Reason.String() + ")"
	}
}

// Remove removes everything a VM owns: the domain (stopped first), its
// disks and sockets. Missing pieces are fine, so it finishes a half-done
// removal.
func Remove(ctx context.Context, lv libvirttools.Domains, domain string, l Layout) error {
	if err := lv.Destroy(ctx, domain); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("destroy domain %s: %w", domain, err)
	}
	failpoint.Hit("rm/domain-destroyed")
	if err := lv.Undefine(ctx, domain); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("undefine domain %s: %w", domain, err)
	}
	failpoint.Hit("rm/domain-undefined")
	for _, d := range []string{l.Dir, l.RunDir} {
		if d == "" {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("remove %s: %w", d, err)
		}
	}
	failpoint.Hit("rm/files-removed")
	return nil
}

// Usage is a running VM's resource usage.
type Usage struct {
	// CPUTimeNs is QEMU's CPU time for the guest (cpu.time).
	CPUTimeNs uint64
	// WorkingSetBytes and UsageBytes are the guest's memory minus what the
	// guest reports usable (balloon stats), but never less than QEMU's
	// RSS: the guest's report is its own claim, and a guest must not make
	// itself look small to the kubelet's eviction.
	WorkingSetBytes, UsageBytes uint64
	// RSSBytes is QEMU's resident memory on the host.
	RSSBytes uint64
}

// UsageOf maps a domain's libvirt statistics to its usage.
func UsageOf(d libvirttools.DomainStats) Usage {
	used := d.MemoryRSSBytes
	if d.MemoryUsableBytes > 0 && d.MemoryUsableBytes < d.MemoryBytes {
		used = max(d.MemoryBytes-d.MemoryUsableBytes, d.MemoryRSSBytes)
	}
	return Usage{CPUTimeNs: d.CPUTimeNs, WorkingSetBytes: used, UsageBytes: used, RSSBytes: d.MemoryRSSBytes}
}

// DiskBytes is the space a disk file takes (allocated blocks); ok is
// false when it cannot be read.
func DiskBytes(path string) (n uint64, ok bool) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return uint64(sys.Blocks) * 512, true
}
