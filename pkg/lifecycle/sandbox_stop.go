package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/logging"
)

// StopSandbox marks the sandbox NOTREADY (so nothing new is created or
// started in it), stops the pod's VM at once (the kubelet has already given
// its containers their grace period) and tears the pod's network down.
// Stopping an unknown or already stopped sandbox succeeds; a retry finishes
// a half-done teardown.
func (c *Controller) StopSandbox(ctx context.Context, id string) error {
	sb, err := c.reg.sandbox(id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	// The op lock waits for a CreateContainer in progress.
	sb.op.Lock()
	rec := sb.Get()
	if rec.State != SandboxNotReady {
		rec, err = sb.Update(func(r *SandboxRecord) error {
			r.State = SandboxNotReady
			return nil
		})
		if err == nil {
			logging.From(ctx).Info("pod sandbox stopped", logging.KeySandboxID, rec.ID)
		}
	}
	sb.op.Unlock()
	if err != nil {
		return err
	}
	failpoint.Hit("stopp/notready")
	for _, ct := range c.reg.containersOf(rec.ID) {
		if err := c.stopContainer(ctx, ct, 0); err != nil {
			return fmt.Errorf("stop container %s of pod sandbox %s: %w", ct.Get().ID, rec.ID, err)
		}
	}
	failpoint.Hit("stopp/vm-stopped")
	sb.op.Lock()
	defer sb.op.Unlock()
	return c.teardownNetwork(ctx, sb)
}

// RemoveSandbox removes the sandbox and every container in it (stopping
// a running VM first), tearing the network down if no stop did. Removing
// an unknown sandbox succeeds.
func (c *Controller) RemoveSandbox(ctx context.Context, id string) error {
	sb, err := c.reg.sandbox(id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	// The op lock waits for a CreateContainer in progress and keeps new
	// ones out (they find the sandbox gone), so no container is made
	// behind the removal.
	sb.op.Lock()
	defer sb.op.Unlock()
	if !c.reg.isSandbox(sb) {
		return nil // a concurrent RemovePodSandbox finished first
	}
	rec := sb.Get()
	for _, ct := range c.reg.containersOf(rec.ID) {
		if err := c.removeContainer(ctx, ct); err != nil {
			return fmt.Errorf("remove container %s of pod sandbox %s: %w", ct.Get().ID, rec.ID, err)
		}
	}
	failpoint.Hit("rmp/containers-removed")
	if err := c.teardownNetwork(ctx, sb); err != nil {
		return err
	}
	if err := c.reg.removeSandbox(sb); err != nil {
		return err
	}
	failpoint.Hit("rmp/record-removed")
	logging.From(ctx).Info("pod sandbox removed", logging.KeySandboxID, rec.ID)
	c.publishSandboxGone(ctx, sb)
	return nil
}
