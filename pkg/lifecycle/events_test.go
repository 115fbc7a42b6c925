package lifecycle_test

import (
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
)

func pod(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		LogDirectory: "/var/log/pods/" + name,
	}
}

func ctr(name string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name}, Image: &runtimeapi.ImageSpec{Image: "debian:12"}}
}

// next reads the next event or fails.
func next(t *testing.T, sub *lifecycle.Subscription) lifecycle.Event {
	t.Helper()
	select {
	case ev := <-sub.C():
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	return lifecycle.Event{}
}

// TestEventsFollowTransitions: every event comes from a record's state
// change, carries the pod as it is right after it, and failed steps
// publish nothing.
func TestEventsFollowTransitions(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	sub, err := e.Pods.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	expect := func(typ lifecycle.EventType, id string, check func(lifecycle.Event)) {
		t.Helper()
		ev := next(t, sub)
		if ev.Type != typ || ev.ID != id {
			t.Fatalf("event %s %s, want %s %s", ev.Type, ev.ID[:8], typ, id[:8])
		}
		if check != nil {
			check(ev)
		}
	}
	sbID, err := e.Pods.RunSandbox(ctx, pod("web"), "")
	if err != nil {
		t.Fatal(err)
	}
	ready := func(ev lifecycle.Event) {
		if ev.Sandbox == nil || !ev.Sandbox.Ready() || len(ev.Sandbox.IPs()) == 0 {
			t.Fatalf("sandbox in the event: %+v", ev.Sandbox)
		}
	}
	expect(lifecycle.EventCreated, sbID, ready)
	expect(lifecycle.EventStarted, sbID, ready)

	// A create that fails after its record was stored publishes nothing.
	e.LV.FailNext("Define", errInjected)
	if _, err := e.Pods.CreateContainer(ctx, sbID, ctr("vm")); err == nil {
		t.Fatal("create with a failing Define succeeded")
	}
	id, err := e.Pods.CreateContainer(ctx, sbID, ctr("vm"))
	if err != nil {
		t.Fatal(err)
	}
	expect(lifecycle.EventCreated, id, func(ev lifecycle.Event) {
		if len(ev.Containers) != 1 || ev.Containers[0].State != lifecycle.ContainerCreated {
			t.Fatalf("containers in the event: %+v", ev.Containers)
		}
	})
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	expect(lifecycle.EventStarted, id, nil)
	// The guest powers off: the monitor sees it, the record goes EXITED,
	// the event says so.
	e.LV.GuestPowerOff(lifecycle.DomainName(id))
	e.Pods.CheckRunning(ctx)
	expect(lifecycle.EventStopped, id, func(ev lifecycle.Event) {
		if c := ev.Containers[0]; c.State != lifecycle.ContainerExited || c.ExitCode != 0 {
			t.Fatalf("container in the event: %s %d", c.State, c.ExitCode)
		}
	})
	if err := e.Pods.StopSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	expect(lifecycle.EventStopped, sbID, func(ev lifecycle.Event) {
		if ev.Sandbox.Ready() {
			t.Fatalf("stopped sandbox in the event: %+v", ev.Sandbox)
		}
	})
	if err := e.Pods.RemoveSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	expect(lifecycle.EventDeleted, id, nil)
	expect(lifecycle.EventDeleted, sbID, func(ev lifecycle.Event) {
		if !ev.SandboxGone || len(ev.Containers) != 0 {
			t.Fatalf("deleted sandbox event: gone %v, containers %d", ev.SandboxGone, len(ev.Containers))
		}
	})
	select {
	case ev := <-sub.C():
		t.Fatalf("unexpected event %s %s", ev.Type, ev.ID[:8])
	case <-time.After(20 * time.Millisecond):
	}
}
