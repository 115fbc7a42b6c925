package transfer

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
)

// Defaults of Limits' zero fields.
const (
	DefaultMaxImageSize   = 64 << 30
	DefaultRequestTimeout = 30 * time.Second
	DefaultStallTimeout   = time.Minute
)

// Limits bound one pull; both pullers take them. The zero value means
// the defaults and no free-space check.
type Limits struct {
	// MaxImageSize bounds the bytes a pull downloads (an HTTP(S) body, each
	// registry blob), the bytes a layer decompresses to and the disk file
	// (the max_image_size setting). Default DefaultMaxImageSize.
	MaxImageSize int64
	// RequestTimeout bounds each request until its answer's headers (and,
	// for a registry's small documents: ping, token, manifest, config, the
	// whole exchange) (the pull_request_timeout setting). Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// StallTimeout is how long a download may go without receiving a byte
	// (the pull_stall_timeout setting). Default DefaultStallTimeout.
	StallTimeout time.Duration
	// CheckSpace, when set, is asked whether need more bytes fit on the
	// store's file system (0: whether the space left is still above the
	// reserve); before a download of known size and every
	// SpaceCheckInterval bytes of it. Its error ends the pull.
	CheckSpace func(need int64) error
}

// SpaceCheckInterval is how many bytes a pull writes between two
// CheckSpace calls.
const SpaceCheckInterval = 32 << 20

// WithDefaults fills in the zero fields.
func (l Limits) WithDefaults() Limits {
	if l.MaxImageSize <= 0 {
		l.MaxImageSize = DefaultMaxImageSize
	}
	if l.RequestTimeout <= 0 {
		l.RequestTimeout = DefaultRequestTimeout
	}
	if l.StallTimeout <= 0 {
		l.StallTimeout = DefaultStallTimeout
	}
	return l
}

// Space calls CheckSpace when it is set.
func (l Limits) Space(need int64) error {
	if l.CheckSpace == nil {
		return nil
	}
	return l.CheckSpace(need)
}

// TooLarge is the error of an image above MaxImageSize: ResourceExhausted
// (a limit of this node), naming the setting.
func (l Limits) TooLarge(what string, n int64) error {
	return fmt.Errorf("%s is %d bytes or more, above max_image_size (%d bytes); nothing was stored (raise max_image_size in the vmpod configuration if the image is legitimate): %w",
		what, n, l.MaxImageSize, errdefs.ErrResourceExhausted)
}

// TimeoutError is the cause of a context that one of vmpod's own deadlines
// ended (a request that got no answer in time, a download that stalled),
// as opposed to the caller's deadline. It is classed
// errdefs.ErrUnavailable and does not wrap context.DeadlineExceeded, so
// users see Unavailable (retry), as documented.
type TimeoutError struct {
	// What timed out: "no answer", "no data".
	What string
	// After is the limit, Setting its configuration key.
	After   time.Duration
	Setting string
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s for %s (%s)", e.What, e.After, e.Setting)
}

func (e *TimeoutError) Unwrap() error { return errdefs.ErrUnavailable }

// WithRequestTimeout returns ctx bounded by the request timeout, with a
// TimeoutError as the cause when it passes.
func (l Limits) WithRequestTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	l = l.WithDefaults()
	return context.WithTimeoutCause(ctx, l.RequestTimeout, &TimeoutError{What: "no answer", After: l.RequestTimeout, Setting: "pull_request_timeout"})
}

// OwnTimeout returns the TimeoutError that ended ctx, or nil when ctx is
// alive or ended otherwise (the caller cancelled, or its deadline passed).
func OwnTimeout(ctx context.Context) *TimeoutError {
	var te *TimeoutError
	if ctx.Err() != nil && errors.As(context.Cause(ctx), &te) {
		return te
	}
	return nil
}

// WatchStall returns a context derived from ctx that is cancelled, with a
// TimeoutError as its cause, when the count of received bytes does not
// grow for the stall timeout (no answer at all counts as no bytes). stop
// ends the watch; the returned context must not be used after it.
func (l Limits) WatchStall(ctx context.Context, received *atomic.Int64) (_ context.Context, stop func()) {
	l = l.WithDefaults()
	wctx, cancel := context.WithCancelCause(ctx)
	quit := make(chan struct{})
	done := make(chan struct{})
	tick := max(l.StallTimeout/8, 5*time.Millisecond)
	go func() {
		defer close(done)
		t := time.NewTicker(tick)
		defer t.Stop()
		last, since := received.Load(), time.Now()
		for {
			select {
			case <-quit:
				return
			case <-wctx.Done():
				return
			case now := <-t.C:
				if n := received.Load(); n != last {
					last, since = n, now
				} else if now.Sub(since) >= l.StallTimeout {
					cancel(&TimeoutError{What: "no data", After: l.StallTimeout, Setting: "pull_stall_timeout"})
					return
				}
			}
		}
	}()
	return wctx, func() {
		close(quit)
		<-done
		cancel(context.Canceled)
	}
}
