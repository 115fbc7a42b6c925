package lifecycle_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
)

// TestHungToolFailsTheCreate: a qemu-img that never returns fails the
// create at tool_timeout with Unavailable, and the create leaves nothing;
// create_timeout bounds the whole work the same way.
func TestHungToolFailsTheCreate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		set   func(*config.Config)
		words []string
	}{
		{"tool_timeout", func(c *config.Config) { c.ToolTimeout = config.Duration(300 * time.Millisecond) }, []string{"tool_timeout", "root disk"}},
		{"create_timeout", func(c *config.Config) { c.CreateTimeout = config.Duration(300 * time.Millisecond) }, []string{"create_timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := lifecycletest.NewEnv(t)
			tc.set(&e.Cfg)
			e.Pods = e.NewPods()
			ctx := lifecycletest.Ctx(t)
			sbID, err := e.Pods.RunSandbox(ctx, pod("web"), "")
			if err != nil {
				t.Fatal(err)
			}
			_, release := e.Overlays.HoldCreates() // qemu-img hangs
			defer release()
			start := time.Now()
			_, err = e.Pods.CreateContainer(ctx, sbID, ctr("vm"))
			if !errors.Is(err, errdefs.ErrUnavailable) {
				t.Fatalf("create with a hung qemu-img: %v", err)
			}
			for _, w := range tc.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("the create took %v", d)
			}
			e.AssertNoContainers(t)
		})
	}
}
