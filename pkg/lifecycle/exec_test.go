package lifecycle_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/guest/guesttest"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
)

// TestExecWaitsForBootingAgent: an exec right after StartContainer, before
// the guest's agent answers, waits for it (up to the request's timeout,
// capped by agent_wait_timeout) instead of failing at once; an agent that
// never comes gives a clear error at the cap.
func TestExecWaitsForBootingAgent(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	e.Cfg.AgentWaitTimeout = config.Duration(5 * time.Second)
	e.Pods = e.NewPods()
	ctx := lifecycletest.Ctx(t)
	sbID, err := e.Pods.RunSandbox(ctx, pod("web"), "")
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
	// The agent comes up 700 ms after the exec was asked for.
	g := guesttest.New()
	time.AfterFunc(700*time.Millisecond, func() { e.LV.SetAgent(g.Answer) })
	start := time.Now()
	res, err := e.Pods.ExecSync(ctx, id, []string{"hostname"}, 10*time.Second)
	if err != nil || string(res.Stdout) != "vm-host\n" {
		t.Fatalf("exec on a booting VM: %+v, %v", res, err)
	}
	if d := time.Since(start); d < 700*time.Millisecond || d > 3*time.Second {
		t.Fatalf("the exec took %v; the agent answered after 700ms", d)
	}
	if n := len(g.Run("hostname")); n != 1 {
		t.Fatalf("the command ran %d times", n)
	}

	// No agent at all: the request's timeout (1 s, shorter than the cap)
	// bounds the wait, and the error says what to check.
	e.LV.SetAgent(nil)
	start = time.Now()
	_, err = e.Pods.ExecSync(ctx, id, []string{"true"}, time.Second)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "still be booting") || !strings.Contains(err.Error(), "qemu-guest-agent") {
		t.Fatalf("exec without an agent: %v", err)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Fatalf("gave up after %v, want about the 1s timeout", d)
	}
}
