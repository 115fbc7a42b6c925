package guest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// localAgent is a QEMU guest agent whose guest is this host: guest-exec
// runs a real process (real /bin/sh), with the environment it is given,
// like qemu-ga. It forgets a process once its exit was reported.
type localAgent struct {
	mu    sync.Mutex
	procs map[int]*localProc
}

type localProc struct {
	done     chan struct{}
	state    *os.ProcessState
	out, err bytes.Buffer
}

func (l *localAgent) Answer(_, command string) (string, error) {
	var req struct {
		Execute   string `json:"execute"`
		Arguments struct {
			Path    string   `json:"path"`
			Arg     []string `json:"arg"`
			Env     []string `json:"env"`
			Capture bool     `json:"capture-output"`
			PID     int      `json:"pid"`
		} `json:"arguments"`
	}
	if err := json.Unmarshal([]byte(command), &req); err != nil {
		return "", err
	}
	a := req.Arguments
	l.mu.Lock()
	defer l.mu.Unlock()
	switch req.Execute {
	case "guest-exec":
		cmd := exec.Command(a.Path, a.Arg...)
		cmd.Env = a.Env
		p := &localProc{done: make(chan struct{})}
		if a.Capture {
			cmd.Stdout, cmd.Stderr = &p.out, &p.err
		}
		if err := cmd.Start(); err != nil {
			return "", err
		}
		go func() { cmd.Wait(); p.state = cmd.ProcessState; close(p.done) }()
		if l.procs == nil {
			l.procs = map[int]*localProc{}
		}
		l.procs[cmd.Process.Pid] = p
		return fmt.Sprintf(`{"return":{"pid":%d}}`, cmd.Process.Pid), nil
	case "guest-exec-status":
		p, ok := l.procs[a.PID]
		if !ok {
			return "", errors.New("Invalid parameter 'pid'")
		}
		select {
		case <-p.done:
		default:
			return `{"return":{"exited":false}}`, nil
		}
		delete(l.procs, a.PID)
		enc := base64.StdEncoding.EncodeToString
		ws := p.state.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return fmt.Sprintf(`{"return":{"exited":true,"signal":%d}}`, ws.Signal()), nil
		}
		return fmt.Sprintf(`{"return":{"exited":true,"exitcode":%d,"out-data":%q,"err-data":%q}}`,
			ws.ExitStatus(), enc(p.out.Bytes()), enc(p.err.Bytes())), nil
	}
	return "", fmt.Errorf("unknown command %s", req.Execute)
}

// waitCommand polls the wrapper until it exits.
func waitCommand(t *testing.T, a *Agent, pid int) CommandExit {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ex, err := a.CommandStatus(t.Context(), pid)
		if err != nil {
			t.Fatal(err)
		}
		if ex.Exited || ex.RunningPID != 0 {
			return ex
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the command did not end")
	return CommandExit{}
}

// TestCommandWrapper runs the wrapper with the host's /bin/sh (dash on
// Debian, as in a Debian guest; the e2e tests run it with busybox's): the
// command gets exactly its argv, env and working directory, its stdout
// and stderr go apart to the ports, each ending with the end line, and
// its exit code comes back and is kept in the exit file.
func TestCommandWrapper(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	work := filepath.Join(dir, "work dir")
	os.Mkdir(work, 0o755)
	la := &localAgent{}
	a := NewAgent(agentFunc(la.Answer), "vm")
	newCmd := func(n int, argv ...string) Command {
		out, errOut := filepath.Join(dir, fmt.Sprint("out", n)), filepath.Join(dir, fmt.Sprint("err", n))
		os.WriteFile(out, nil, 0o600)
		os.WriteFile(errOut, nil, 0o600)
		return Command{Argv: argv, Env: CommandEnv([][2]string{{"GREETING", "it's $HOME `x`"}}), Dir: work,
			Stdout: out, Stderr: errOut, Nonce: "n0nce", StateDir: filepath.Join(state, fmt.Sprint(n))}
	}
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }

	c := newCmd(1, "sh", "-c", `echo "out $GREETING"; pwd; echo err >&2; printf '%s|' "$@"; exit 7`, "argv0", "a b", "$HOME", "'")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	pid, err := a.StartCommand(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	if ex := waitCommand(t, a, pid); !ex.Exited || ex.Code != 7 || ex.StartError != "" {
		t.Fatalf("exit %+v", ex)
	}
	if got, want := read(c.Stdout), "out it's $HOME `x`\n"+work+"\na b|$HOME|'|\x1en0nce:end:7\n"; got != want {
		t.Fatalf("stdout port %q, want %q", got, want)
	}
	if got := read(c.Stderr); got != "err\n\x1en0nce:end:7\n" {
		t.Fatalf("stderr port %q", got)
	}
	f := NewOutputFilter("n0nce")
	if out, ended := f.Feed([]byte(read(c.Stdout) + "a background process still writing\n")); !ended || string(out) != "out it's $HOME `x`\n"+work+"\na b|$HOME|'|" {
		t.Fatalf("filtered %q, ended %v", out, ended)
	}
	tr, err := a.TraceCommand(t.Context(), c.StateDir, pid)
	if err != nil || tr.PID != pid || tr.ExitCode == nil || *tr.ExitCode != 7 || tr.Alive {
		t.Fatalf("trace %+v, %v (want pid %d, exit 7, not alive)", tr, err, pid)
	}

	// At most one run per boot: a second start finds the first.
	pid2, err := a.StartCommand(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	if ex := waitCommand(t, a, pid2); ex.RunningPID != pid {
		t.Fatalf("second start %+v, want running pid %d", ex, pid)
	}

	// SIGTERM reaches the command, not the wrapper: 128+15.
	c = newCmd(2, "sleep", "30")
	if pid, err = a.StartCommand(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for read(filepath.Join(c.StateDir, "command.main")) == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if tr, err := a.TraceCommand(t.Context(), c.StateDir, pid); err != nil || !tr.Alive || tr.ExitCode != nil {
		t.Fatalf("trace of a running command %+v, %v", tr, err)
	}
	if err := a.SignalCommand(t.Context(), c.StateDir, "TERM"); err != nil {
		t.Fatal(err)
	}
	if ex := waitCommand(t, a, pid); ex.Code != 143 {
		t.Fatalf("after SIGTERM %+v", ex)
	}

	// Without stdin, a shell reading it ends at once; with stdin, it
	// waits (an empty FIFO that stays open) until it is stopped.
	c = newCmd(6, "sh", "-c", "read x; echo read $?")
	pid, _ = a.StartCommand(t.Context(), c)
	if ex := waitCommand(t, a, pid); ex.Code != 0 || !strings.HasPrefix(read(c.Stdout), "read 1\n") {
		t.Fatalf("stdin /dev/null: %+v, stdout %q", ex, read(c.Stdout))
	}
	c = newCmd(7, "sh", "-c", "read x; echo read $?")
	c.Stdin = true
	pid, _ = a.StartCommand(t.Context(), c)
	time.Sleep(300 * time.Millisecond)
	if ex, err := a.CommandStatus(t.Context(), pid); err != nil || ex.Exited {
		t.Fatalf("a command with stdin ended: %+v, %v; stdout %q", ex, err, read(c.Stdout))
	}
	for read(filepath.Join(c.StateDir, "command.main")) == "" {
		time.Sleep(10 * time.Millisecond)
	}
	a.SignalCommand(t.Context(), c.StateDir, "TERM")
	if ex := waitCommand(t, a, pid); ex.Code != 143 {
		t.Fatalf("a command with stdin, after SIGTERM: %+v", ex)
	}

	// Failures before the command runs are start errors; a command that
	// is not there is the shell's 127.
	c = newCmd(3, "true")
	c.Dir = filepath.Join(dir, "missing")
	pid, _ = a.StartCommand(t.Context(), c)
	if ex := waitCommand(t, a, pid); !strings.Contains(ex.StartError, "cannot change to the working directory "+c.Dir) {
		t.Fatalf("missing working dir %+v", ex)
	}
	c = newCmd(4, "true")
	c.Stderr = filepath.Join(dir, "no-port")
	pid, _ = a.StartCommand(t.Context(), c)
	if ex := waitCommand(t, a, pid); !strings.Contains(ex.StartError, "the guest has no") {
		t.Fatalf("missing port %+v", ex)
	}
	c = newCmd(5, "no-such-command")
	pid, _ = a.StartCommand(t.Context(), c)
	if ex := waitCommand(t, a, pid); ex.Code != 127 || ex.StartError != "" || !strings.Contains(read(c.Stderr), "not found") {
		t.Fatalf("missing command %+v, stderr %q", ex, read(c.Stderr))
	}
}

func TestCommandEnvAndValidate(t *testing.T) {
	if got := strings.Join(CommandEnv([][2]string{{"A", "1"}}), " "); got != "PATH="+DefaultPath+" HOME=/root A=1" {
		t.Fatalf("env %q", got)
	}
	if got := strings.Join(CommandEnv([][2]string{{"PATH", "/x"}, {"HOME", "/h"}}), " "); got != "PATH=/x HOME=/h" {
		t.Fatalf("env %q", got)
	}
	ok := Command{Argv: []string{"sh"}, Env: []string{"A=1", "B="}, Dir: "/srv"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]Command{
		"empty":        {},
		"NUL in argv":  {Argv: []string{"sh", "a\x00b"}},
		"NUL in env":   {Argv: []string{"sh"}, Env: []string{"A=\x00"}},
		"empty name":   {Argv: []string{"sh"}, Env: []string{"=v"}},
		"relative dir": {Argv: []string{"sh"}, Dir: "srv"},
		"too large":    {Argv: []string{"sh"}, Env: []string{"A=" + strings.Repeat("x", CommandArgMax)}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseTrace(t *testing.T) {
	tr := parseTrace("pid=42\nexit=3\nalive\n")
	if tr.PID != 42 || tr.ExitCode == nil || *tr.ExitCode != 3 || !tr.Alive {
		t.Fatalf("%+v", tr)
	}
	// What the guest writes is checked: nothing out of range is taken.
	tr = parseTrace("pid=-1\nexit=300\nexit=x\npid=99999999999\nalive now\n")
	if tr.PID != 0 || tr.ExitCode != nil || tr.Alive {
		t.Fatalf("%+v", tr)
	}
	if got := printable("a\x1b[2Jb\nc\xff", 100); got != "a?[2Jb\nc?" {
		t.Fatalf("printable %q", got)
	}
}

// TestCommandStatusBounded: an exit code no process can have, from a
// hostile agent, is 255; its error text is cut and made printable.
func TestCommandStatusBounded(t *testing.T) {
	for reply, want := range map[string]CommandExit{
		`{"return":{"exited":true,"exitcode":99999}}`:                         {Exited: true, Code: 255},
		`{"return":{"exited":true,"signal":2147483647}}`:                      {Exited: true, Code: 255},
		`{"return":{"exited":true,"exitcode":-3}}`:                            {Exited: true, Code: 255},
		`{"return":{"exited":true,"exitcode":125,"err-data":"G1syShtbSg=="}}`: {Exited: true, Code: 125, StartError: "?[2J?[J"},
		`{"return":{"exited":true,"exitcode":125,"err-data":"` + base64.StdEncoding.EncodeToString([]byte(alreadyStarted+"99999999999")) + `"}}`: {Exited: true, Code: 125, StartError: alreadyStarted + "99999999999"},
	} {
		a := NewAgent(agentFunc(func(_, _ string) (string, error) { return reply, nil }), "vm")
		got, err := a.CommandStatus(t.Context(), 7)
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v; want %+v", reply, got, err, want)
		}
	}
	long := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("e", 10000)))
	a := NewAgent(agentFunc(func(_, _ string) (string, error) {
		return `{"return":{"exited":true,"exitcode":125,"err-data":"` + long + `"}}`, nil
	}), "vm")
	if got, _ := a.CommandStatus(t.Context(), 7); len(got.StartError) != startErrorMax {
		t.Fatalf("start error of %d bytes kept", len(got.StartError))
	}
}
