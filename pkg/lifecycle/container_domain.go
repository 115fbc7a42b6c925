package lifecycle

import (
	"fmt"
	"path/filepath"
	"strconv"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/podspec"
)

// domainSpec turns a container record into the domain builder's input.
func (c *Controller) domainSpec(rec ContainerRecord, sbRec SandboxRecord, sbCfg *runtimeapi.PodSandboxConfig) libvirttools.DomainSpec {
	vm := rec.VM
	m := sbCfg.GetMetadata()
	spec := libvirttools.DomainSpec{
		Name: rec.Domain, UUID: DomainUUID(rec.ID), Type: vm.DomainType,
		VCPUs: vm.VCPUs, MemoryBytes: vm.MemoryBytes, CPUModel: vm.CPUModel,
		CPUShares: vm.CPUShares, CPUQuotaUS: vm.CPUQuotaUS, CPUPeriodUS: vm.CPUPeriodUS,
		Firmware:     vm.Firmware,
		RootDisk:     libvirttools.Disk{Path: rec.RootDisk, Format: "qcow2", Bus: vm.DiskBus},
		SerialSocket: serialSocket(rec.RunDir), SerialLog: filepath.Join(rec.Dir, "serial.log"),
		// Every VM gets the guest agent channel (exec, probes, agent info).
		GuestAgentSocket: filepath.Join(rec.RunDir, "qga.sock"),
		// And the exec channels (TTY exec).
		ExecSockets: execSockets(rec.RunDir),
		TBCacheMiB:  vm.TBCacheMiB,
		Metadata: libvirttools.Metadata{
			SandboxID: sbRec.ID, ContainerID: rec.ID,
			PodName: m.GetName(), PodNamespace: m.GetNamespace(), PodUID: m.GetUid(), Attempt: m.GetAttempt(),
			Instance: c.reg.meta.InstanceID(),
		},
	}
	if att := sbRec.LiveNetwork(); att != nil {
		for _, ifc := range att.Interfaces {
			spec.NICs = append(spec.NICs, libvirttools.NIC{TapName: ifc.Tap, MAC: ifc.MAC})
		}
	}
	if vm.Firmware == libvirttools.FirmwareUEFI {
		spec.UEFI = libvirttools.UEFIFirmware{Code: c.cfg.OVMFCode, VarsTemplate: c.cfg.OVMFVars, Vars: filepath.Join(rec.Dir, "efivars.fd")}
	}
	return spec
}

func serialSocket(runDir string) string { return filepath.Join(runDir, "serial.sock") }

// seedISO is the container's cloud-init seed, attached as a read-only
// CD-ROM (virtio-scsi: Debian's cloud kernel has no SATA driver).
func seedISO(dir string) string { return filepath.Join(dir, "seed.iso") }

// execSocket is the unix socket of the VM's exec channel n.
func execSocket(runDir string, n int) string {
	return filepath.Join(runDir, "exec"+strconv.Itoa(n)+".sock")
}

// execSockets are the sockets of all of a VM's exec channels, in port order.
func execSockets(runDir string) []string {
	var s []string
	for n := range guest.ExecPorts {
		s = append(s, execSocket(runDir, n))
	}
	return s
}

// execChannel is the VM's exec channel n, host and guest side.
func execChannel(runDir string, n int) guest.Channel {
	return guest.Channel{Socket: execSocket(runDir, n), Device: "/dev/virtio-ports/" + libvirttools.ExecChannel(n)}
}

// buildSeed makes the cloud-init seed of a container: the pod's identity
// and hostname, its cloud-init options, the container's env and command,
// and its mounts and devices.
func buildSeed(sbRec SandboxRecord, sbCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig, m guestMounts, ci podspec.CloudInitOptions) (cloudinit.Seed, error) {
	in := cloudinit.Input{
		Datasource: ci.Datasource,
		// Stable per pod UID: a new pod (new UID) is a new instance, a
		// restarted container of the same pod is not.
		InstanceID:    sbCfg.GetMetadata().GetUid(),
		Hostname:      podHostname(sbCfg),
		UserData:      ci.UserData,
		MetaData:      ci.MetaData,
		NetworkConfig: ci.NetworkConfig,
		SSHKeys:       ci.SSHKeys,
		Command:       append(append([]string{}, cfg.GetCommand()...), cfg.GetArgs()...),
		Files:         m.files,
		Shares:        m.shares,
		Devices:       m.devices,
	}
	for _, kv := range cfg.GetEnvs() {
		in.Env = append(in.Env, [2]string{kv.GetKey(), string(kv.GetValue())})
	}
	if att := sbRec.LiveNetwork(); att != nil {
		in.NICs = cloudInitNICs(att)
	}
	if d := sbCfg.GetDnsConfig(); d != nil {
		in.DNS = &cloudinit.DNS{Servers: d.GetServers(), Searches: d.GetSearches(), Options: d.GetOptions()}
	}
	seed, err := cloudinit.Build(in)
	if err != nil {
		return cloudinit.Seed{}, fmt.Errorf("cloud-init seed: %w", err)
	}
	return seed, nil
}
