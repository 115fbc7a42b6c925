package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cgroups"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/podspec"
	"github.com/vmpod/vmpod/pkg/rollback"
	"github.com/vmpod/vmpod/pkg/vm"
)

// A VM of a pod with a cgroup_parent runs in its pod's cgroup: StartContainer
// records where (the container record's Cgroup) before it starts the
// domain paused, then moves every thread of its QEMU into
// <pod cgroup>/vmpod-<container ID> with the VM's limits, before the guest
// runs. The monitor checks every running VM's placement whenever it
// checks the VMs (every reconcileInterval and after every reconnection to
// libvirtd), as recovery does after a restart, and puts back what moved.
// The stats come from the cgroups; an exit with OOM kills in the VM's
// cgroup is reported as OOMKilled; RemoveContainer removes the cgroup.

// Cgroups puts VMs into their pods' cgroups (*cgroups.Host implements it;
// pkg/cgroups says how). Errors wrap errdefs classes.
type Cgroups interface {
	// ResolveParent checks a pod's cgroup_parent for the node's cgroup
	// driver (errdefs.ErrInvalidArgument when it is not of its form).
	ResolveParent(cgroupParent string) (string, error)
	// Plan says where a container's VM goes, touching nothing.
	Plan(cgroupParent, containerID string) (cgroups.Placement, error)
	// Apply moves process pid (QEMU) there with p.Limits and returns the
	// placement as applied.
	Apply(p cgroups.Placement, pid int) (cgroups.Placement, error)
	// Verify moves back threads that left and restores changed limits;
	// it returns how many threads it moved.
	Verify(p cgroups.Placement, pid int) (int, error)
	// SetLimits changes the limits live and returns the placement with
	// them.
	SetLimits(p cgroups.Placement, l cgroups.Limits) (cgroups.Placement, error)
	// Stats and PodStats read the usage of the VM's cgroup and of its
	// pod's.
	Stats(p cgroups.Placement) (cgroups.Usage, error)
	PodStats(p cgroups.Placement) (cgroups.Usage, error)
	// OOMKills counts the kernel's OOM kills in the VM's cgroup.
	OOMKills(p cgroups.Placement) uint64
	// Remove removes the VM's cgroup once QEMU is gone.
	Remove(p cgroups.Placement) error
}

// ReasonOOMKilled is the exit reason of a VM whose QEMU the kernel killed
// for going over its memory limit, as the kubelet knows it from
// containers.
const ReasonOOMKilled = "OOMKilled"

// checkCgroupParent refuses a pod whose cgroup_parent vmpod cannot use.
func (c *Controller) checkCgroupParent(cfg *runtimeapi.PodSandboxConfig) error {
	parent := cfg.GetLinux().GetCgroupParent()
	if parent == "" {
		return nil
	}
	if c.cgroups == nil {
		return fmt.Errorf("the pod asks for cgroup_parent %q, but vmpod cannot use this node's cgroups (%s); give vmpod the host's /sys/fs/cgroup: %w",
			parent, c.cgroupsErr, errdefs.ErrFailedPrecondition)
	}
	_, err := c.cgroups.ResolveParent(parent)
	return err
}

// sandboxOverhead is the pod's overhead as the kubelet last gave it
// (RunPodSandbox, then UpdatePodSandboxResources).
func sandboxOverhead(rec SandboxRecord, cfg *runtimeapi.PodSandboxConfig) *runtimeapi.LinuxContainerResources {
	if len(rec.Overhead) > 0 {
		r := &runtimeapi.LinuxContainerResources{}
		if protojson.Unmarshal(rec.Overhead, r) == nil {
			return r
		}
	}
	return cfg.GetLinux().GetOverhead()
}

// vmLimits are a VM's cgroup limits: guest RAM plus the overhead (the
// RuntimeClass's, else the handler's vm_memory_overhead), and the
// container's CPU shares and quota.
func (c *Controller) vmLimits(shape podspec.Shape, overhead *runtimeapi.LinuxContainerResources) cgroups.Limits {
	extra := overhead.GetMemoryLimitInBytes()
	if extra <= 0 {
		h, err := c.cfg.ResolveHandler(shape.Handler)
		if err != nil { // a handler removed from the config since
			h, _ = c.cfg.ResolveHandler("")
		}
		extra = h.MemoryOverhead()
	}
	return cgroups.Limits{
		MemoryBytes: shape.MemoryBytes + extra,
		CPUShares:   shape.CPUShares, CPUQuotaUS: shape.CPUQuotaUS, CPUPeriodUS: shape.CPUPeriodUS,
	}
}

// planCgroup records where the container's VM will run before its domain
// starts, so that recovery and removal find the cgroup whatever happens
// next; the release removes it (once QEMU is gone) and forgets it.
func (c *Controller) planCgroup(ct *container, sbRec SandboxRecord, sbCfg *runtimeapi.PodSandboxConfig) (rollback.Release, error) {
	rec := ct.Get()
	if c.cgroups == nil {
		return nil, c.checkCgroupParent(sbCfg)
	}
	p, err := c.cgroups.Plan(rec.VM.CgroupParent, rec.ID)
	if err != nil {
		return nil, err
	}
	p.Limits = c.vmLimits(rec.VM, sandboxOverhead(sbRec, sbCfg))
	if _, err := ct.Update(func(r *ContainerRecord) error { r.Cgroup = &p; return nil }); err != nil {
		return nil, fmt.Errorf("store container record: %w", err)
	}
	return func(context.Context) error {
		if err := c.removeCgroup(ct.Get()); err != nil {
			return err
		}
		_, err := ct.Update(func(r *ContainerRecord) error { r.Cgroup = nil; return nil })
		return err
	}, nil
}

// placeVM moves the started (paused) VM's QEMU into its planned cgroup.
func (c *Controller) placeVM(ctx context.Context, ct *container) error {
	rec := ct.Get()
	begin := time.Now()
	pid, err := c.libvirt.QEMUPID(ctx, rec.Domain)
	if err != nil {
		return fmt.Errorf("find the VM's QEMU: %w", err)
	}
	p, err := c.cgroups.Apply(*rec.Cgroup, pid)
	if err != nil {
		return fmt.Errorf("move the VM into its pod's cgroup %s: %w", rec.Cgroup.Parent, err)
	}
	if _, err := ct.Update(func(r *ContainerRecord) error { r.Cgroup = &p; return nil }); err != nil {
		return fmt.Errorf("store container record: %w", err)
	}
	// The start-up figures are what the pod's cgroup does not count.
	logging.From(ctx).Info("VM placed in its pod's cgroup", logging.KeyContainerID, rec.ID, "cgroup", p.Path,
		"hierarchies", len(p.Hierarchies), "memory_limit", p.Limits.MemoryBytes, "cpu_quota_us", p.Limits.CPUQuotaUS,
		"cpu_shares", p.Limits.CPUShares, "qemu_start_cpu_ns", p.StartCPUNs, "qemu_start_memory_bytes", p.StartMemoryBytes,
		"took", time.Since(begin))
	return nil
}

// removeCgroup removes a container's VM cgroup, if it has one.
func (c *Controller) removeCgroup(rec ContainerRecord) error {
	if rec.Cgroup == nil || c.cgroups == nil {
		return nil
	}
	if err := c.cgroups.Remove(*rec.Cgroup); err != nil {
		return fmt.Errorf("container %s: %w", rec.ID, err)
	}
	return nil
}

// verifyPlacement puts a running VM's threads back into its cgroup and
// restores its limits, logging what it did; ct.op is held.
func (c *Controller) verifyPlacement(ctx context.Context, ct *container) {
	rec := ct.Get()
	if rec.State != ContainerRunning || rec.Cgroup == nil || c.cgroups == nil {
		return
	}
	log := logging.From(ctx).With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	pid, err := c.libvirt.QEMUPID(ctx, rec.Domain)
	if err != nil {
		if !errors.Is(err, errdefs.ErrNotFound) {
			log.Warn("cannot find the VM's QEMU to check its cgroup", logging.KeyErr, err)
		}
		return // stopped: the exit is recorded elsewhere
	}
	moved, err := c.cgroups.Verify(*rec.Cgroup, pid)
	switch {
	case err != nil && !errors.Is(err, errdefs.ErrNotFound):
		log.Error("the VM is not (wholly) in its pod's cgroup", "cgroup", rec.Cgroup.Path, logging.KeyErr, err)
	case moved > 0:
		log.Warn("moved VM threads back into the pod's cgroup", "cgroup", rec.Cgroup.Path, "threads", moved)
	}
}

// verifyPlacements checks every running VM's placement (Monitor's
// periodic check). A VM whose container is busy is checked next time.
func (c *Controller) verifyPlacements(ctx context.Context) {
	if c.cgroups == nil {
		return
	}
	for _, ct := range c.reg.listContainers() {
		if rec := ct.Get(); rec.State != ContainerRunning || rec.Cgroup == nil {
			continue
		}
		if !ct.op.TryLock() {
			continue
		}
		c.verifyPlacement(ctx, ct)
		ct.op.Unlock()
	}
}

// exitStatus is how a stopped VM is reported: vm.ExitStatus, unless the
// kernel OOM-killed its QEMU in its cgroup (the guest did not power off).
func (c *Controller) exitStatus(rec ContainerRecord, st libvirttools.DomainStatus) (int32, string, string) {
	code, reason, msg := vm.ExitStatus(st, rec.StopRequested)
	if rec.Cgroup == nil || c.cgroups == nil || reason == vm.ReasonCompleted {
		return code, reason, msg
	}
	if n := c.cgroups.OOMKills(*rec.Cgroup); n > 0 {
		l := rec.Cgroup.Limits
		return vm.ExitKilled, ReasonOOMKilled, fmt.Sprintf(
			"the kernel's OOM killer killed QEMU: the VM used more than its memory limit of %d bytes (guest RAM %d + overhead %d); raise the RuntimeClass's memory overhead or vm_memory_overhead, or give the guest less RAM",
			l.MemoryBytes, rec.VM.MemoryBytes, l.MemoryBytes-rec.VM.MemoryBytes)
	}
	return code, reason, msg
}
