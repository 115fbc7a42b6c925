package libvirttools

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// DefaultCallTimeout bounds one libvirt call when the configuration says
// nothing (config key libvirt_call_timeout).
const DefaultCallTimeout = 30 * time.Second

// MaxAbandonedCalls is how many calls that outlived their deadline a
// Calls lets run on in the background before it refuses new ones.
//
// libvirt's Go calls are blocking cgo calls that cannot be interrupted: a
// call to a hung libvirtd (SIGSTOP, a deadlock) blocks its goroutine and
// its OS thread until libvirtd answers or the connection is closed (the
// keepalive closes it after about 20 s). Each one whose caller gave up
// costs a goroutine and a thread; once this many are running, libvirtd is
// plainly not answering, and new calls fail at once with ErrUnavailable
// instead of piling up more. The count falls as the calls return. Calls
// already running when the count reaches the bound may still be
// abandoned, so it can exceed the bound by the number of calls in flight
// at that moment (bounded by the callers), never by more.
const MaxAbandonedCalls = 32

// ErrCallTimeout is wrapped, with errdefs.ErrUnavailable, by the error of
// a call that did not return within its deadline (or was refused because
// too many such calls are still running).
var ErrCallTimeout = errors.New("libvirt call timed out")

// errRefused is wrapped by the error of a call Run refused to start.
var errRefused = errors.New("too many libvirt calls hung")

// DefaultMaxRequests is how many calls one connection has in libvirtd at
// once: libvirtd's default max_client_requests. libvirtd reads no more
// from a client with that many calls in its hands, so a further call
// would wait in libvirtd's queue with its timeout running: 25 domain
// starts at once on a loaded node (several seconds each under TCG) made
// the last ones time out after 60 s though libvirtd was working through
// them (bench/density).
const DefaultMaxRequests = 5

// Calls runs blocking calls with a deadline: the caller returns when the
// deadline passes or its context ends, and the call finishes in the
// background. It counts the calls running past their caller and refuses
// new ones while MaxAbandonedCalls of them are. With a Limit, at most that
// many calls run at once and the others wait their turn first. It is safe
// for concurrent use; the zero value is ready (no limit).
type Calls struct {
	// Limit is how many calls may run at once; 0 is no limit. A call
	// waits for its turn while the calls in flight keep returning (at
	// most its timeout without one returning), and its timeout starts
	// when its turn comes, so time in the queue does not count as
	// libvirtd's; a turn ends when the call returns, also after its
	// caller gave up on it. Set it before the first Run.
	Limit int

	mu        sync.Mutex
	abandoned int
	turnsOnce sync.Once
	turns     chan struct{} // Limit slots; nil without a limit
	lastDone  time.Time     // when a call last returned
}

// waitTurn takes one of turns for a call. It waits as long as the calls
// in flight keep returning, and fails once none returned for timeout
// (libvirtd is not answering) or ctx ends: under load libvirtd takes
// tens of seconds per domain start, and 25 starts 5 at a time take longer
// than one start's timeout, yet it is working through them.
func (c *Calls) waitTurn(ctx context.Context, op string, turns chan struct{}, timeout time.Duration) error {
	start := time.Now()
	for {
		c.mu.Lock()
		progress := c.lastDone
		c.mu.Unlock()
		left := timeout - time.Since(later(start, progress))
		if left <= 0 {
			return fmt.Errorf("%s: %d libvirt calls in flight and none returned for %s (is libvirtd hung?): %w: %w",
				op, c.Limit, timeout, ErrCallTimeout, errdefs.ErrUnavailable)
		}
		wait := time.NewTimer(left)
		select {
		case turns <- struct{}{}:
			wait.Stop()
			return nil
		case <-wait.C:
		case <-ctx.Done():
			wait.Stop()
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// slots returns the channel of turns, nil without a limit.
func (c *Calls) slots() chan struct{} {
	c.turnsOnce.Do(func() {
		if c.Limit > 0 {
			c.turns = make(chan struct{}, c.Limit)
		}
	})
	return c.turns
}

// Abandoned is the number of calls still running after their caller gave
// up on them.
func (c *Calls) Abandoned() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.abandoned
}

// Run runs fn and returns its error, unless timeout passes first (an
// error wrapping errdefs.ErrUnavailable and ErrCallTimeout) or ctx ends
// first (an error wrapping ctx.Err()). op names the call in errors. fn
// must not use ctx to return early: it may go on after Run returned. With
// a Limit, Run first waits for a turn (the same errors when no call in
// flight returned for timeout), and timeout counts from the turn.
func (c *Calls) Run(ctx context.Context, op string, timeout time.Duration, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	c.mu.Lock()
	// Every turn held by a call past its deadline: libvirtd is not
	// answering, and waiting for a turn would only wait for the timeout.
	if n := c.abandoned; n >= MaxAbandonedCalls || (c.Limit > 0 && n >= c.Limit) {
		c.mu.Unlock()
		return fmt.Errorf("%s: %d earlier libvirt calls have not returned after their deadline (is libvirtd hung?); not starting another: %w: %w: %w",
			op, n, errRefused, ErrCallTimeout, errdefs.ErrUnavailable)
	}
	c.mu.Unlock()
	turns := c.slots()
	if turns != nil {
		if err := c.waitTurn(ctx, op, turns, timeout); err != nil {
			return err
		}
	}
	var (
		done      = make(chan error, 1)
		finished  bool // guarded by c.mu
		abandoned bool // guarded by c.mu
	)
	go func() {
		err := fn()
		if turns != nil {
			<-turns
		}
		c.mu.Lock()
		c.lastDone = time.Now()
		finished = true
		if abandoned {
			c.abandoned--
		}
		c.mu.Unlock()
		done <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var why error
	select {
	case err := <-done:
		return err
	case <-timer.C:
		why = fmt.Errorf("libvirt did not answer within %s (libvirt_call_timeout; is libvirtd hung?): %w: %w",
			timeout, ErrCallTimeout, errdefs.ErrUnavailable)
	case <-ctx.Done():
		why = ctx.Err()
	}
	c.mu.Lock()
	if finished {
		// It returned just now: its result is the answer.
		c.mu.Unlock()
		return <-done
	}
	abandoned = true
	c.abandoned++
	c.mu.Unlock()
	return fmt.Errorf("%s: %w", op, why)
}
