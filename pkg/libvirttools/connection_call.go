package libvirttools

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirt"
)

// How a call is made: one libvirt call (or a few) on the current
// connection, with a deadline.
//
// Retries. A call that could not get a connection was never sent, so
// every call waits for libvirtd (see Libvirt). A call that was sent and
// then failed because the connection broke (libvirtd restarted under it:
// "End of file while reading data", "Cannot write data: Broken pipe") may
// or may not have been carried out. It is made once more, on a new
// connection, only when doing it twice is the same as doing it once:
//
//	retried:       Define (same name and UUID: a redefinition), Destroy (of
//	               a shut-off domain succeeds), Undefine (of a missing one
//	               succeeds), Shutdown (a second ACPI power-button press
//	               asks the same), Status, List, XML, Stats, SetCPUTune (sets
//	               the same values), Ping
//	state checked: Start and Resume look at the domain's state first and
//	               are made again only if it shows they were not carried
//	               out
//	not retried:   AgentCommand (a guest-exec would run twice; a
//	               guest-exec-status that was answered has already made the
//	               agent forget the process): the error wraps
//	               errdefs.ErrUnavailable and the caller decides
type policy int

const (
	// retrySafe: the call is idempotent; a broken connection is retried.
	retrySafe policy = 1 << iota
	// failFast: do not wait for an unreachable libvirtd (Ping, which
	// reports whether it is reachable).
	failFast
)

// lostError is the error of a call that was sent on a connection that
// then broke: it may have been carried out.
type lostError struct{ error }

func (e lostError) Unwrap() error { return e.error }

// isLost reports whether err is a lostError.
func isLost(err error) bool {
	var l lostError
	return errors.As(err, &l)
}

// do runs fn on a connection within timeout and returns its error
// translated for op (see the policy above).
func (l *Libvirt) do(ctx context.Context, op string, timeout time.Duration, p policy, fn func(*libvirt.Connect) error) error {
	deadline := time.Now().Add(timeout)
	for attempt := 0; ; attempt++ {
		lc, err := l.connect(ctx, deadline, p&failFast == 0)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		err = l.calls.Run(ctx, op, time.Until(deadline), func() error {
			defer l.release(lc)
			return fn(lc.c)
		})
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errRefused):
			l.release(lc) // fn never ran
			return err
		case errors.Is(err, ErrCallTimeout), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			return err // from Run: fn goes on in the background
		}
		err = l.fail(lc, op, err)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			return err
		}
		if p&retrySafe == 0 || attempt > 0 || time.Until(deadline) <= 0 {
			return lostError{err}
		}
		l.log.Info("the libvirt connection broke under a call; making it again on a new connection", "op", op, "err", err)
	}
}

// fail translates err from a libvirt call made on lc for op and, when it
// says the connection is unusable, retires lc so the next call reconnects.
func (l *Libvirt) fail(lc *libvirtConn, op string, err error) error {
	err = translateError(op, err)
	if errors.Is(err, errdefs.ErrUnavailable) {
		l.retire(lc)
	}
	return err
}

// withDomain looks up the domain name and runs fn on it with do. op is
// completed with the name.
func (l *Libvirt) withDomain(ctx context.Context, op, name string, timeout time.Duration, p policy, fn func(*libvirt.Domain) error) error {
	return l.do(ctx, fmt.Sprintf("%s %q", op, name), timeout, p, func(c *libvirt.Connect) error {
		dom, err := c.LookupDomainByName(name)
		if err != nil {
			return err
		}
		defer dom.Free()
		return fn(dom)
	})
}

// slowTimeout bounds Start and Destroy, inside which libvirt itself waits
// for QEMU.
func (l *Libvirt) slowTimeout() time.Duration { return 2 * l.timeout }

// withClass returns err, made to wrap class if it does not wrap one of
// vmpod's error classes for it already.
func withClass(err, class error) error {
	if errors.Is(err, class) {
		return err
	}
	return fmt.Errorf("%w: %w", err, class)
}
