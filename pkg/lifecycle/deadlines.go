package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
)

// errCreateTimeout is the cause of a create whose work ran past
// create_timeout.
var errCreateTimeout = fmt.Errorf("the work ran past create_timeout: %w", errdefs.ErrUnavailable)

// errToolTimeout is the cause of a tool run past tool_timeout.
var errToolTimeout = fmt.Errorf("the tool ran past tool_timeout (is the disk or the machine overloaded?): %w", errdefs.ErrUnavailable)

// detached bounds the work of a RunPodSandbox or CreateContainer, which
// runs on after its caller gave up (pending), by create_timeout; its
// rollback then runs on fresh contexts of its own.
func (c *Controller) detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, c.cfg.CreateTimeout.Std(), errCreateTimeout)
}

// toolContext bounds one run of a local tool (qemu-img, genisoimage) by
// tool_timeout.
func (c *Controller) toolContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, c.cfg.ToolTimeout.Std(), errToolTimeout)
}

// toolErr says why a tool failed when its context ended: the tool's
// deadline or the create's, as Unavailable (a retry may succeed), never
// as a bare "signal: killed" or DeadlineExceeded.
func toolErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		if errors.Is(cause, errToolTimeout) || errors.Is(cause, errCreateTimeout) {
			return fmt.Errorf("%w (%v)", cause, err)
		}
	}
	return err
}
