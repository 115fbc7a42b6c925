package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/vm"
)

// StopContainer asks the guest to power off (ACPI) and destroys the domain
// if it is still running after timeout (0 destroys at once). Stopping an
// unknown or already stopped container succeeds.
func (c *Controller) StopContainer(ctx context.Context, id string, timeout time.Duration) error {
	ct, err := c.reg.container(id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.stopContainer(ctx, ct, timeout)
}

func (c *Controller) stopContainer(ctx context.Context, ct *container, timeout time.Duration) error {
	ct.op.Lock()
	defer ct.op.Unlock()
	c.refreshOpLocked(ctx, ct)
	rec := ct.Get()
	if rec.State != ContainerRunning {
		return nil
	}
	log := logging.From(ctx).With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	if _, err := ct.Update(func(r *ContainerRecord) error { r.StopRequested = true; return nil }); err != nil {
		return err
	}
	if timeout > 0 {
		log.Info("asking the guest to power off", "timeout", timeout)
		if err := c.libvirt.Shutdown(ctx, rec.Domain); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			log.Warn("ACPI shutdown failed; destroying", logging.KeyErr, err)
		} else if off, err := c.libvirt.WaitShutoff(ctx, rec.Domain, timeout); err == nil && off {
			c.refreshOpLocked(ctx, ct)
			return nil
		}
	}
	if err := c.libvirt.Destroy(ctx, rec.Domain); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("destroy domain %s: %w", rec.Domain, err)
	}
	log.Info("VM destroyed")
	c.refreshOpLocked(ctx, ct)
	return nil
}

// RemoveContainer destroys the VM if it runs, undefines the domain, deletes
// its root overlay and sockets and forgets it. Removing an unknown
// container succeeds.
func (c *Controller) RemoveContainer(ctx context.Context, id string) error {
	ct, err := c.reg.container(id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.removeContainer(ctx, ct)
}

func (c *Controller) removeContainer(ctx context.Context, ct *container) error {
	if err := c.stopContainer(ctx, ct, 0); err != nil {
		return err
	}
	ct.op.Lock()
	defer ct.op.Unlock()
	if !c.reg.isContainer(ct) {
		return nil // a concurrent RemoveContainer finished first
	}
	if con := ct.swapConsole(nil); con != nil {
		con.Close()
	}
	rec := ct.Get()
	if err := vm.Remove(ctx, c.libvirt, rec.Domain, rec.Layout()); err != nil {
		return err
	}
	if err := c.reg.removeContainer(ct); err != nil {
		return err
	}
	c.images.Release(rec.ImageDisk)
	c.publishContainerGone(ctx, rec)
	logging.From(ctx).Info("container removed", logging.KeyContainerID, rec.ID)
	return nil
}
