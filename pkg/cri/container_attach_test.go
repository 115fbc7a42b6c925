package cri

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/guest/guesttest"
)

// TestAttachConsoleFollowsVM: attach streams the console until the VM
// stops, and input reaches the console.
func TestAttachConsoleFollowsVM(t *testing.T) {
	e := newLCEnv(t)
	_, id := e.runningVM(t, "web")
	con := e.Consoles.Last(t)
	outR, outW := io.Pipe()
	inR, inW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- e.svc.AttachConsole(lcCtx(t), id, inR, outW, nil, true, nil) }()

	// Wait for the subscription (beside vmpod's own reader of guest
	// reports), then feed output.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := con.Subscribers()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("AttachConsole did not subscribe")
		}
		time.Sleep(5 * time.Millisecond)
	}
	go con.Feed("login: ")
	buf := make([]byte, 7)
	if _, err := io.ReadFull(outR, buf); err != nil || string(buf) != "login: " {
		t.Fatalf("attach output %q, %v", buf, err)
	}
	if _, err := inW.Write([]byte("root\n")); err != nil {
		t.Fatal(err)
	}
	for con.Written() != "root\n" {
		if time.Now().After(deadline) {
			t.Fatalf("console input = %q", con.Written())
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.LV.GuestPowerOff(domainName(id))
	e.status(t, id) // records the exit, closing the console
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("AttachConsole: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AttachConsole did not return after the VM stopped")
	}
	inW.Close()
	err := e.svc.AttachConsole(lcCtx(t), id, nil, nil, nil, false, nil)
	wantCode(t, err, codes.FailedPrecondition)
}

// TestAttachEndsWithStdinOnce: a container created with stdin_once ends an
// attach when the client closes its stdin (critest's attach test, and
// `printf 'cmd\n' | crictl attach -i`, waited for ever); the VM runs on.
func TestAttachEndsWithStdinOnce(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	c := lcContainer("vm")
	c.Stdin, c.StdinOnce = true, true
	id := e.mustCreate(t, e.runPod(t, pod), pod, c)
	e.mustStart(t, id)
	done := make(chan error, 1)
	go func() {
		done <- e.svc.AttachConsole(lcCtx(t), id, strings.NewReader("echo hi\n"), &guesttest.Sink{}, nil, false, nil)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("AttachConsole: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the attach did not end when its stdin did (stdin_once)")
	}
	if got := e.Consoles.Last(t).Written(); got != "echo hi\n" {
		t.Fatalf("console input %q", got)
	}
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("the VM stopped with the attach: %v", st.State)
	}
}

// TestAttachNoticesGoneClient: a client that went away is noticed by the
// heartbeat even when the console is silent, and the attach ends.
func TestAttachNoticesGoneClient(t *testing.T) {
	e := newLCEnv(t)
	_, id := e.runningVM(t, "web")
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- e.svc.AttachConsole(lcCtx(t), id, nil, &guesttest.Sink{FailAfter: -1}, nil, false, nil)
	}()
	select {
	case <-done:
		if d := time.Since(start); d > 3*heartbeatInterval {
			t.Fatalf("ended after %v", d)
		}
	case <-time.After(3 * heartbeatInterval):
		t.Fatal("the attach of a gone client did not end")
	}
}

// TestStreamIdleTimeout: an attach or exec that carries no data for
// stream_idle_timeout ends, although the heartbeat keeps writing (empty
// frames, which the streaming server's own idle timer counts); data in
// either direction keeps it open.
func TestStreamIdleTimeout(t *testing.T) {
	e := newLCEnv(t)
	e.Cfg.StreamIdleTimeout = config.Duration(heartbeatInterval)
	e.svc = e.newService()
	g := guesttest.New()
	e.LV.SetAgent(g.Answer)
	_, id := e.runningVM(t, "web")
	limit := 3*heartbeatInterval + time.Second

	start := time.Now()
	err := e.svc.AttachConsole(lcCtx(t), id, nil, &guesttest.Sink{}, nil, false, nil)
	if !errors.Is(err, errStreamIdle) || time.Since(start) > limit {
		t.Fatalf("silent attach: %v after %v, want it to end idle within %v", err, time.Since(start), limit)
	}

	start = time.Now()
	err = e.svc.ExecStream(lcCtx(t), id, []string{"sleep", "100"}, nil, &guesttest.Sink{}, nil, false, nil)
	if !errors.Is(err, errStreamIdle) || time.Since(start) > limit {
		t.Fatalf("silent exec: %v after %v, want it to end idle within %v", err, time.Since(start), limit)
	}
	if !g.Killed(g.LastPID() - 1) {
		t.Fatalf("the guest process of an idle exec was not killed: %q", g.LastArgv())
	}

	// A client that types keeps its attach open past the idle timeout.
	in, inW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- e.svc.AttachConsole(lcCtx(t), id, in, &guesttest.Sink{}, nil, false, nil) }()
	for end := time.Now().Add(3 * heartbeatInterval); time.Now().Before(end); time.Sleep(heartbeatInterval / 4) {
		select {
		case err := <-done:
			t.Fatalf("an attach with input ended: %v", err)
		default:
		}
		inW.Write([]byte("x"))
	}
	inW.Close()
	select {
	case err := <-done:
		if !errors.Is(err, errStreamIdle) {
			t.Fatalf("attach after its input stopped: %v", err)
		}
	case <-time.After(limit):
		t.Fatal("the attach did not end idle once its input stopped")
	}
}
