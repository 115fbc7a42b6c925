package lifecycle_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
)

// runningVM runs a sandbox with one started container and returns the
// container's ID.
func runningVM(t *testing.T, e *lifecycletest.Env, name string) string {
	t.Helper()
	ctx := lifecycletest.Ctx(t)
	sbID, err := e.Pods.RunSandbox(ctx, pod(name), "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.Pods.CreateContainer(ctx, sbID, ctr("vm"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	return id
}

// startMonitor runs the exit monitor until the test ends and waits until
// it has subscribed to libvirt's events and made its first check.
func startMonitor(t *testing.T, e *lifecycletest.Env) {
	t.Helper()
	ctx, cancel := context.WithCancel(lifecycletest.Ctx(t))
	done := make(chan struct{})
	go func() { e.Pods.Monitor(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for e.LV.Subscribers() == 0 || !slices.Contains(e.LV.Calls(), "List "+lifecycle.DomainPrefix) {
		if time.Now().After(deadline) {
			t.Fatal("the monitor did not subscribe and check")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitStopped waits for the container's STOPPED event and returns how long
// it took.
func waitStopped(t *testing.T, sub *lifecycle.Subscription, id string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := time.After(within)
	for {
		select {
		case ev := <-sub.C():
			if ev.Type == lifecycle.EventStopped && ev.ID == id {
				if ev.Containers[0].State != lifecycle.ContainerExited {
					t.Fatalf("STOPPED event with the container %s", ev.Containers[0].State)
				}
				return time.Since(start)
			}
		case <-timeout:
			t.Fatalf("no STOPPED event within %v", within)
		}
	}
}

// listCalls counts the bulk checks among calls.
func listCalls(calls []string) int {
	n := 0
	for _, c := range calls {
		if strings.HasPrefix(c, "List ") {
			n++
		}
	}
	return n
}

// TestMonitorEventDrivenExit: a guest's poweroff and a crash are recorded
// from libvirt's event at once (one Status call), not by the periodic
// bulk check, which runs every 10 s.
func TestMonitorEventDrivenExit(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	off, crashed := runningVM(t, e, "off"), runningVM(t, e, "crash")
	startMonitor(t, e)
	sub, err := e.Pods.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	for _, tc := range []struct {
		id       string
		stop     func(string)
		code     int32
		reason   string
		wantCall string
	}{
		{off, e.LV.GuestPowerOff, 0, "Completed", "Status " + lifecycle.DomainName(off)},
		{crashed, e.LV.Crash, 139, "Crashed", "Status " + lifecycle.DomainName(crashed)},
	} {
		n := len(e.LV.Calls())
		tc.stop(lifecycle.DomainName(tc.id))
		took := waitStopped(t, sub, tc.id, time.Second)
		t.Logf("STOPPED %v after the domain stopped", took)
		rec := e.Record(t, tc.id)
		if rec.State != lifecycle.ContainerExited || rec.ExitCode != tc.code || rec.Reason != tc.reason {
			t.Fatalf("record after the stop: %s %d %s", rec.State, rec.ExitCode, rec.Reason)
		}
		calls := e.CallsSince(n)
		if !slices.Contains(calls, tc.wantCall) || listCalls(calls) != 0 {
			t.Fatalf("calls after the stop: %q; want the event's refresh, no bulk check", calls)
		}
	}
}

// TestMonitorOtherDomains: an event of a domain that is not exactly a
// container's (one whose name is a prefix of it, a foreign one) refreshes
// no container.
func TestMonitorOtherDomains(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	id := runningVM(t, e, "web")
	startMonitor(t, e)
	n := len(e.LV.Calls())
	for i, name := range []string{lifecycle.DomainName(id[:12]), "other"} {
		doc, err := (&libvirtxml.Domain{Type: "qemu", Name: name, UUID: fmt.Sprintf("6f1c8a7e-2d3b-5c4a-9e8f-%012d", i)}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := e.LV.Define(ctx, doc); err != nil {
			t.Fatal(err)
		}
		if err := e.LV.Start(ctx, name, false); err != nil {
			t.Fatal(err)
		}
		e.LV.GuestPowerOff(name)
	}
	time.Sleep(100 * time.Millisecond)
	if calls := e.CallsSince(n); slices.Contains(calls, "Status "+lifecycle.DomainName(id)) {
		t.Fatalf("another domain's event refreshed the container: %q", calls)
	}
	if st := e.Record(t, id).State; st != lifecycle.ContainerRunning {
		t.Fatalf("container after other domains stopped: %s", st)
	}
}

// TestMonitorReconnect: exits while libvirtd was unreachable publish no
// event; the reconnection does, and the check after it records them.
func TestMonitorReconnect(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	id := runningVM(t, e, "web")
	startMonitor(t, e)
	sub, err := e.Pods.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	e.LV.SetDown(true)
	e.LV.GuestPowerOff(lifecycle.DomainName(id)) // unseen: no event while down
	time.Sleep(50 * time.Millisecond)
	if st := e.Record(t, id).State; st != lifecycle.ContainerRunning {
		t.Fatalf("record while libvirt is down: %s", st)
	}
	n := len(e.LV.Calls())
	e.LV.SetDown(false)
	waitStopped(t, sub, id, time.Second)
	if got := listCalls(e.CallsSince(n)); got != 1 {
		t.Fatalf("%d bulk checks after the reconnection, want 1", got)
	}
}

// TestMonitorResubscribes: a monitor that fell behind (its libvirt
// subscription was ended) subscribes again, checks, and sees later events.
func TestMonitorResubscribes(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	id := runningVM(t, e, "web")
	startMonitor(t, e)
	sub, err := e.Pods.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// Keep the monitor busy in a bulk check (a reconnection makes it
	// check) while 2000 events, more than its buffer, come in.
	release := e.LV.Hang("List")
	n := len(e.LV.Calls())
	e.LV.SetDown(true)
	e.LV.SetDown(false)
	for deadline := time.Now().Add(5 * time.Second); e.LV.Waiting("List") == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the monitor did not check after the reconnection")
		}
	}
	for range 2000 {
		e.LV.AgentConnect("vmpod-nobody", true)
	}
	release()
	// It resubscribes and checks again.
	for deadline := time.Now().Add(5 * time.Second); listCalls(e.CallsSince(n)) < 2 || e.LV.Subscribers() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no check after the subscription ended: %d checks, %d subscribers", listCalls(e.CallsSince(n)), e.LV.Subscribers())
		}
	}
	n = len(e.LV.Calls())
	e.LV.GuestPowerOff(lifecycle.DomainName(id))
	waitStopped(t, sub, id, time.Second)
	if got := listCalls(e.CallsSince(n)); got != 0 {
		t.Fatalf("the exit came from a bulk check (%d), not the new subscription's event", got)
	}
}

// TestLibvirtDeadline: a hung libvirt makes the calls that need it fail
// with Unavailable at the call timeout instead of hanging, stats (best
// effort, from the collector's samples) return by then without the usage
// they could not sample, and a status (which reports the last known
// state) too; once libvirt answers again, so do they.
func TestLibvirtDeadline(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	id := runningVM(t, e, "web")
	e.LV.SetCallTimeout(100 * time.Millisecond)

	releaseStats := e.LV.Hang("Stats")
	releaseStatus := e.LV.Hang("Status")
	start := time.Now()
	cs, err := e.Pods.ContainerStats(ctx, id)
	if took := time.Since(start); err != nil || cs.Running || took > time.Second {
		t.Fatalf("ContainerStats with libvirt hung: %+v, %v after %v; want no usage by the deadline", cs, err, took)
	}
	start = time.Now()
	v, err := e.Pods.Container(ctx, id)
	if took := time.Since(start); err != nil || v.State != lifecycle.ContainerRunning || took > time.Second {
		t.Fatalf("container status with libvirt hung: %v, %v after %v", v.State, err, took)
	}
	if n := e.LV.Abandoned(); n != 2 {
		t.Fatalf("%d calls running past their deadline, want 2", n)
	}
	releaseStats()
	releaseStatus()
	deadline := time.Now().Add(5 * time.Second)
	for e.LV.Abandoned() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d abandoned calls never finished", e.LV.Abandoned())
		}
		time.Sleep(time.Millisecond)
	}
	e.Pods.SampleStats(ctx)
	if cs, err := e.Pods.ContainerStats(ctx, id); err != nil || !cs.Running {
		t.Fatalf("ContainerStats after libvirt answered again: %+v, %v", cs, err)
	}
}
