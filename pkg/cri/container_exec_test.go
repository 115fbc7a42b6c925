package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	utilexec "k8s.io/utils/exec"

	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/guest/guesttest"
)

// Constants of the exec path the tests check against.
const (
	// truncationNote ends output that was cut (guest.TruncationNote).
	truncationNote = "\n[vmpod: output truncated]\n"
	// execPorts is how many TTY exec channels a VM has.
	execPorts = 4
)

// execSockets are the host sockets of a VM's exec channels.
func execSockets(runDir string) []string {
	var s []string
	for n := range execPorts {
		s = append(s, filepath.Join(runDir, fmt.Sprintf("exec%d.sock", n)))
	}
	return s
}

// fakeStreams is a streaming server that hands out fixed URLs.
type fakeStreams struct{}

func (fakeStreams) GetAttach(*runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	return &runtimeapi.AttachResponse{Url: "http://streams/attach/x"}, nil
}

func (fakeStreams) GetExec(*runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	return &runtimeapi.ExecResponse{Url: "http://streams/exec/x"}, nil
}

func (fakeStreams) GetPortForward(*runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return &runtimeapi.PortForwardResponse{Url: "http://streams/portforward/x"}, nil
}

// exitCode returns the code of a CodeExitError as the streaming server
// sees it (by type assertion), -1 for another error, 0 for none.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	if ee, ok := err.(utilexec.ExitError); ok && ee.Exited() {
		return ee.ExitStatus()
	}
	return -1
}

func TestExecRPC(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	exec := func(req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
		return e.svc.Exec(lcCtx(t), req)
	}

	_, err := exec(&runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Stdout: true})
	wantCode(t, err, codes.FailedPrecondition, "CREATED")
	e.mustStart(t, id)
	_, err = exec(&runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Stdout: true})
	wantCode(t, err, codes.Unavailable, "streaming server")
	e.svc.SetStreamServer(fakeStreams{})

	for _, tc := range []struct {
		name string
		req  *runtimeapi.ExecRequest
		code codes.Code
	}{
		{"empty command", &runtimeapi.ExecRequest{ContainerId: id, Stdout: true}, codes.InvalidArgument},
		{"empty argv[0]", &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{""}, Stdout: true}, codes.InvalidArgument},
		{"no output stream", &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"true"}, Stdin: true}, codes.InvalidArgument},
		{"unknown container", &runtimeapi.ExecRequest{ContainerId: "nope", Cmd: []string{"true"}, Stdout: true}, codes.NotFound},
		{"stdout", &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"true"}, Stdout: true}, codes.OK},
		{"tty", &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Tty: true, Stdin: true, Stdout: true}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := exec(tc.req)
			if tc.code == codes.OK {
				if err != nil || resp.Url != "http://streams/exec/x" {
					t.Fatalf("Exec = %+v, %v", resp, err)
				}
				return
			}
			wantCode(t, err, tc.code)
		})
	}

	// All exec channels busy: a TTY exec is refused up front, a non-TTY
	// one (no channel needed) is not.
	g := guesttest.New()
	e.LV.SetAgent(g.Answer)
	tg := guesttest.NewTTYPlayer(t, execSockets(e.Record(t, id).RunDir), g)
	var stdins []*io.PipeWriter
	for range execPorts {
		r, w := io.Pipe()
		stdins = append(stdins, w)
		go e.svc.ExecStream(lcCtx(t), id, []string{"sh"}, r, &guesttest.Sink{}, nil, true, nil)
		<-tg.Inner
	}
	_, err = exec(&runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Tty: true, Stdout: true})
	wantCode(t, err, codes.Unavailable, "TTY execs")
	if _, err := exec(&runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"true"}, Stdout: true}); err != nil {
		t.Fatalf("non-TTY exec with the exec channels busy: %v", err)
	}
	for _, w := range stdins {
		w.Close()
	}
}

func TestExecStreamPiped(t *testing.T) {
	e := newLCEnv(t)
	g := guesttest.New()
	e.LV.SetAgent(g.Answer)
	_, id := e.runningVM(t, "web")
	run := func(ctx context.Context, in io.Reader, out *guesttest.Sink, errw *guesttest.Sink, argv ...string) error {
		var o, ew io.WriteCloser
		if out != nil {
			o = out
		}
		if errw != nil {
			ew = errw
		}
		return e.svc.ExecStream(ctx, id, argv, in, o, ew, false, nil)
	}

	// stdin is read whole and reaches the command as input-data.
	out, errw := &guesttest.Sink{}, &guesttest.Sink{}
	if err := run(lcCtx(t), strings.NewReader("hello\nworld\n"), out, errw, "cat"); err != nil || out.String() != "hello\nworld\n" {
		t.Fatalf("cat: %q, %v", out, err)
	}
	// stdout and stderr stay apart; argv stays argv.
	out, errw = &guesttest.Sink{}, &guesttest.Sink{}
	if err := run(lcCtx(t), nil, out, errw, "both", "a b", "it's"); err != nil || out.String() != "to-stdout\n" || errw.String() != "to-stderr\n" {
		t.Fatalf("both: %q %q, %v", out, errw, err)
	}
	if got := g.LastArgv(); strings.Join(got, "|") != "both|a b|it's" {
		t.Fatalf("argv reached the agent as %q", got)
	}
	// Only the streams asked for are written.
	out = &guesttest.Sink{}
	if err := run(lcCtx(t), nil, out, nil, "both"); err != nil || out.String() != "to-stdout\n" {
		t.Fatalf("stdout only: %q, %v", out, err)
	}
	// A non-zero exit is a CodeExitError the streaming server recognises.
	err := run(lcCtx(t), nil, &guesttest.Sink{}, &guesttest.Sink{}, "exit3")
	if c := exitCode(t, err); c != 3 {
		t.Fatalf("exit 3: code %d, %v", c, err)
	}
	// A command that cannot run exits 127, as from a shell.
	if c := exitCode(t, run(lcCtx(t), nil, &guesttest.Sink{}, &guesttest.Sink{}, "no-such-command")); c != 127 {
		t.Fatalf("missing command: code %d", c)
	}
	// stdin beyond the cap is refused before anything runs.
	n := len(g.Run("cat"))
	err = run(lcCtx(t), bytes.NewReader(make([]byte, 128<<10+1)), &guesttest.Sink{}, nil, "cat")
	wantCode(t, err, codes.InvalidArgument, "limited to 131072 bytes")
	if len(g.Run("cat")) != n {
		t.Fatal("the command ran despite too much stdin")
	}

	// The client going away (ctx ends) kills the guest process.
	ctx, cancel := context.WithCancel(lcCtx(t))
	time.AfterFunc(100*time.Millisecond, cancel)
	err = run(ctx, nil, &guesttest.Sink{}, &guesttest.Sink{}, "sleep", "100")
	if err == nil || exitCode(t, err) != -1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled exec: %v", err)
	}
	if !g.Killed(g.LastPID() - 1) {
		t.Fatalf("the guest process of a cancelled exec was not killed: %q", g.LastArgv())
	}
}

func TestExecStreamPipedClientGone(t *testing.T) {
	e := newLCEnv(t)
	g := guesttest.New()
	e.LV.SetAgent(g.Answer)
	_, id := e.runningVM(t, "web")
	// A client that cannot be written to any more is noticed by the
	// heartbeat while the command runs; the guest process is killed.
	gone := &guesttest.Sink{FailAfter: -1}
	start := time.Now()
	err := e.svc.ExecStream(lcCtx(t), id, []string{"sleep", "100"}, nil, gone, nil, false, nil)
	if !errors.Is(err, guest.ErrClientGone) || time.Since(start) > 3*heartbeatInterval {
		t.Fatalf("exec to a gone client: %v after %v", err, time.Since(start))
	}
	if !g.Killed(g.LastPID() - 1) {
		t.Fatalf("the guest process was not killed: %q", g.LastArgv())
	}
}

func TestExecStreamWithoutAgent(t *testing.T) {
	e := newLCEnv(t)
	_, id := e.runningVM(t, "web")
	err := e.svc.ExecStream(lcCtx(t), id, []string{"true"}, nil, &guesttest.Sink{}, nil, false, nil)
	wantCode(t, err, codes.FailedPrecondition, "qemu-guest-agent")
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("state after a failed exec: %v", st.State)
	}
	err = e.svc.ExecStream(lcCtx(t), "nope", []string{"true"}, nil, &guesttest.Sink{}, nil, false, nil)
	wantCode(t, err, codes.NotFound)
}
