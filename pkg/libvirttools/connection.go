// Package libvirttools owns everything that touches libvirt. Code above it
// sees only the narrow Connection interface in vmpod's own types, so unit
// tests run against the stateful fake in libvirttools/fake, and libvirt
// error codes are translated to errdefs classes here.
//
// connection*.go are the only files importing libvirt.org/go/libvirt (cgo).
package libvirttools

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirt"

	"github.com/vmpod/vmpod/pkg/broadcast"
)

// Connection is vmpod's view of a libvirt daemon.
type Connection interface {
	Domains
	Events
	// Ping checks that libvirtd answers, reconnecting when the previous
	// connection died. It returns an error wrapping errdefs.ErrUnavailable
	// when libvirtd cannot be reached; it does not wait for libvirtd.
	Ping(ctx context.Context) (Info, error)
	// QEMUOwner returns the user and group QEMU runs as for domains of
	// domainType (DomainTypeKVM or DomainTypeQEMU), from libvirt's DAC
	// security model: vmpod gives that group access to the directories of
	// the VMs' files, and nobody else.
	QEMUOwner(ctx context.Context, domainType string) (Owner, error)
	// QEMUPID returns the process ID of a running domain's QEMU, from the
	// pid file libvirt keeps for it, checked against the process's
	// command line. It fails with ErrNotFound when the domain has no QEMU
	// running, ErrFailedPrecondition for a libvirtd that is not local
	// (qemu:///system or qemu:///session).
	QEMUPID(ctx context.Context, name string) (int, error)
	// Close closes the connection and ends the event subscriptions.
	Close() error
}

// Info describes the libvirt daemon a Connection talks to.
type Info struct {
	URI            string
	LibvirtVersion string
	Hypervisor     string
}

// Options configure a Libvirt.
type Options struct {
	// CallTimeout bounds one libvirt call, waiting for a connection
	// included; 0 is DefaultCallTimeout. Start and Destroy get twice as
	// long (libvirt itself waits up to 30 s for QEMU's monitor and 15 s
	// for QEMU to die in them); AgentCommand gets its agent timeout on
	// top; WaitShutoff has its own.
	CallTimeout time.Duration
	// Events makes the connection watch libvirt's domain lifecycle and
	// guest agent events for Subscribe.
	Events bool
	// Log receives connection losses and reconnects; nil is slog.Default().
	Log *slog.Logger
	// MaxRequests is how many calls the connection has in libvirtd at
	// once (libvirtd's max_client_requests); 0 is DefaultMaxRequests.
	// Further calls wait in vmpod, where their CallTimeout has not
	// started yet (Calls.Limit).
	MaxRequests int
}

// Libvirt is a Connection to a real libvirtd.
//
// It connects lazily and keeps one libvirt connection, shared by all
// goroutines (virConnect is thread-safe), with libvirt's event loop
// running (connection_events.go): a keepalive (a hung or vanished
// libvirtd is noticed within about 20 s even when no call is made) and a
// close callback that retires the connection the moment its socket
// closes, so the next call opens a new one instead of failing.
//
// Every call has a deadline (Options.CallTimeout) that covers waiting for
// a connection and the call itself; a call that outlives it finishes in
// the background (Calls). When libvirtd cannot be reached, a call waits
// for it, retrying, while the outage is younger than the call timeout (a
// restart takes a second or two) and fails at once with ErrUnavailable in
// a longer one. A call that fails because the connection broke under it
// is made once more on a new connection when it is safe to repeat
// (connection_call.go says which are).
//
// l.mu guards which connection is current and how many calls use it,
// never a libvirt call. A connection that died, or one a call failed on
// with ErrUnavailable, is retired: it is no longer handed out, and it is
// closed, in the background, by the last call still using it, so no
// goroutine ever uses a freed virConnect and no caller waits for a close
// to a hung libvirtd.
type Libvirt struct {
	uri     string
	timeout time.Duration
	log     *slog.Logger
	calls   Calls
	events  *broadcast.Broadcaster[Event] // nil without Options.Events

	mu        sync.Mutex
	cur       *libvirtConn
	dialing   *dial     // the connection attempt in progress, if any
	downSince time.Time // start of the current outage; zero while connected
	connected bool      // a connection was ever made (reconnects are logged)
	// reconnectedAt is when the last reconnection was made (zero: none).
	reconnectedAt time.Time
	keeping       bool // keep runs
	closed        bool
	stop          chan struct{} // closed by Close: keep ends
}

// libvirtConn is one libvirt connection and the calls using it. users and
// retired are guarded by Libvirt.mu.
type libvirtConn struct {
	c       *libvirt.Connect
	users   int
	retired bool
	gone    chan struct{} // closed when retired
}

// dial is one connection attempt; err is set before done is closed.
type dial struct {
	done chan struct{}
	err  error
}

var _ Connection = (*Libvirt)(nil)

// reconnectRetry is how often a call waiting for libvirtd tries again.
const reconnectRetry = 200 * time.Millisecond

// NewLibvirt returns a Connection for uri (e.g. qemu:///system). It does not
// connect yet: the daemon starts even when libvirtd is not up, and Status
// reports why the runtime is not ready. It starts libvirt's event loop
// (once per process) first: libvirt needs it before any connection.
func NewLibvirt(uri string, o Options) *Libvirt {
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	startEventLoop(o.Log)
	if o.MaxRequests <= 0 {
		o.MaxRequests = DefaultMaxRequests
	}
	l := &Libvirt{uri: uri, timeout: o.CallTimeout, log: o.Log, stop: make(chan struct{})}
	l.calls.Limit = o.MaxRequests
	if o.Events {
		l.events = newEvents()
	}
	return l
}

// connect returns the current connection, opening a new one when there is
// none or the current one is dead, and counts the caller as its user. The
// caller must pass it to release when done. It gives up at deadline. When
// libvirtd cannot be reached and wait is set, it tries again every
// reconnectRetry while the outage is younger than the call timeout.
func (l *Libvirt) connect(ctx context.Context, deadline time.Time, wait bool) (*libvirtConn, error) {
	for {
		l.mu.Lock()
		if lc := l.cur; lc != nil {
			lc.users++
			l.mu.Unlock()
			// IsAlive is local to the client (no RPC): it turns false once
			// the client saw the socket close.
			if alive, err := lc.c.IsAlive(); err == nil && alive {
				return lc, nil
			}
			l.retire(lc)
			l.release(lc)
			continue
		}
		d := l.dialing
		if d == nil {
			d = &dial{done: make(chan struct{})}
			l.dialing = d
			go l.dial(d)
		}
		young := l.downSince.IsZero() || time.Since(l.downSince) < l.timeout
		l.mu.Unlock()
		if err := waitUntil(ctx, deadline, d.done); err != nil {
			return nil, fmt.Errorf("connect to libvirt at %s: %w", l.uri, err)
		}
		if d.err == nil {
			continue
		}
		if !wait || !young || time.Until(deadline) < reconnectRetry {
			return nil, d.err
		}
		if err := waitUntil(ctx, deadline, time.After(reconnectRetry)); err != nil {
			return nil, d.err
		}
	}
}

// waitUntil waits for ch, and fails when ctx ends or deadline passes first.
func waitUntil[T any](ctx context.Context, deadline time.Time, ch <-chan T) error {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("libvirtd did not answer in time (is it hung?): %w: %w", ErrCallTimeout, errdefs.ErrUnavailable)
	}
}

// dial makes the connection attempt d and, when it succeeds, makes the
// new connection current and announces it to event subscribers.
func (l *Libvirt) dial(d *dial) {
	lc, err := l.open()
	l.mu.Lock()
	if err == nil && lc.retired {
		// Its socket closed during the set-up (libvirtd went away).
		err = fmt.Errorf("connect to libvirt at %s: the connection closed at once: %w", l.uri, errdefs.ErrUnavailable)
	}
	reconnect := false
	if err != nil {
		if l.downSince.IsZero() {
			l.downSince = time.Now()
		}
	} else {
		reconnect = l.connected
		l.cur, l.connected, l.downSince = lc, true, time.Time{}
		if reconnect {
			l.reconnectedAt = time.Now()
		}
	}
	d.err = err
	l.dialing = nil
	close(d.done)
	l.mu.Unlock()
	if err != nil {
		return
	}
	if reconnect {
		l.log.Info("reconnected to libvirt", "uri", l.uri)
	}
	if l.events != nil {
		l.events.Publish(Event{Kind: EventConnected})
	}
}

// release ends a call's use of lc, closing lc if it was retired and this
// was its last user.
func (l *Libvirt) release(lc *libvirtConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lc.users--
	if lc.retired && lc.users == 0 {
		go closeConn(lc)
	}
}

// retire makes lc no longer current.
func (l *Libvirt) retire(lc *libvirtConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.retireLocked(lc)
}

// retireLocked makes lc no longer current; it is closed now if unused, or
// by release when its last user is done. l.mu must be held.
func (l *Libvirt) retireLocked(lc *libvirtConn) {
	if l.cur == lc {
		l.cur = nil
	}
	if lc.retired {
		return
	}
	lc.retired = true
	close(lc.gone)
	if lc.users == 0 {
		go closeConn(lc)
	}
}

// Close implements Connection. Calls still running finish on the old
// connection; a later call connects again, but events end: subscriptions
// end with ErrUnavailable and no new ones are taken.
func (l *Libvirt) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.stop)
	}
	if l.cur != nil {
		l.retireLocked(l.cur)
	}
	l.mu.Unlock()
	if l.events != nil {
		l.events.Close()
	}
	return nil
}

// Subscribe implements Events. The first subscription starts keeping a
// connection open (reconnecting after libvirtd restarts), so that events
// flow even when no call is made.
func (l *Libvirt) Subscribe() (*EventSubscription, error) {
	if l.events == nil {
		return nil, fmt.Errorf("this libvirt connection does not watch events: %w", errdefs.ErrNotImplemented)
	}
	sub, err := l.events.Subscribe()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	start := !l.keeping && !l.closed
	l.keeping = true
	l.mu.Unlock()
	if start {
		go l.keep()
	}
	return sub, nil
}

// Ping implements Connection.
func (l *Libvirt) Ping(ctx context.Context) (Info, error) {
	var v uint32
	var hv string
	err := l.do(ctx, "ping libvirt", l.timeout, retrySafe|failFast, func(c *libvirt.Connect) error {
		var err error
		if v, err = c.GetLibVersion(); err != nil {
			return err
		}
		hv, err = c.GetType()
		return err
	})
	if err != nil {
		return Info{}, fmt.Errorf("libvirt at %s: %w", l.uri, withClass(err, errdefs.ErrUnavailable))
	}
	return Info{
		URI:            l.uri,
		LibvirtVersion: fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000),
		Hypervisor:     hv,
	}, nil
}
