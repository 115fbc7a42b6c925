package lifecycle

import (
	"context"
	"net/netip"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// SandboxView is a sandbox as it is at one moment: its record and the
// config RunPodSandbox was given.
type SandboxView struct {
	SandboxRecord
	Config *runtimeapi.PodSandboxConfig
}

// Ready reports whether the sandbox is READY.
func (v SandboxView) Ready() bool { return v.State == SandboxReady }

// IPs are the pod's addresses (IPv4 first) while its network is up.
func (v SandboxView) IPs() []netip.Addr {
	if att := v.LiveNetwork(); att != nil {
		return att.IPs()
	}
	return nil
}

// ContainerView is a container as it is at one moment: its record and the
// config CreateContainer was given.
type ContainerView struct {
	ContainerRecord
	Config *runtimeapi.ContainerConfig
}

// AppliedResources are the Linux resources applied to the VM: the create
// request's, updated by each UpdateContainerResources.
func (v ContainerView) AppliedResources() *runtimeapi.LinuxContainerResources {
	return decodeResources(v.Resources, v.Config.GetLinux().GetResources())
}

func (sb *sandbox) view() SandboxView { return SandboxView{SandboxRecord: sb.Get(), Config: sb.config} }

func (c *container) view() ContainerView {
	return ContainerView{ContainerRecord: c.Get(), Config: c.config}
}

// Sandbox returns a sandbox by ID or unique ID prefix; errors wrap
// errdefs.ErrNotFound.
func (c *Controller) Sandbox(id string) (SandboxView, error) {
	sb, err := c.reg.sandbox(id)
	if err != nil {
		return SandboxView{}, err
	}
	return sb.view(), nil
}

// Sandboxes returns every sandbox, by ID.
func (c *Controller) Sandboxes() []SandboxView {
	var out []SandboxView
	for _, sb := range c.reg.listSandboxes() {
		out = append(out, sb.view())
	}
	return out
}

// Container returns a container by ID or unique ID prefix, after checking
// a running VM's domain so that a guest that just powered off shows
// EXITED. Errors wrap errdefs.ErrNotFound.
func (c *Controller) Container(ctx context.Context, id string) (ContainerView, error) {
	ct, err := c.reg.container(id)
	if err != nil {
		return ContainerView{}, err
	}
	c.refresh(ctx, ct)
	return ct.view(), nil
}

// Containers returns every container past CREATING, by ID, as recorded
// (running VMs are checked by the monitor, not here).
func (c *Controller) Containers() []ContainerView {
	var out []ContainerView
	for _, ct := range c.reg.listContainers() {
		if v := ct.view(); v.State != ContainerCreating {
			out = append(out, v)
		}
	}
	return out
}
