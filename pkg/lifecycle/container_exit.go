package lifecycle

import (
	"context"
	"errors"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/vm"
)

// markExitedOpLocked records that a running container's VM stopped. ct.op
// is held.
func (c *Controller) markExitedOpLocked(ctx context.Context, ct *container, st libvirttools.DomainStatus) error {
	if ct.Get().State != ContainerRunning {
		return nil
	}
	rec, err := ct.Update(func(r *ContainerRecord) error {
		r.State = ContainerExited
		r.FinishedAt = c.now().UnixNano()
		r.ExitCode, r.Reason, r.Message = vm.ExitStatus(st, r.StopRequested)
		return nil
	})
	if err != nil {
		return err
	}
	if con := ct.swapConsole(nil); con != nil {
		con.Close()
	}
	logging.From(ctx).Info("VM exited", logging.KeyContainerID, rec.ID, "exit_code", rec.ExitCode, "reason", rec.Reason)
	return nil
}

// refresh updates a RUNNING container from its domain's state now, unless
// a lifecycle operation holds it (that operation records the outcome).
func (c *Controller) refresh(ctx context.Context, ct *container) {
	if !ct.op.TryLock() {
		return
	}
	defer ct.op.Unlock()
	c.refreshOpLocked(ctx, ct)
}

// refreshOpLocked is refresh with c.op held.
func (c *Controller) refreshOpLocked(ctx context.Context, ct *container) {
	rec := ct.Get()
	if rec.State != ContainerRunning {
		return
	}
	st, err := c.libvirt.Status(ctx, rec.Domain)
	if err != nil {
		// NotFound: the domain was undefined behind our back.
		st = libvirttools.DomainStatus{State: libvirttools.DomainShutoff, Reason: libvirttools.ShutoffDestroyed}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return // libvirt unreachable: report the last known state
		}
	}
	if st.State == libvirttools.DomainShutoff || st.State == libvirttools.DomainCrashed {
		if err := c.markExitedOpLocked(ctx, ct, st); err != nil {
			logging.From(ctx).Error("record VM exit", logging.KeyContainerID, rec.ID, logging.KeyErr, err)
		}
	}
}

// monitorInterval is how often running VMs are checked for a guest that
// powered itself off, so ListContainers reports EXITED without a libvirt
// call per container.
const monitorInterval = time.Second

// Monitor checks running VMs every monitorInterval with one bulk libvirt
// call until ctx is done.
func (c *Controller) Monitor(ctx context.Context) {
	t := time.NewTicker(monitorInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.CheckRunning(ctx)
	}
}

// CheckRunning checks every running VM's domain now, with one bulk
// libvirt call, and records the exits it finds (Monitor calls it every
// monitorInterval).
func (c *Controller) CheckRunning(ctx context.Context) {
	var running []*container
	for _, ct := range c.reg.listContainers() {
		if ct.Get().State == ContainerRunning {
			running = append(running, ct)
		}
	}
	if len(running) == 0 {
		return
	}
	doms, err := c.libvirt.List(ctx, DomainPrefix)
	if err != nil {
		return
	}
	byName := map[string]libvirttools.DomainStatus{}
	for _, d := range doms {
		byName[d.Name] = d
	}
	for _, ct := range running {
		d, ok := byName[ct.Get().Domain]
		if ok && d.State != libvirttools.DomainShutoff && d.State != libvirttools.DomainCrashed {
			continue
		}
		c.refresh(ctx, ct)
	}
}
