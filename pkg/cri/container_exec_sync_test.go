package cri

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/guest/guesttest"
)

func TestExecSync(t *testing.T) {
	e := newLCEnv(t)
	g := guesttest.New()
	e.LV.SetAgent(g.Answer)
	pod := lcPod("web")
	id := e.mustCreate(t, e.runPod(t, pod), pod, lcContainer("vm"))
	e.mustStart(t, id)
	exec := func(timeout int64, argv ...string) (*runtimeapi.ExecSyncResponse, error) {
		return e.svc.ExecSync(lcCtx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: argv, Timeout: timeout})
	}

	r, err := exec(0, "hostname")
	if err != nil || string(r.Stdout) != "vm-host\n" || r.ExitCode != 0 {
		t.Fatalf("hostname: %+v, %v", r, err)
	}
	r, err = exec(0, "exit3")
	if err != nil || r.ExitCode != 3 {
		t.Fatalf("exit 3: %+v, %v", r, err)
	}
	r, err = exec(0, "both", "a b", "c")
	if err != nil || string(r.Stdout) != "to-stdout\n" || string(r.Stderr) != "to-stderr\n" {
		t.Fatalf("stdout/stderr: %+v, %v", r, err)
	}
	if got := g.LastArgv(); strings.Join(got, "|") != "both|a b|c" {
		t.Fatalf("argv reached the agent as %q (must be argv, not a shell string)", got)
	}
	r, err = exec(0, "bigoutput")
	if err != nil || len(r.Stdout) != 1<<20+len(truncationNote) || !strings.HasSuffix(string(r.Stdout), truncationNote) {
		t.Fatalf("output cap: %d bytes, %v", len(r.Stdout), err)
	}

	start := time.Now()
	_, err = exec(1, "sleep", "30")
	wantCode(t, err, codes.DeadlineExceeded, "timed out")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("timed-out exec returned after %v", d)
	}
	if last := g.LastArgv(); last[0] != "kill" || last[1] != "-9" {
		t.Fatalf("the timed-out guest process was not killed: last command %q", last)
	}
	if !g.Killed(g.LastPID() - 1) {
		t.Fatal("the fake guest saw no kill of the timed-out process")
	}

	_, err = exec(0)
	wantCode(t, err, codes.InvalidArgument)
}

func TestExecSyncWithoutAgent(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	id := e.mustCreate(t, e.runPod(t, pod), pod, lcContainer("vm"))
	e.mustStart(t, id)
	_, err := e.svc.ExecSync(lcCtx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}})
	wantCode(t, err, codes.FailedPrecondition, "qemu-guest-agent")
	// The VM keeps running.
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("state after a failed exec: %v", st.State)
	}
}
