package lifecycle

import (
	"context"
	"errors"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/logging"
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
		r.ExitCode, r.Reason, r.Message = c.exitStatus(*r, st)
		if r.Command != nil {
			commandExitStatus(r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	ct.stopCommandRunner()
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

// reconcileInterval is how often Monitor checks every running VM with one
// bulk libvirt call. It is a safety net: libvirt's events report exits
// at once, and after every reconnection Monitor checks anyway, since
// events are lost while libvirtd is unreachable.
const reconcileInterval = 10 * time.Second

// Monitor records VM exits until ctx is done. libvirt's lifecycle events
// drive it: when a domain stops or crashes, its RUNNING container is
// refreshed at once, so EXITED (and the STOPPED event, which follows from
// the record) comes within milliseconds of the guest's poweroff. It also
// checks every running VM with one bulk call (CheckRunning) when it
// starts, after every (re)connection to libvirtd, when its subscription
// ended because it fell behind, and every reconcileInterval.
func (c *Controller) Monitor(ctx context.Context) {
	ctx = logging.With(ctx, c.log.With("component", "monitor"))
	log := logging.From(ctx)
	tick := time.NewTicker(reconcileInterval)
	defer tick.Stop()
	warned := false
	for ctx.Err() == nil {
		sub, err := c.libvirt.Subscribe()
		if err != nil {
			if !warned {
				log.Warn("libvirt events unavailable; VM exits are seen by the periodic check only", "interval", reconcileInterval, logging.KeyErr, err)
				warned = true
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
				c.CheckRunning(ctx)
			}
			continue
		}
		c.CheckRunning(ctx)
		c.watchEvents(ctx, sub, tick.C)
		sub.Close()
	}
}

// watchEvents handles sub's events until ctx is done or sub ends.
func (c *Controller) watchEvents(ctx context.Context, sub *libvirttools.EventSubscription, tick <-chan time.Time) {
	log := logging.From(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.Done():
			log.Warn("libvirt event subscription ended; subscribing again", logging.KeyErr, sub.Err())
			return
		case <-tick:
			c.CheckRunning(ctx)
		case ev := <-sub.C():
			switch ev.Kind {
			case libvirttools.EventConnected:
				log.Debug("libvirt (re)connected: checking running VMs")
				c.CheckRunning(ctx)
			case libvirttools.EventAgent:
				log.Debug("guest agent", logging.KeyDomain, ev.Agent.Name, "connected", ev.Agent.Connected)
			case libvirttools.EventDomain:
				c.domainChanged(ctx, ev.Domain)
			}
		}
	}
}

// domainChanged refreshes the RUNNING container of a domain that stopped
// or crashed. The refresh asks libvirt for the state rather than trusting
// the event, which may be stale by then (a failed start destroys a domain
// that a retried start boots again). It waits for the container's
// operation lock in its own goroutine: an operation holding it (a stop
// waiting for the guest) records the exit itself, and one that does not
// (a start that just finished) leaves it to the refresh.
func (c *Controller) domainChanged(ctx context.Context, ev libvirttools.DomainEvent) {
	if ev.State != libvirttools.DomainShutoff && ev.State != libvirttools.DomainCrashed {
		return
	}
	for _, ct := range c.reg.listContainers() {
		if rec := ct.Get(); rec.Domain == ev.Name {
			logging.From(ctx).Debug("domain stopped", logging.KeyContainerID, rec.ID, logging.KeyDomain, ev.Name, "event", ev.Detail)
			go func() {
				ct.op.Lock()
				defer ct.op.Unlock()
				c.refreshOpLocked(ctx, ct)
			}()
			return
		}
	}
}

// CheckRunning checks every running VM's domain now, with one bulk
// libvirt call, and records the exits it finds, then checks that the
// running VMs are still wholly in their pods' cgroups (Monitor calls it
// every reconcileInterval and after every reconnection to libvirtd). The
// placement check needs no libvirtd (QEMU's pid is in libvirt's pid
// file): it runs when libvirtd does not answer too.
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
	defer c.verifyPlacements(ctx)
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
