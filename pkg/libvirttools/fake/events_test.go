package fake_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/libvirttools/fake"
)

func nextEvent(t *testing.T, sub *libvirttools.EventSubscription) libvirttools.Event {
	t.Helper()
	select {
	case ev := <-sub.C():
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	return libvirttools.Event{}
}

func noEvent(t *testing.T, sub *libvirttools.EventSubscription) {
	t.Helper()
	select {
	case ev := <-sub.C():
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(20 * time.Millisecond):
	}
}

// TestEvents: every transition publishes the event libvirt would; none
// while down; coming back up publishes EventConnected.
func TestEvents(t *testing.T) {
	ctx := context.Background()
	c := fake.New()
	sub, err := c.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	define(t, c, "vmpod-a", uuidA)
	noEvent(t, sub) // a definition changes no state
	want := func(state libvirttools.DomainState, reason libvirttools.ShutoffReason) {
		t.Helper()
		ev := nextEvent(t, sub)
		if ev.Kind != libvirttools.EventDomain || ev.Domain.Name != "vmpod-a" || ev.Domain.State != state || ev.Domain.Reason != reason {
			t.Fatalf("event %+v, want vmpod-a %s/%s", ev, state, reason)
		}
	}
	steps := []struct {
		do     func() error
		states []libvirttools.DomainState
		reason libvirttools.ShutoffReason
	}{
		{func() error { return c.Start(ctx, "vmpod-a", true) }, []libvirttools.DomainState{libvirttools.DomainRunning, libvirttools.DomainPaused}, 0},
		{func() error { return c.Resume(ctx, "vmpod-a") }, []libvirttools.DomainState{libvirttools.DomainRunning}, 0},
		{func() error { return c.Shutdown(ctx, "vmpod-a") }, []libvirttools.DomainState{libvirttools.DomainShutoff}, libvirttools.ShutoffShutdown},
		{func() error { return c.Start(ctx, "vmpod-a", false) }, []libvirttools.DomainState{libvirttools.DomainRunning}, 0},
		{func() error { return c.Destroy(ctx, "vmpod-a") }, []libvirttools.DomainState{libvirttools.DomainShutoff}, libvirttools.ShutoffDestroyed},
		{func() error { return c.Start(ctx, "vmpod-a", false) }, []libvirttools.DomainState{libvirttools.DomainRunning}, 0},
		{func() error { c.GuestPowerOff("vmpod-a"); return nil }, []libvirttools.DomainState{libvirttools.DomainShutoff}, libvirttools.ShutoffShutdown},
		{func() error { return c.Start(ctx, "vmpod-a", false) }, []libvirttools.DomainState{libvirttools.DomainRunning}, 0},
		{func() error { c.Crash("vmpod-a"); return nil }, []libvirttools.DomainState{libvirttools.DomainShutoff}, libvirttools.ShutoffCrashed},
		// A failed call publishes nothing.
		{func() error { return c.Destroy(ctx, "vmpod-a") }, nil, 0},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatal(err)
		}
		for _, st := range s.states {
			reason := libvirttools.ShutoffUnknown
			if st == libvirttools.DomainShutoff {
				reason = s.reason
			}
			want(st, reason)
		}
		noEvent(t, sub)
	}

	c.AgentConnect("vmpod-a", true)
	if ev := nextEvent(t, sub); ev.Kind != libvirttools.EventAgent || ev.Agent != (libvirttools.AgentEvent{Name: "vmpod-a", Connected: true}) {
		t.Fatalf("agent event %+v", ev)
	}

	c.SetDown(true)
	if err := c.Start(ctx, "vmpod-a", false); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Start while down: %v", err)
	}
	c.SetDown(false)
	if ev := nextEvent(t, sub); ev.Kind != libvirttools.EventConnected {
		t.Fatalf("event after the outage: %+v", ev)
	}
	if err := c.Start(ctx, "vmpod-a", false); err != nil {
		t.Fatal(err)
	}
	want(libvirttools.DomainRunning, 0)
	c.SetDown(true)
	c.GuestPowerOff("vmpod-a") // lost, as libvirt's would be
	c.AgentConnect("vmpod-a", false)
	noEvent(t, sub)
	c.SetDown(false)
	if ev := nextEvent(t, sub); ev.Kind != libvirttools.EventConnected {
		t.Fatalf("event after the second outage: %+v", ev)
	}

	c.Close()
	select {
	case <-sub.Done():
		if !errors.Is(sub.Err(), errdefs.ErrUnavailable) {
			t.Fatalf("subscription ended with %v", sub.Err())
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not end the subscription")
	}
	if _, err := c.Subscribe(); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}

// TestHang: a hung call returns ErrUnavailable at the call timeout, goes
// on in the background and takes effect when released, as a real cgo call
// to a libvirtd that answers late does.
func TestHang(t *testing.T) {
	ctx := context.Background()
	c := fake.New()
	c.SetCallTimeout(50 * time.Millisecond)
	define(t, c, "vmpod-a", uuidA)
	release := c.Hang("Start")
	start := time.Now()
	err := c.Start(ctx, "vmpod-a", false)
	if took := time.Since(start); !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, libvirttools.ErrCallTimeout) ||
		took < 50*time.Millisecond || took > time.Second {
		t.Fatalf("hung Start: %v after %v", err, took)
	}
	if c.Waiting("Start") != 1 || c.Abandoned() != 1 {
		t.Fatalf("waiting %d, abandoned %d; want 1, 1", c.Waiting("Start"), c.Abandoned())
	}
	wantState(t, c, "vmpod-a", libvirttools.DomainShutoff, libvirttools.ShutoffUnknown) // other calls answer
	release()
	deadline := time.Now().Add(5 * time.Second)
	for c.Abandoned() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the released call never finished")
		}
		time.Sleep(time.Millisecond)
	}
	wantState(t, c, "vmpod-a", libvirttools.DomainRunning, libvirttools.ShutoffUnknown)

	// A cancelled context returns at once too, the call going on.
	release = c.Hang("XML")
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(10*time.Millisecond, cancel)
	if _, err := c.XML(cctx, "vmpod-a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("hung XML with a cancelled context: %v", err)
	}
	release()
}

// TestAgentCommandHonoursContext: AgentCommand returns when its context
// ends even though the agent has not answered, and at its deadline (call
// timeout plus the agent timeout) without a context deadline.
func TestAgentCommandHonoursContext(t *testing.T) {
	ctx := context.Background()
	c := fake.New()
	c.SetCallTimeout(50 * time.Millisecond)
	define(t, c, "vmpod-a", uuidA)
	if err := c.Start(ctx, "vmpod-a", false); err != nil {
		t.Fatal(err)
	}
	unblock := make(chan struct{})
	defer close(unblock)
	c.SetAgent(func(name, command string) (string, error) {
		<-unblock
		return `{"return":{}}`, nil
	})
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.AgentCommand(cctx, "vmpod-a", `{"execute":"guest-ping"}`, time.Hour)
	if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || took > time.Second {
		t.Fatalf("AgentCommand past its context's deadline: %v after %v", err, took)
	}
	start = time.Now()
	_, err = c.AgentCommand(ctx, "vmpod-a", `{"execute":"guest-ping"}`, 100*time.Millisecond)
	if took := time.Since(start); !errors.Is(err, errdefs.ErrUnavailable) || took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("AgentCommand with an agent that never answers: %v after %v", err, took)
	}
}
