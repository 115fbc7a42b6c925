package lifecycle

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/podspec"
	"github.com/vmpod/vmpod/pkg/vm"
	"github.com/vmpod/vmpod/pkg/volumes"
)

// Layout is where the container's VM keeps its files.
func (r ContainerRecord) Layout() vm.Layout { return vm.Layout{Dir: r.Dir, RunDir: r.RunDir} }

// vmSpec is what the container's domain is built from.
func (c *Controller) vmSpec(rec ContainerRecord, sbRec SandboxRecord, sbCfg *runtimeapi.PodSandboxConfig, vols volumes.Plan) vm.Spec {
	m := sbCfg.GetMetadata()
	spec := vm.Spec{
		Name: rec.Domain, UUID: DomainUUID(rec.ID), Shape: rec.VM, Layout: rec.Layout(), Volumes: vols,
		Metadata: libvirttools.Metadata{
			SandboxID: sbRec.ID, ContainerID: rec.ID,
			PodName: m.GetName(), PodNamespace: m.GetNamespace(), PodUID: m.GetUid(), Attempt: m.GetAttempt(),
			Instance: c.reg.meta.InstanceID(),
		},
		OVMFCode: c.cfg.OVMFCode, OVMFVars: c.cfg.OVMFVars,
		CommandOutput: rec.Command != nil,
		GenID:         rec.WarmStart != nil,
	}
	if att := sbRec.LiveNetwork(); att != nil {
		for _, ifc := range att.Interfaces {
			spec.NICs = append(spec.NICs, libvirttools.NIC{TapName: ifc.Tap, MAC: ifc.MAC})
		}
	}
	return spec
}

// buildSeed makes the cloud-init seed of a container: the pod's identity
// and hostname, its cloud-init options, the container's env, and its
// mounts and devices. (Its command is not in the seed: vmpod runs it
// through the guest agent, container_command.go.)
func buildSeed(sbRec SandboxRecord, sbCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig, m volumes.Plan, ci podspec.CloudInitOptions) (cloudinit.Seed, error) {
	seed, err := cloudinit.Build(seedInput(sbRec, sbCfg, cfg, m, ci))
	if err != nil {
		return cloudinit.Seed{}, fmt.Errorf("cloud-init seed: %w", err)
	}
	return seed, nil
}

// seedInput is what a container's seed is built from.
func seedInput(sbRec SandboxRecord, sbCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig, m volumes.Plan, ci podspec.CloudInitOptions) cloudinit.Input {
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
		Files:         m.Files,
		Shares:        m.Shares,
		Devices:       m.Devices,
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
	return in
}

// qemuOwner is the user and group QEMU runs as for domainType, asked of
// libvirt once and remembered.
func (c *Controller) qemuOwner(ctx context.Context, domainType string) (libvirttools.Owner, error) {
	c.ownerMu.Lock()
	defer c.ownerMu.Unlock()
	if o, ok := c.owners[domainType]; ok {
		return o, nil
	}
	o, err := c.libvirt.QEMUOwner(ctx, domainType)
	if err != nil {
		return libvirttools.Owner{}, fmt.Errorf("find the group QEMU runs as: %w", err)
	}
	if c.owners == nil {
		c.owners = map[string]libvirttools.Owner{}
	}
	c.owners[domainType] = o
	return o, nil
}
