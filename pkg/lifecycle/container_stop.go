package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/vm"
)

// StopContainer asks the guest to power off (ACPI) and destroys the domain
// if it is still running after timeout (0 destroys at once). A container
// whose command runs has it sent SIGTERM first; the VM is shut down once
// the command exited, with the rest of the timeout. Stopping an unknown or
// already stopped container succeeds.
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
	failpoint.Hit("stop/requested")
	if rec.Command != nil && !rec.Command.Exited && timeout > 0 {
		// The command first: SIGTERM, and its exit within the grace
		// period; the VM gets what is left.
		deadline := time.Now().Add(timeout)
		c.stopCommand(ctx, ct, deadline, log)
		timeout = time.Until(deadline)
	}
	if timeout > 0 && c.powerOff(ctx, rec.Domain, timeout, log) {
		c.refreshOpLocked(ctx, ct)
		failpoint.Hit("stop/exited")
		return nil
	}
	if err := c.libvirt.Destroy(ctx, rec.Domain); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("destroy domain %s: %w", rec.Domain, err)
	}
	log.Info("VM destroyed")
	failpoint.Hit("stop/destroyed")
	c.refreshOpLocked(ctx, ct)
	failpoint.Hit("stop/exited")
	return nil
}

// stopCommand sends SIGTERM to a running command and waits until it
// exited (its exit is then stored) or deadline passed. A command that has
// not started is not started any more (the stop was requested).
func (c *Controller) stopCommand(ctx context.Context, ct *container, deadline time.Time, log *slog.Logger) {
	run, rec := ct.getRun(), ct.Get()
	if run == nil || rec.Command.PID == 0 {
		return
	}
	sctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := guest.NewAgent(c.libvirt, rec.Domain).SignalCommand(sctx, "", "TERM"); err != nil {
		log.Warn("could not send SIGTERM to the command; shutting its VM down", logging.KeyErr, err)
		return
	}
	failpoint.Hit("command/signalled")
	log.Info("sent SIGTERM to the command")
	select {
	case <-run.exited:
		if err := c.recordCommandExit(ct, run.result); err != nil {
			log.Warn("the command exited; recording its exit failed", logging.KeyErr, err)
		}
	case <-run.done:
	case <-sctx.Done():
		log.Info("the command did not exit within the stop's grace period")
	}
}

// acpiRepeat is how often powerOff presses the power button again: a
// guest that is still booting has nothing listening for it yet (acpid,
// systemd-logind) and misses a press.
const acpiRepeat = 5 * time.Second

// powerOff asks the guest to power off (ACPI), again every acpiRepeat,
// and reports whether the domain shut off within timeout.
func (c *Controller) powerOff(ctx context.Context, domain string, timeout time.Duration, log *slog.Logger) bool {
	log.Info("asking the guest to power off", "timeout", timeout)
	deadline := time.Now().Add(timeout)
	for pressed := false; ; pressed = true {
		if err := c.libvirt.Shutdown(ctx, domain); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			log.Warn("ACPI shutdown failed; destroying", logging.KeyErr, err)
			return false
		}
		if !pressed {
			failpoint.Hit("stop/shutdown-sent")
		}
		off, err := c.libvirt.WaitShutoff(ctx, domain, min(acpiRepeat, time.Until(deadline)))
		if err != nil || off {
			return err == nil && off
		}
		if time.Until(deadline) <= 0 {
			return false
		}
		log.Debug("the guest has not powered off yet; pressing the power button again")
	}
}

// RemoveContainer destroys the VM if it runs, undefines the domain, deletes
// its root overlay, sockets and cgroup, and forgets it. Removing an unknown
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
	ct.stopCommandRunner()
	if con := ct.swapConsole(nil); con != nil {
		con.Close()
	}
	rec := ct.Get()
	if err := vm.Remove(ctx, c.libvirt, rec.Domain, rec.Layout()); err != nil {
		return err
	}
	if err := c.removeCgroup(rec); err != nil {
		return err
	}
	if err := c.reg.removeContainer(ct); err != nil {
		return err
	}
	failpoint.Hit("rm/record-removed")
	c.images.Release(rec.ImageDisk)
	c.publishContainerGone(ctx, rec)
	logging.From(ctx).Info("container removed", logging.KeyContainerID, rec.ID)
	return nil
}
