package lifecycle_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

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
