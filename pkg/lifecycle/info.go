package lifecycle

import (
	"context"
	"strings"
	"time"

	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/metrics"
)

// SandboxInfo is the verbose information of PodSandboxStatus: the pod's
// network and, per VM, its domain, libvirt XML and disks.
func (c *Controller) SandboxInfo(ctx context.Context, id string) (map[string]any, error) {
	sb, err := c.reg.sandbox(id)
	if err != nil {
		return nil, err
	}
	rec := sb.Get()
	info := map[string]any{"handler": rec.Handler, "name": rec.Name}
	if rec.Network != nil {
		info["network"] = map[string]any{
			"netns": rec.Network.NetNS, "cniConfig": rec.Network.ConfFile, "interfaces": rec.Network.Interfaces,
			"cniResult": rec.Network.Result, "torndown": rec.NetworkDown,
		}
	}
	var vms []map[string]any
	for _, ct := range c.reg.containersOf(rec.ID) {
		crec := ct.Get()
		vm := map[string]any{
			"containerID": crec.ID, "state": crec.State, "domain": crec.Domain,
			"disks":        map[string]string{"root": crec.RootDisk, "image": c.images.Path(crec.ImageRef)},
			"serialSocket": crec.Layout().SerialSocket(), "vm": crec.VM,
		}
		if xml, err := c.libvirt.XML(ctx, crec.Domain); err == nil {
			vm["domainXML"] = xml
		}
		vms = append(vms, vm)
	}
	info["vms"] = vms
	return info, nil
}

// ContainerInfo is the verbose information of ContainerStatus: the
// domain, its XML, the disks, the VM's cgroup placement (pkg/cgroups'
// Placement: where, the limits, libvirt's directories it left, what
// QEMU used before it was placed), while the VM runs the guest agent, and
// the state of the container's command.
func (c *Controller) ContainerInfo(ctx context.Context, id string) (map[string]any, error) {
	ct, err := c.reg.container(id)
	if err != nil {
		return nil, err
	}
	rec := ct.Get()
	info := map[string]any{
		"sandboxID": rec.SandboxID, "domain": rec.Domain, "vm": rec.VM,
		"disks":        map[string]string{"root": rec.RootDisk, "image": c.images.Path(rec.ImageRef)},
		"serialSocket": rec.Layout().SerialSocket(),
	}
	if xml, err := c.libvirt.XML(ctx, rec.Domain); err == nil {
		info["domainXML"] = xml
	}
	if rec.Cgroup != nil {
		info["cgroup"] = rec.Cgroup
	}
	if rec.State == ContainerRunning {
		info["guestAgent"] = c.agentInfo(ctx, rec.Domain)
	}
	if cs := rec.Command; cs != nil {
		// The command's progress: started (its wrapper's guest pid),
		// exited (its code), as stored.
		info["command"] = map[string]any{"guestPID": cs.PID, "starting": cs.Starting, "exited": cs.Exited, "exitCode": cs.ExitCode,
			"stdoutSocket": rec.Layout().StdoutSocket(), "stderrSocket": rec.Layout().StderrSocket()}
	}
	if r := ct.guestReports(); len(r) > 0 {
		info["guestReports"] = r
	}
	return info, nil
}

// agentInfo says whether the guest agent answers and which version it is.
// qemu-ga starts late in a real guest's boot: "not connected" early on is
// normal, not an error.
func (c *Controller) agentInfo(ctx context.Context, domain string) map[string]any {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := guest.NewAgent(c.libvirt, domain).Info(ctx)
	if err != nil {
		return map[string]any{"connected": false, "error": err.Error()}
	}
	return map[string]any{"connected": true, "version": v}
}

// Health is the runtime's condition for the CRI Status call.
type Health struct {
	// RuntimeErr says why VMs cannot run (libvirt unreachable); nil when
	// they can.
	RuntimeErr error
	// HostProblem is a host misconfiguration that makes VMs slow or
	// failing, found at start-up; "" when none.
	HostProblem string
	// NetworkErr says why pods cannot get a network; nil when they can.
	NetworkErr error
	// Libvirt describes the libvirt daemon when it answers.
	Libvirt libvirttools.Info
}

// Health checks libvirt (a live call) and the pod network's readiness.
func (c *Controller) Health(ctx context.Context) Health {
	var h Health
	h.Libvirt, h.RuntimeErr = c.libvirt.Ping(ctx)
	h.HostProblem = c.hostCheck
	if c.net != nil {
		h.NetworkErr = c.net.Ready()
	}
	return h
}

// metricsSnapshot counts containers and sandboxes by state for the state
// gauges, at scrape time. It reads only the in-memory records (no libvirt
// call, no operation lock), so a scrape never waits behind a slow stop.
// Every state is reported, zero included, so a series does not vanish.
func (c *Controller) metricsSnapshot() metrics.Snapshot {
	snap := metrics.Snapshot{
		VMs:              map[string]int{},
		Sandboxes:        map[string]int{"ready": 0, "notready": 0},
		EventSubscribers: c.events.Count(),
	}
	for _, st := range []string{"creating", "created", "running", "exited"} {
		snap.VMs[st] = 0
	}
	for _, ct := range c.reg.listContainers() {
		snap.VMs[strings.ToLower(ct.Get().State)]++
	}
	for _, sb := range c.reg.listSandboxes() {
		snap.Sandboxes[strings.ToLower(sb.Get().State)]++
	}
	return snap
}
