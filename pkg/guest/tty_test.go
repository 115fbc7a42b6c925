package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/guest/guesttest"
)

func TestShellQuote(t *testing.T) {
	words := []string{"plain", "", "a b", "it's", `"dq"`, `$HOME`, "`id`", `\n\`, "semi;colon", "new\nline", "*", "'", "''", "-e", "tab\there", "ünïcode"}
	for _, w := range words {
		if q := shellQuote(w); !strings.HasPrefix(q, "'") || !strings.HasSuffix(q, "'") {
			t.Errorf("shellQuote(%q) = %s", w, q)
		}
	}
	// A real shell gets the words back unchanged.
	var script strings.Builder
	script.WriteString("printf '%s\\000'")
	for _, w := range words {
		script.WriteString(" " + shellQuote(w))
	}
	out, err := exec.Command("/bin/sh", "-c", script.String()).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if strings.Join(got, "|") != strings.Join(words, "|") {
		t.Fatalf("through sh: %q, want %q", got, words)
	}
}

func TestTTYInner(t *testing.T) {
	cmd := []string{"printf", `%s|`, "a b", "it's", "$HOME", "`id`"}
	inner := ttyInner("n0nce", cmd, &Size{Width: 80, Height: 24})
	if !strings.HasPrefix(inner, "stty rows 24 cols 80 2>/dev/null; ") {
		t.Fatalf("inner does not set the size first: %s", inner)
	}
	if strings.Contains(ttyInner("n0nce", cmd, nil), "stty") {
		t.Fatal("inner sets a size it does not know")
	}
	// Run by a real shell (without a terminal: stty fails quietly and tty
	// says so), it reports the terminal and runs argv as given.
	out, _ := exec.Command("/bin/sh", "-c", inner).Output()
	line, rest, _ := strings.Cut(string(out), "\n")
	if !strings.HasPrefix(line, "\x1en0nce:tty=") {
		t.Fatalf("no tty line: %q", out)
	}
	if rest != "a b|it's|$HOME|`id`|" {
		t.Fatalf("the command ran as %q", rest)
	}
	argv := ttyWrapperArgv("/dev/virtio-ports/vmpod.exec.2", "n0nce", cmd, nil)
	if strings.Join(argv[:6], "|") != "setsid|sh|-c|"+ttyWrapper+"|vmpod-exec|/dev/virtio-ports/vmpod.exec.2" || argv[6] != "n0nce" || argv[7] != ttyInner("n0nce", cmd, nil) {
		t.Fatalf("wrapper argv %q", argv)
	}
}

// agentFunc adapts a fake agent's answer function to a Commander.
type agentFunc func(domain, command string) (string, error)

func (f agentFunc) AgentCommand(_ context.Context, domain, command string, _ time.Duration) (string, error) {
	return f(domain, command)
}

func TestRunTTY(t *testing.T) {
	dir, err := os.MkdirTemp("", "vg") // short: unix socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	g := guesttest.New()
	a := NewAgent(agentFunc(g.Answer), "vm")
	var chans []Channel
	var socks []string
	for n := range ExecPorts {
		sock := filepath.Join(dir, fmt.Sprintf("exec%d.sock", n))
		socks = append(socks, sock)
		chans = append(chans, Channel{Socket: sock, Device: fmt.Sprintf("/dev/virtio-ports/vmpod.exec.%d", n)})
	}
	run := func(ch Channel, in io.Reader, out io.Writer, resize chan Size, argv ...string) chan error {
		done := make(chan error, 1)
		go func() {
			var rs <-chan Size
			if resize != nil {
				rs = resize
			}
			code, err := a.RunTTY(t.Context(), ch, argv, in, out, FirstSize(rs), rs)
			if err == nil && code != 0 {
				err = fmt.Errorf("exit %d", code)
			}
			done <- err
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

	// No channel: a VM defined by an older vmpod.
	if err := wait(run(chans[0], nil, &guesttest.Sink{}, nil, "sh")); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "older vmpod") {
		t.Fatalf("exec without a channel: %v", err)
	}

	tg := guesttest.NewTTYPlayer(t, socks, g)
	// A session: the size known at start goes into the command, later
	// sizes through stty; the control lines and the noise before begin
	// never reach the client; the exit code comes back.
	inR, inW := io.Pipe()
	out := &guesttest.Sink{}
	resize := make(chan Size, 1)
	resize <- Size{Width: 80, Height: 24}
	done := run(chans[1], inR, out, resize, "sh", "-c", "echo 'x'")
	if inner := <-tg.Inner; !strings.HasPrefix(inner, "stty rows 24 cols 80") || !strings.HasSuffix(inner, `exec 'sh' '-c' 'echo '\''x'\'''`) {
		t.Fatalf("inner command %s", inner)
	}
	io.WriteString(inW, "echo hi\n")
	resize <- Size{Width: 100, Height: 30}
	deadline := time.Now().Add(5 * time.Second)
	for len(g.Run("sh")) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := g.Run("sh"); len(got) != 1 || strings.Join(got[0], "|") != `sh|-c|stty rows "$2" cols "$3" <"$1"|vmpod-resize|/dev/pts/7|30|100` {
		t.Fatalf("resize helpers %q", got)
	}
	io.WriteString(inW, "exit 3\n")
	if err := wait(done); err == nil || err.Error() != "exit 3" {
		t.Fatalf("exit 3: %v", err)
	}
	if got := out.String(); got != "# echo hi\r\n# exit 3\r\n" {
		t.Fatalf("client saw %q", got)
	}

	// stdin's end is ^D; without output the output is dropped.
	done = run(chans[2], strings.NewReader(""), nil, nil, "sh")
	<-tg.Inner
	if err := wait(done); err != nil {
		t.Fatalf("session ended by stdin EOF: %v", err)
	}

	// The client going away (a write to it fails) kills the process group.
	inR, inW = io.Pipe()
	done = run(chans[3], inR, &guesttest.Sink{FailAfter: 1}, nil, "sh")
	<-tg.Inner
	io.WriteString(inW, "echo to a closed stream\n")
	if err := wait(done); !errors.Is(err, ErrClientGone) {
		t.Fatalf("exec to a gone client: %v", err)
	}
	if pid := g.SetsidPID(); !g.Killed(pid) || !strings.HasPrefix(strings.Join(g.LastArgv(), " "), `sh -c kill -9 -"$1" vmpod-kill`) {
		t.Fatalf("the session was not killed: %q", g.LastArgv())
	}

	// A wrapper that cannot open its port: its stderr is the error.
	tg.NoStart.Store(true)
	if err := wait(run(chans[0], nil, &guesttest.Sink{}, nil, "sh")); err == nil || !strings.Contains(err.Error(), "can't open '/dev/virtio-ports/vmpod.exec.0'") {
		t.Fatalf("wrapper failing at start: %v", err)
	}
}

func TestPortSet(t *testing.T) {
	var p PortSet
	var got []int
	for range ExecPorts {
		n, ok := p.Acquire()
		if !ok {
			t.Fatal("no free port")
		}
		got = append(got, n)
	}
	if _, ok := p.Acquire(); ok || p.Free() != 0 {
		t.Fatalf("acquired more than %d ports", ExecPorts)
	}
	p.Release(got[2])
	if n, ok := p.Acquire(); !ok || n != got[2] {
		t.Fatalf("after release got %d, %v", n, ok)
	}
}
