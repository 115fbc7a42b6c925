package libvirttools

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirt"
)

// These tests run real libvirt client code without a libvirtd: libvirt's
// in-process test driver (test:///default, one running domain "test")
// for events, and a socket that never answers for a hung libvirtd.

func nextEvent(t *testing.T, sub *EventSubscription, kind EventKind) Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-sub.C():
			if ev.Kind == kind {
				return ev
			}
		case <-sub.Done():
			t.Fatalf("subscription ended: %v", sub.Err())
		case <-timeout:
			t.Fatalf("no %s event", kind)
		}
	}
}

// TestLibvirtEvents: libvirt's lifecycle events arrive through the event
// loop as DomainEvents with vmpod's states and reasons, and each new
// connection is announced.
func TestLibvirtEvents(t *testing.T) {
	ctx := context.Background()
	l := NewLibvirt("test:///default", Options{Events: true})
	sub, err := l.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, sub, EventConnected) // the keeper connected
	if st, err := l.Status(ctx, "test"); err != nil {
		t.Fatal(err)
	} else if st.State == DomainShutoff {
		wantClass(t, "Start", l.Start(ctx, "test", false), nil)
		nextEvent(t, sub, EventDomain)
	}
	want := func(state DomainState, reason ShutoffReason) {
		t.Helper()
		ev := nextEvent(t, sub, EventDomain)
		if ev.Domain.Name != "test" || ev.Domain.State != state || ev.Domain.Reason != reason {
			t.Fatalf("event %+v, want test %s/%s", ev.Domain, state, reason)
		}
	}
	wantClass(t, "Destroy", l.Destroy(ctx, "test"), nil)
	want(DomainShutoff, ShutoffDestroyed)
	wantClass(t, "Start", l.Start(ctx, "test", false), nil)
	want(DomainRunning, 0)
	// The test driver cannot start paused: pause it on a connection of
	// the test's own (one driver instance per process: events reach all).
	suspend(t, "test")
	want(DomainPaused, 0)
	wantClass(t, "Resume", l.Resume(ctx, "test"), nil)
	want(DomainRunning, 0)
	wantClass(t, "Shutdown", l.Shutdown(ctx, "test"), nil)
	want(DomainShutoff, ShutoffShutdown)
	wantClass(t, "Start", l.Start(ctx, "test", false), nil)
	want(DomainRunning, 0)

	// A second subscriber gets the same events.
	sub2, err := l.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, "Destroy", l.Destroy(ctx, "test"), nil)
	want(DomainShutoff, ShutoffDestroyed)
	if ev := nextEvent(t, sub2, EventDomain); ev.Domain.State != DomainShutoff {
		t.Fatalf("second subscriber: %+v", ev)
	}
	wantClass(t, "Start", l.Start(ctx, "test", false), nil)

	l.Close()
	select {
	case <-sub.Done():
		if !errors.Is(sub.Err(), errdefs.ErrUnavailable) {
			t.Fatalf("subscription ended with %v", sub.Err())
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not end the subscription")
	}
	if _, err := l.Subscribe(); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if _, err := NewLibvirt("test:///default", Options{}).Subscribe(); !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Fatalf("Subscribe without Options.Events: %v", err)
	}
}

func suspend(t *testing.T, name string) {
	t.Helper()
	c, err := libvirt.NewConnect("test:///default")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dom, err := c.LookupDomainByName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer dom.Free()
	if err := dom.Suspend(); err != nil {
		t.Fatal(err)
	}
}

func TestDomainEventOf(t *testing.T) {
	for _, tc := range []struct {
		event  libvirt.DomainEventType
		detail int
		ok     bool
		state  DomainState
		reason ShutoffReason
	}{
		{libvirt.DOMAIN_EVENT_STARTED, int(libvirt.DOMAIN_EVENT_STARTED_BOOTED), true, DomainRunning, 0},
		{libvirt.DOMAIN_EVENT_SUSPENDED, int(libvirt.DOMAIN_EVENT_SUSPENDED_PAUSED), true, DomainPaused, 0},
		{libvirt.DOMAIN_EVENT_RESUMED, int(libvirt.DOMAIN_EVENT_RESUMED_UNPAUSED), true, DomainRunning, 0},
		{libvirt.DOMAIN_EVENT_PMSUSPENDED, 0, true, DomainRunning, 0},
		{libvirt.DOMAIN_EVENT_CRASHED, int(libvirt.DOMAIN_EVENT_CRASHED_PANICKED), true, DomainCrashed, 0},
		{libvirt.DOMAIN_EVENT_STOPPED, int(libvirt.DOMAIN_EVENT_STOPPED_SHUTDOWN), true, DomainShutoff, ShutoffShutdown},
		{libvirt.DOMAIN_EVENT_STOPPED, int(libvirt.DOMAIN_EVENT_STOPPED_DESTROYED), true, DomainShutoff, ShutoffDestroyed},
		{libvirt.DOMAIN_EVENT_STOPPED, int(libvirt.DOMAIN_EVENT_STOPPED_CRASHED), true, DomainShutoff, ShutoffCrashed},
		{libvirt.DOMAIN_EVENT_STOPPED, int(libvirt.DOMAIN_EVENT_STOPPED_FAILED), true, DomainShutoff, ShutoffFailed},
		{libvirt.DOMAIN_EVENT_STOPPED, int(libvirt.DOMAIN_EVENT_STOPPED_SAVED), true, DomainShutoff, ShutoffOther},
		{libvirt.DOMAIN_EVENT_SHUTDOWN, int(libvirt.DOMAIN_EVENT_SHUTDOWN_FINISHED), false, 0, 0},
		{libvirt.DOMAIN_EVENT_DEFINED, 0, false, 0, 0},
		{libvirt.DOMAIN_EVENT_UNDEFINED, 0, false, 0, 0},
	} {
		de, ok := domainEventOf(&libvirt.DomainEventLifecycle{Event: tc.event, Detail: tc.detail})
		if ok != tc.ok || de.State != tc.state || de.Reason != tc.reason {
			t.Errorf("event %d/%d = %v %s/%s, want %v %s/%s", tc.event, tc.detail, ok, de.State, de.Reason, tc.ok, tc.state, tc.reason)
		}
	}
}

// silentSocket accepts connections and reads from them but never answers,
// like a stopped (SIGSTOP) libvirtd. It counts the connections.
type silentSocket struct {
	path     string
	l        net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
}

func newSilentSocket(t *testing.T) *silentSocket {
	t.Helper()
	s := &silentSocket{path: filepath.Join(t.TempDir(), "libvirt-sock")}
	l, err := net.Listen("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	s.l = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go func() {
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

// close makes the socket go away, as a killed libvirtd's does.
func (s *silentSocket) close() {
	s.l.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
}

// TestLibvirtHungDaemon: against a libvirtd that accepts but never
// answers, every call fails with Unavailable at its deadline, concurrent
// calls share one connection attempt, and nothing stays behind once the
// socket goes away.
func TestLibvirtHungDaemon(t *testing.T) {
	before := runtime.NumGoroutine()
	s := newSilentSocket(t)
	l := NewLibvirt("qemu+unix:///system?socket="+s.path, Options{CallTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	start := time.Now()
	_, err := l.Status(ctx, "vmpod-x")
	if took := time.Since(start); !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, ErrCallTimeout) || took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Status against a hung libvirtd: %v after %v", err, took)
	}
	t.Logf("Status: %v after %v", err, time.Since(start).Round(time.Millisecond))
	var wg sync.WaitGroup
	start = time.Now()
	for range 20 {
		wg.Go(func() {
			_, err := l.List(ctx, "vmpod-")
			if !errors.Is(err, errdefs.ErrUnavailable) {
				t.Errorf("List: %v", err)
			}
		})
	}
	wg.Go(func() {
		if _, err := l.Ping(ctx); !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("Ping: %v", err)
		}
	})
	wg.Wait()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("21 concurrent calls took %v with a 300ms deadline", took)
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("%d connections to the hung libvirtd, want 1 (one attempt at a time)", n)
	}
	s.close()
	l.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+2 { // the event loop's goroutine may be new
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left (were %d):\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLibvirtUnreachable: with no libvirtd, a call waits for it (a
// restart) up to its deadline; once the outage is older than the call
// timeout, calls fail at once; Ping never waits.
func TestLibvirtUnreachable(t *testing.T) {
	l := NewLibvirt("qemu+unix:///system?socket="+filepath.Join(t.TempDir(), "none"), Options{CallTimeout: 500 * time.Millisecond})
	ctx := context.Background()
	start := time.Now()
	if _, err := l.Ping(ctx); !errors.Is(err, errdefs.ErrUnavailable) || time.Since(start) > 200*time.Millisecond {
		t.Fatalf("Ping: %v after %v; want Unavailable at once", err, time.Since(start))
	}
	start = time.Now()
	_, err := l.Status(ctx, "vmpod-x")
	if took := time.Since(start); !errors.Is(err, errdefs.ErrUnavailable) || took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Status in a young outage: %v after %v; want Unavailable after waiting", err, took)
	}
	time.Sleep(500 * time.Millisecond)
	start = time.Now()
	_, err = l.Status(ctx, "vmpod-x")
	if took := time.Since(start); !errors.Is(err, errdefs.ErrUnavailable) || took > 200*time.Millisecond {
		t.Fatalf("Status in an old outage: %v after %v; want Unavailable at once", err, took)
	}
}

// TestAgentNotConnected: only libvirt's refusal to send a command to an
// agent it has no connection to is retried after a reconnection, not an
// agent that took the command and did not answer.
func TestAgentNotConnected(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want bool
	}{
		{"Guest agent is not responding: QEMU guest agent is not connected", true},
		{"Guest agent is not responding: Guest agent not available for now", false},
	} {
		err := translateError("guest agent command", libvirt.Error{Code: libvirt.ERR_AGENT_UNRESPONSIVE, Domain: libvirt.FROM_QEMU, Message: tc.msg})
		if got := agentNotConnected(err); got != tc.want {
			t.Errorf("agentNotConnected(%q) = %v, want %v", tc.msg, got, tc.want)
		}
	}
	l := NewLibvirt("test:///default", Options{})
	if l.reconnectedWithin(time.Hour) {
		t.Fatal("a new connection counts as reconnected")
	}
}
