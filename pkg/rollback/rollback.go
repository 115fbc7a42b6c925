// Package rollback undoes the finished steps of a multi-step operation
// that failed half-way: every acquire returns its Release, the operation
// Adds each one as it goes, and one deferred Run on the operation's named
// error releases them in reverse order, each with its own deadline (the
// operation's context may be dead), logging every failure.
package rollback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vmpod/vmpod/pkg/logging"
)

// StepTimeout bounds each release, which runs on a fresh context because
// the operation's may be dead.
const StepTimeout = 2 * time.Minute

// Release undoes one acquired resource.
type Release func(ctx context.Context) error

// Steps collects what a multi-step operation acquired, each with its
// release. The operation defers Run on its named error: on failure the
// releases run in reverse order, each with its own deadline, and their
// errors are logged (never dropped) and returned.
//
//	var undo rollback.Steps
//	defer func() { undo.Run(ctx, log, retErr) }()
//	rel, err := acquire(...)
//	if err != nil { return err }
//	undo.Add("the thing", rel)
type Steps struct {
	steps []step
}

type step struct {
	what string
	rel  Release
}

// Add records a release; what names the resource for the log.
func (r *Steps) Add(what string, rel Release) {
	r.steps = append(r.steps, step{what, rel})
}

// Run releases everything in reverse order when cause is not nil, and
// does nothing otherwise. It returns the releases' errors, joined.
func (r *Steps) Run(ctx context.Context, log *slog.Logger, cause error) error {
	if cause == nil {
		return nil
	}
	var errs []error
	for i := len(r.steps) - 1; i >= 0; i-- {
		s := r.steps[i]
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StepTimeout)
		err := s.rel(cctx)
		cancel()
		if err != nil {
			log.Error("rollback: releasing "+s.what+" failed; it may be left behind", "cause", cause.Error(), logging.KeyErr, err)
			errs = append(errs, fmt.Errorf("release %s: %w", s.what, err))
		}
	}
	return errors.Join(errs...)
}
