package lifecycle_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
	"github.com/vmpod/vmpod/pkg/store"
)

// TestRecoveryQuarantines: records recovery cannot decode, and a container
// whose domain libvirt will not report, are quarantined (listed, left for
// removal) while the healthy VM recovers; Recover itself succeeds.
func TestRecoveryQuarantines(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	run := func(name string) (string, string) {
		t.Helper()
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
		return sbID, id
	}
	_, one := run("one")
	_, two := run("two")
	badCtr := strings.Repeat("ab", 32)
	badSB := strings.Repeat("cd", 32)
	for _, w := range []struct {
		b   store.Bucket
		key string
	}{{store.Containers, badCtr}, {store.Sandboxes, badSB}} {
		// Not JSON of a record: Put of a raw string stores it as such.
		if err := e.Meta.Put(w.b, w.key, "not a record {"); err != nil {
			t.Fatal(err)
		}
	}
	e.Restart(t)
	// libvirt refuses to report one VM's domain (any error but "no such
	// domain"): the first Status call recovery makes, whichever VM it is.
	e.LV.FailNext("Status", errors.New("injected: libvirt confused"))
	if err := e.Pods.Recover(ctx); err != nil {
		t.Fatalf("Recover failed (the daemon would stay down): %v", err)
	}
	states := map[string]string{}
	for _, v := range e.Pods.Containers() {
		states[v.ID] = v.State
		// The CRI needs creation times; crictl refuses a status without one.
		if v.CreatedAt == 0 || v.ImageName == "" || v.ImageRef == "" {
			t.Fatalf("container %s lacks a creation time or an image: %+v", v.ID[:8], v)
		}
	}
	if states[badCtr] != lifecycle.ContainerUnknown {
		t.Fatalf("undecodable container: %q (all: %v)", states[badCtr], states)
	}
	unknown := 0
	for _, id := range []string{one, two} {
		switch states[id] {
		case lifecycle.ContainerUnknown:
			unknown++
		case lifecycle.ContainerRunning:
		default:
			t.Fatalf("container %s is %q after recovery", id[:8], states[id])
		}
	}
	if unknown != 1 {
		t.Fatalf("%d of the two VMs quarantined, want the one libvirt did not report: %v", unknown, states)
	}
	sb, err := e.Pods.Sandbox(badSB)
	if err != nil || sb.Ready() {
		t.Fatalf("undecodable sandbox: %+v, %v", sb, err)
	}
	// Quarantined ones are removed like any other, with what they own.
	for id, st := range states {
		if st != lifecycle.ContainerUnknown {
			continue
		}
		if err := e.Pods.RemoveContainer(ctx, id); err != nil {
			t.Fatalf("remove quarantined %s: %v", id[:8], err)
		}
		if _, err := e.Pods.Container(ctx, id); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("quarantined %s still there: %v", id[:8], err)
		}
	}
	if err := e.Pods.RemoveSandbox(ctx, badSB); err != nil {
		t.Fatal(err)
	}
	// Its netns is named by its ID: the removal deletes it.
	if calls := e.Net.CallsFor(badSB); !slices.Contains(calls, "teardown") {
		t.Fatalf("removing the undecodable sandbox did not tear its netns down: %v", calls)
	}
	for _, r := range e.SandboxRecords(t) {
		if r.ID == badSB {
			t.Fatal("the quarantined sandbox's record is still stored")
		}
	}
}

// TestQuarantinedContainerStaysInItsPod: a container whose record is lost
// is linked to its sandbox by its domain's metadata, so that removing the
// pod (the kubelet's cleanup) removes its VM too.
func TestQuarantinedContainerStaysInItsPod(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	sbID, err := e.Pods.RunSandbox(ctx, pod("garbled"), "")
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
	if err := e.Meta.Put(store.Containers, id, []string{"not", "a", "record"}); err != nil {
		t.Fatal(err)
	}
	e.Restart(t)
	if err := e.Pods.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := e.Pods.Container(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if v.State != lifecycle.ContainerUnknown || v.SandboxID != sbID {
		t.Fatalf("garbled container: state %s, sandbox %q; want %s in %s", v.State, v.SandboxID, lifecycle.ContainerUnknown, sbID)
	}
	if err := e.Pods.StopSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if err := e.Pods.RemoveSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := e.LV.Domain(lifecycle.DomainName(id)); ok {
		t.Fatal("the garbled container's domain outlived its pod")
	}
	if _, err := e.Pods.Container(ctx, id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the garbled container outlived its pod: %v", err)
	}
}
