package lifecycle_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
)

var errInjected = fmt.Errorf("injected: %w", errdefs.ErrInternal)

// TestRemoveIsOneStep: removing a container deletes its record, its
// membership and its name together; a failed removal changes none of
// them.
func TestRemoveIsOneStep(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	sbID, err := e.Pods.RunSandbox(ctx, pod("web"), "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.Pods.CreateContainer(ctx, sbID, ctr("vm"))
	if err != nil {
		t.Fatal(err)
	}
	// libvirt refuses the undefine: everything stays, the name included.
	e.LV.FailNext("Undefine", errInjected)
	if err := e.Pods.RemoveContainer(ctx, id); !errors.Is(err, errdefs.ErrInternal) {
		t.Fatalf("remove with a failing undefine: %v", err)
	}
	if len(e.ContainerRecords(t)) != 1 || len(e.Pods.Containers()) != 1 {
		t.Fatal("a failed removal dropped the record or the membership")
	}
	if _, err := e.Pods.CreateContainer(ctx, sbID, ctr("vm")); !errors.Is(err, errdefs.ErrFailedPrecondition) && !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("the name was released by a failed removal: %v", err)
	}
	if err := e.Pods.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	e.AssertNoContainers(t)
	// Name free again.
	if _, err := e.Pods.CreateContainer(ctx, sbID, ctr("vm")); err != nil {
		t.Fatalf("create after the removal: %v", err)
	}
	// Unknown IDs and prefixes.
	if _, err := e.Pods.Sandbox("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unknown sandbox: %v", err)
	}
	if v, err := e.Pods.Sandbox(sbID[:8]); err != nil || v.ID != sbID {
		t.Fatalf("sandbox by prefix: %v, %v", v.ID, err)
	}
	if _, err := e.Pods.Sandbox(sbID[:5]); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), sbID[:5]) {
		t.Fatalf("a 5-character prefix resolved: %v", err)
	}
}

// TestRemoveSandboxDuringCreate: a RemovePodSandbox that races a
// CreateContainer in the middle of defining its domain converges: no
// record, domain or file outlives the sandbox.
func TestRemoveSandboxDuringCreate(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	sbID, err := e.Pods.RunSandbox(ctx, pod("web"), "")
	if err != nil {
		t.Fatal(err)
	}
	entered, release := e.LV.HoldNext("Define")
	defer release()
	created := make(chan error, 1)
	go func() {
		_, err := e.Pods.CreateContainer(ctx, sbID, ctr("vm"))
		created <- err
	}()
	<-entered
	removed := make(chan error, 1)
	go func() { removed <- e.Pods.RemoveSandbox(ctx, sbID) }()
	time.Sleep(50 * time.Millisecond) // let the removal get as far as it can
	release()
	if err := <-created; err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := <-removed; err != nil {
		t.Fatalf("remove: %v", err)
	}
	e.AssertNoContainers(t)
	if recs := e.SandboxRecords(t); len(recs) != 0 {
		t.Fatalf("sandbox records left: %+v", recs)
	}
}
