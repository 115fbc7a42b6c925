package cri

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
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
	inner := ttyInner("n0nce", cmd, &remotecommandserver.TerminalSize{Width: 80, Height: 24})
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
	argv := ttyWrapperArgv(2, "n0nce", cmd, nil)
	if strings.Join(argv[:6], "|") != "setsid|sh|-c|"+ttyWrapper+"|vmpod-exec|/dev/virtio-ports/vmpod.exec.2" || argv[6] != "n0nce" || argv[7] != ttyInner("n0nce", cmd, nil) {
		t.Fatalf("wrapper argv %q", argv)
	}
}

// ttyGuest plays the guest side of TTY execs: it listens on the VM's exec
// sockets as QEMU does and, when the fake agent runs the wrapper, talks
// its protocol on that port: a begin line (after some noise), the terminal
// name, then a line "shell" that echoes each line and ends on "exit N"
// or ^D.
type ttyGuest struct {
	conns   [ttyExecPorts]chan net.Conn
	inner   chan string
	noStart atomic.Bool // the wrapper cannot open its port
}

func newTTYGuest(t *testing.T, runDir string, g *fakeGuest) *ttyGuest {
	tg := &ttyGuest{inner: make(chan string, 10)}
	for n := range ttyExecPorts {
		tg.conns[n] = make(chan net.Conn, 1)
		l, err := net.Listen("unix", execSocket(runDir, n))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { c.Close() })
				tg.conns[n] <- c
			}
		}()
	}
	g.tty = tg.play
	return tg
}

func (tg *ttyGuest) play(argv []string) (int, string) {
	if len(argv) != 8 || argv[0] != "setsid" || argv[3] != ttyWrapper {
		return 2, fmt.Sprintf("bad wrapper argv %q", argv)
	}
	port, nonce := argv[5], argv[6]
	if tg.noStart.Load() {
		return 2, "sh: can't open '" + port + "': No such file or directory\n"
	}
	tg.inner <- argv[7]
	n, _ := strconv.Atoi(port[len(port)-1:])
	var conn net.Conn
	select {
	case conn = <-tg.conns[n]:
	case <-time.After(5 * time.Second):
		return 2, "no host on " + port
	}
	fmt.Fprintf(conn, "noise\x1e%s:begin\n", nonce)
	fmt.Fprintf(conn, "\x1e%s:tty=/dev/pts/7\r\n# ", nonce)
	r := bufio.NewReader(conn)
	var line []byte
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 129, "" // hung up
		}
		switch {
		case b == 0x04 && len(line) == 0:
			fmt.Fprintf(conn, "\x1e%s:end:0\n", nonce)
			return 0, ""
		case b == '\n':
			fmt.Fprintf(conn, "%s\r\n", line)
			if code, ok := strings.CutPrefix(string(line), "exit "); ok {
				c, _ := strconv.Atoi(code)
				fmt.Fprintf(conn, "\x1e%s:end:%d\n", nonce, c)
				return c, ""
			}
			conn.Write([]byte("# "))
			line = line[:0]
		default:
			line = append(line, b)
		}
	}
}

func TestExecStreamTTY(t *testing.T) {
	e := newLCEnv(t)
	g := newFakeGuest()
	e.lv.SetAgent(g.answer)
	_, id := e.runningVM(t, "web")
	c, _ := e.svc.state.getContainer(id)
	rec, _ := c.snapshot()

	// No exec channel: a VM defined by an older vmpod.
	err := e.svc.ExecStream(lcCtx(t), id, []string{"sh"}, nil, &sink{}, nil, true, nil)
	wantCode(t, err, codes.FailedPrecondition, "older vmpod")

	tg := newTTYGuest(t, rec.RunDir, g)
	start := func(in io.Reader, out *sink, resize chan remotecommandserver.TerminalSize, argv ...string) chan error {
		done := make(chan error, 1)
		go func() {
			var rs <-chan remotecommandserver.TerminalSize
			if resize != nil {
				rs = resize
			}
			done <- e.svc.ExecStream(lcCtx(t), id, argv, in, out, nil, true, rs)
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
	out := &sink{}
	resize := make(chan remotecommandserver.TerminalSize, 1)
	resize <- remotecommandserver.TerminalSize{Width: 80, Height: 24}
	done := start(inR, out, resize, "sh", "-c", "echo 'x'")
	if inner := <-tg.inner; !strings.HasPrefix(inner, "stty rows 24 cols 80") || !strings.HasSuffix(inner, `exec 'sh' '-c' 'echo '\''x'\'''`) {
		t.Fatalf("inner command %s", inner)
	}
	io.WriteString(inW, "echo hi\n")
	resize <- remotecommandserver.TerminalSize{Width: 100, Height: 30}
	deadline := time.Now().Add(5 * time.Second)
	for len(g.commands("sh")) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := g.commands("sh"); len(got) != 1 || strings.Join(got[0], "|") != `sh|-c|stty rows "$2" cols "$3" <"$1"|vmpod-resize|/dev/pts/7|30|100` {
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
	if n := c.ttyPorts.free(); n != ttyExecPorts {
		t.Fatalf("%d exec channels free after the session", n)
	}

	// Two sessions at once use two channels; stdin's end is ^D.
	in1R, in1W := io.Pipe()
	in2R, in2W := io.Pipe()
	d1 := start(in1R, &sink{}, nil, "sh")
	<-tg.inner
	d2 := start(in2R, &sink{}, nil, "sh")
	<-tg.inner
	deadline = time.Now().Add(5 * time.Second)
	for c.ttyPorts.free() != ttyExecPorts-2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	in1W.Close()
	io.WriteString(in2W, "exit 0\n")
	if err := wait(d1); err != nil {
		t.Fatalf("session ended by stdin EOF: %v", err)
	}
	if err := wait(d2); err != nil {
		t.Fatalf("second session: %v", err)
	}

	// Without stdout (allowed with a TTY) the output is dropped.
	nilOut := make(chan error, 1)
	go func() {
		nilOut <- e.svc.ExecStream(lcCtx(t), id, []string{"sh"}, strings.NewReader("exit 4\n"), nil, nil, true, nil)
	}()
	<-tg.inner
	if code := exitCode(t, wait(nilOut)); code != 4 {
		t.Fatalf("TTY exec without stdout: code %d", code)
	}

	// The client going away (a write to it fails) kills the session's
	// process group.
	inR, inW = io.Pipe()
	done = start(inR, &sink{failAfter: 1}, nil, "sh")
	<-tg.inner
	io.WriteString(inW, "echo to a closed stream\n")
	err = wait(done)
	if !errors.Is(err, errClientGone) {
		t.Fatalf("exec to a gone client: %v", err)
	}
	if pid := setsidPID(g); !g.killed(pid) || !strings.HasPrefix(strings.Join(g.lastArgv(), " "), `sh -c kill -9 -"$1" vmpod-kill`) {
		t.Fatalf("the session was not killed: %q", g.lastArgv())
	}

	// A wrapper that cannot open its port: its stderr is the error.
	tg.noStart.Store(true)
	err = wait(start(nil, &sink{}, nil, "sh"))
	if err == nil || exitCode(t, err) != -1 || !strings.Contains(err.Error(), "can't open '/dev/virtio-ports/vmpod.exec.0'") {
		t.Fatalf("wrapper failing at start: %v", err)
	}
}

// setsidPID is the pid of the last TTY exec wrapper.
func setsidPID(g *fakeGuest) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := len(g.argvs) - 1; i >= 0; i-- {
		if g.argvs[i][0] == "setsid" {
			return i + 1
		}
	}
	return 0
}
