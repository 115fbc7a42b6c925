package libvirttools

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirt"
)

// libvirt's event loop, and what each connection gets from it: a
// keepalive, a close callback and, with Options.Events, domain lifecycle
// and guest agent callbacks published as Events.

// Keepalive: after keepAliveInterval seconds without a message from
// libvirtd the client sends a ping, and after keepAliveCount unanswered
// pings in a row (about 20 s in all) it closes the connection, which
// fails the calls blocked on it and fires the close callback.
const (
	keepAliveInterval = 5
	keepAliveCount    = 3
)

// keep's reconnect attempts start this often and slow down to keepRetryMax.
const (
	keepRetryMin = 100 * time.Millisecond
	keepRetryMax = time.Second
)

var eventLoop struct {
	once sync.Once
	err  error
}

// startEventLoop registers libvirt's default event loop implementation and
// runs it in a goroutine for the life of the process. libvirt requires it
// before the first connection is opened; it carries keepalives, close
// callbacks and events. A failure is logged and makes every connection
// attempt fail with it.
func startEventLoop(log *slog.Logger) {
	eventLoop.once.Do(func() {
		if err := libvirt.EventRegisterDefaultImpl(); err != nil {
			eventLoop.err = fmt.Errorf("register libvirt's event loop: %s: %w", errorMessage(err), errdefs.ErrUnavailable)
			log.Error("libvirt event loop unavailable", "err", eventLoop.err)
			return
		}
		go func() {
			for {
				// One iteration: poll the watched sockets and timers, run
				// the callbacks that are due.
				if err := libvirt.EventRunDefaultImpl(); err != nil {
					log.Error("libvirt event loop iteration failed", "err", errorMessage(err))
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	})
}

// open makes a new libvirt connection with a keepalive, a close callback
// and, with events, the event callbacks.
func (l *Libvirt) open() (*libvirtConn, error) {
	if eventLoop.err != nil {
		return nil, eventLoop.err
	}
	c, err := libvirt.NewConnect(l.uri)
	if err != nil {
		return nil, fmt.Errorf("connect to libvirt at %s (is libvirtd running?): %s: %w", l.uri, errorMessage(err), errdefs.ErrUnavailable)
	}
	lc := &libvirtConn{c: c, gone: make(chan struct{})}
	if err := l.watch(lc); err != nil {
		closeConn(lc)
		return nil, fmt.Errorf("set up the libvirt connection to %s: %s: %w", l.uri, errorMessage(err), errdefs.ErrUnavailable)
	}
	return lc, nil
}

// watch sets up lc's keepalive and callbacks. Callbacks are registered
// per connection: a new connection after a restart gets its own.
func (l *Libvirt) watch(lc *libvirtConn) error {
	// Drivers without a socket (test:///default) support neither.
	if err := lc.c.SetKeepAlive(keepAliveInterval, keepAliveCount); err != nil && !hasCode(err, libvirt.ERR_NO_SUPPORT) {
		return err
	}
	if err := lc.c.RegisterCloseCallback(func(_ *libvirt.Connect, reason libvirt.ConnectCloseReason) {
		l.lost(lc, reason)
	}); err != nil && !hasCode(err, libvirt.ERR_NO_SUPPORT) {
		return err
	}
	if l.events == nil {
		return nil
	}
	if _, err := lc.c.DomainEventLifecycleRegister(nil, l.onLifecycle); err != nil {
		return err
	}
	_, err := lc.c.DomainEventAgentLifecycleRegister(nil, l.onAgent)
	return err
}

// lost is lc's close callback (on the event loop): libvirtd closed the
// socket, or the keepalive gave up. lc is retired; the next call, or keep,
// connects again.
func (l *Libvirt) lost(lc *libvirtConn, reason libvirt.ConnectCloseReason) {
	l.mu.Lock()
	first := !lc.retired
	l.retireLocked(lc)
	if l.downSince.IsZero() {
		l.downSince = time.Now()
	}
	l.mu.Unlock()
	if first {
		l.log.Warn("libvirt connection lost; the next call reconnects", "uri", l.uri, "reason", closeReason(reason))
	}
}

func closeReason(r libvirt.ConnectCloseReason) string {
	switch r {
	case libvirt.CONNECT_CLOSE_REASON_EOF:
		return "libvirtd closed the connection"
	case libvirt.CONNECT_CLOSE_REASON_KEEPALIVE:
		return "libvirtd stopped answering keepalives"
	case libvirt.CONNECT_CLOSE_REASON_CLIENT:
		return "closed by vmpod"
	}
	return "socket error"
}

// closeConn closes a retired connection. It runs in its own goroutine
// (release and retireLocked start it): closing sends a last RPC, which
// would block the caller on a hung libvirtd until the keepalive gives up.
func closeConn(lc *libvirtConn) {
	lc.c.UnregisterCloseCallback()
	lc.c.Close()
}

// keep keeps a connection open while there are event subscribers to feed:
// whenever the current connection is retired it connects again, retrying
// with a growing interval while libvirtd is unreachable. It ends when the
// Libvirt is closed.
func (l *Libvirt) keep() {
	retry := keepRetryMin
	for {
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		lc, err := l.connect(ctx, time.Now().Add(l.timeout), false)
		cancel()
		if err != nil {
			select {
			case <-l.stop:
				return
			case <-time.After(retry):
			}
			retry = min(2*retry, keepRetryMax)
			continue
		}
		retry = keepRetryMin
		gone := lc.gone
		l.release(lc)
		select {
		case <-l.stop:
			return
		case <-gone:
		}
	}
}

// onLifecycle is the lifecycle event callback (on the event loop). It
// must not block: Publish never does.
func (l *Libvirt) onLifecycle(_ *libvirt.Connect, d *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
	de, ok := domainEventOf(ev)
	if !ok {
		return
	}
	name, err := d.GetName() // local, no RPC
	if err != nil {
		return
	}
	de.Name = name
	l.events.Publish(Event{Kind: EventDomain, Domain: de})
}

// onAgent is the guest agent lifecycle callback (on the event loop).
func (l *Libvirt) onAgent(_ *libvirt.Connect, d *libvirt.Domain, ev *libvirt.DomainEventAgentLifecycle) {
	name, err := d.GetName()
	if err != nil {
		return
	}
	connected := ev.State == libvirt.CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED
	l.events.Publish(Event{Kind: EventAgent, Agent: AgentEvent{Name: name, Connected: connected}})
}

// domainEventOf maps a lifecycle event to the domain's new state, as
// statusFromState maps states; events that do not change it (defined,
// undefined, a shutdown in progress) report false.
func domainEventOf(ev *libvirt.DomainEventLifecycle) (DomainEvent, bool) {
	de := DomainEvent{Detail: ev.String()}
	switch ev.Event {
	case libvirt.DOMAIN_EVENT_STARTED, libvirt.DOMAIN_EVENT_RESUMED, libvirt.DOMAIN_EVENT_PMSUSPENDED:
		de.State = DomainRunning
	case libvirt.DOMAIN_EVENT_SUSPENDED:
		de.State = DomainPaused
	case libvirt.DOMAIN_EVENT_CRASHED:
		de.State = DomainCrashed
	case libvirt.DOMAIN_EVENT_STOPPED:
		de.State = DomainShutoff
		switch libvirt.DomainEventStoppedDetailType(ev.Detail) {
		case libvirt.DOMAIN_EVENT_STOPPED_SHUTDOWN:
			de.Reason = ShutoffShutdown
		case libvirt.DOMAIN_EVENT_STOPPED_DESTROYED:
			de.Reason = ShutoffDestroyed
		case libvirt.DOMAIN_EVENT_STOPPED_CRASHED:
			de.Reason = ShutoffCrashed
		case libvirt.DOMAIN_EVENT_STOPPED_FAILED:
			de.Reason = ShutoffFailed
		default:
			de.Reason = ShutoffOther
		}
	default:
		return DomainEvent{}, false
	}
	return de, true
}
