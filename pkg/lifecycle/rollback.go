package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vmpod/vmpod/pkg/logging"
)

// cleanupTimeout bounds each rollback step, which runs on a fresh context
// because the request's may be dead.
const cleanupTimeout = 2 * time.Minute

// release undoes one acquired resource.
type release func(ctx context.Context) error

// rollback collects what a multi-step operation acquired, each with its
// release. The operation defers run on its named error: on failure the
// releases run in reverse order, each with its own deadline, and their
// errors are logged (never dropped) and returned.
//
//	var undo rollback
//	defer func() { undo.run(ctx, log, retErr) }()
//	rel, err := acquire(...)
//	if err != nil { return err }
//	undo.add("the thing", rel)
type rollback struct {
	steps []rollbackStep
}

type rollbackStep struct {
	what string
	rel  release
}

// add records a release; what names the resource for the log.
func (r *rollback) add(what string, rel release) {
	r.steps = append(r.steps, rollbackStep{what, rel})
}

// run releases everything in reverse order when cause is not nil, and
// does nothing otherwise. It returns the releases' errors, joined.
func (r *rollback) run(ctx context.Context, log *slog.Logger, cause error) error {
	if cause == nil {
		return nil
	}
	var errs []error
	for i := len(r.steps) - 1; i >= 0; i-- {
		s := r.steps[i]
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		err := s.rel(cctx)
		cancel()
		if err != nil {
			log.Error("rollback: releasing "+s.what+" failed; it may be left behind", "cause", cause.Error(), logging.KeyErr, err)
			errs = append(errs, fmt.Errorf("release %s: %w", s.what, err))
		}
	}
	return errors.Join(errs...)
}
