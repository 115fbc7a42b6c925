package cri

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/guest/guesttest"
)

// TestExecStreamTTY drives TTY execs through the streaming entry point:
// the exec channel, the terminal sizes, exit codes and a client that goes
// away (pkg/guest's tests cover the channel protocol itself).
func TestExecStreamTTY(t *testing.T) {
	e := newLCEnv(t)
	g := guesttest.New()
	e.LV.SetAgent(g.Answer)
	_, id := e.runningVM(t, "web")
	rec := e.Record(t, id)

	// No exec channel: a VM defined by an older vmpod.
	err := e.svc.ExecStream(lcCtx(t), id, []string{"sh"}, nil, &guesttest.Sink{}, nil, true, nil)
	wantCode(t, err, codes.FailedPrecondition, "older vmpod")

	tg := guesttest.NewTTYPlayer(t, execSockets(rec.RunDir), g)
	start := func(in io.Reader, out *guesttest.Sink, resize chan remotecommandserver.TerminalSize, argv ...string) chan error {
		done := make(chan error, 1)
		go func() {
			var rs <-chan remotecommandserver.TerminalSize
			if resize != nil {
				rs = resize
			}
			var w io.WriteCloser
			if out != nil {
				w = out
			}
			done <- e.svc.ExecStream(lcCtx(t), id, argv, in, w, nil, true, rs)
		}()
		return done
	}
	wait := func(done chan error) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("TTY exec did not end")
			return nil
		}
	}

	// A session: the size known at start goes into the command, later
	// sizes through stty; input reaches the guest once it began; the
	// control lines and the noise before begin never reach the client;
	// the exit code comes back.
	inR, inW := io.Pipe()
	out := &guesttest.Sink{}
	resize := make(chan remotecommandserver.TerminalSize, 1)
	resize <- remotecommandserver.TerminalSize{Width: 80, Height: 24}
	done := start(inR, out, resize, "sh", "-c", "echo 'x'")
	if inner := <-tg.Inner; !strings.HasPrefix(inner, "stty rows 24 cols 80") || !strings.HasSuffix(inner, `exec 'sh' '-c' 'echo '\''x'\'''`) {
		t.Fatalf("inner command %s", inner)
	}
	io.WriteString(inW, "echo hi\n")
	resize <- remotecommandserver.TerminalSize{Width: 100, Height: 30}
	deadline := time.Now().Add(5 * time.Second)
	for len(g.Run("sh")) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := g.Run("sh"); len(got) != 1 || strings.Join(got[0], "|") != `sh|-c|stty rows "$2" cols "$3" <"$1"|vmpod-resize|/dev/pts/7|30|100` {
		t.Fatalf("resize helpers %q", got)
	}
	io.WriteString(inW, "exit 3\n")
	err = wait(done)
	if code := exitCode(t, err); code != 3 {
		t.Fatalf("exit 3: code %d, %v", code, err)
	}
	if got := out.String(); got != "# echo hi\r\n# exit 3\r\n" {
		t.Fatalf("client saw %q", got)
	}

	// Two sessions at once use two channels; stdin's end is ^D.
	in1R, in1W := io.Pipe()
	in2R, in2W := io.Pipe()
	d1 := start(in1R, &guesttest.Sink{}, nil, "sh")
	<-tg.Inner
	d2 := start(in2R, &guesttest.Sink{}, nil, "sh")
	<-tg.Inner
	in1W.Close()
	io.WriteString(in2W, "exit 0\n")
	if err := wait(d1); err != nil {
		t.Fatalf("session ended by stdin EOF: %v", err)
	}
	if err := wait(d2); err != nil {
		t.Fatalf("second session: %v", err)
	}

	// Without stdout (allowed with a TTY) the output is dropped.
	nilOut := start(strings.NewReader("exit 4\n"), nil, nil, "sh")
	<-tg.Inner
	if code := exitCode(t, wait(nilOut)); code != 4 {
		t.Fatalf("TTY exec without stdout: code %d", code)
	}

	// The client going away (a write to it fails) kills the session's
	// process group.
	inR, inW = io.Pipe()
	done = start(inR, &guesttest.Sink{FailAfter: 1}, nil, "sh")
	<-tg.Inner
	io.WriteString(inW, "echo to a closed stream\n")
	err = wait(done)
	if !errors.Is(err, guest.ErrClientGone) {
		t.Fatalf("exec to a gone client: %v", err)
	}
	if pid := g.SetsidPID(); !g.Killed(pid) || !strings.HasPrefix(strings.Join(g.LastArgv(), " "), `sh -c kill -9 -"$1" vmpod-kill`) {
		t.Fatalf("the session was not killed: %q", g.LastArgv())
	}

	// A wrapper that cannot open its port: its stderr is the error.
	tg.NoStart.Store(true)
	err = wait(start(nil, &guesttest.Sink{}, nil, "sh"))
	if err == nil || exitCode(t, err) != -1 || !strings.Contains(err.Error(), "can't open '/dev/virtio-ports/vmpod.exec.0'") {
		t.Fatalf("wrapper failing at start: %v", err)
	}
	// Six sessions ran on four channels: each gave its channel back.
	if err := e.Pods.CheckExec(id, true); err != nil {
		t.Fatalf("exec channels still busy after the sessions ended: %v", err)
	}
}
