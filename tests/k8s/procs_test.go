package k8se2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is one process the test started.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// start runs a process with its output in <dir>/logs/<name>.log.
func (c *cluster) start(name string, env []string, argv ...string) *proc {
	c.t.Helper()
	os.MkdirAll(c.path("logs"), 0o755)
	p := &proc{name: name, logPath: c.path("logs", name+".log"), exited: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); logf.Close(); close(p.exited) }()
	c.procs[name] = p
	return p
}

// startMerged starts cmd with its standard error on its standard output
// and returns that output.
func (c *cluster) startMerged(cmd *exec.Cmd) io.Reader {
	c.t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// stop ends a process with SIGTERM (SIGKILL after the grace period).
func (c *cluster) stop(name string, grace time.Duration) {
	p := c.procs[name]
	if p == nil {
		return
	}
	delete(c.procs, name)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		c.t.Logf("%s did not stop within %v of SIGTERM; killing it", name, grace)
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// log returns a process's log; for the DaemonSet's containers (vmpod,
// libvirt), the kubelet's log files of every pod of the DaemonSet so far,
// oldest first.
func (c *cluster) log(name string) string {
	if name == "vmpod" || name == "libvirt" {
		files, _ := filepath.Glob(filepath.Join(c.podLogs, "vmpod-system_vmpod-*", name, "*.log"))
		sort.Slice(files, func(i, j int) bool { return modTime(files[i]).Before(modTime(files[j])) })
		var all strings.Builder
		for _, f := range files {
			b, _ := os.ReadFile(f)
			all.Write(b)
		}
		return all.String()
	}
	b, _ := os.ReadFile(c.path("logs", name+".log"))
	return string(b)
}

func modTime(p string) time.Time {
	st, err := os.Stat(p)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// waitFor polls ok until it returns nil, failing with its last error and
// the tail of the named process's log.
func (c *cluster) waitFor(what, logName string, timeout time.Duration, ok func() error) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-c.exited(logName):
			c.t.Fatalf("%s exited while waiting for %s:\n%s", logName, what, tail(c.log(logName), 40))
		default:
		}
		if err = ok(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.t.Fatalf("%s: not within %v: %v\n%s log:\n%s", what, timeout, err, logName, tail(c.log(logName), 40))
}

// exited returns a channel closed when the named process has exited, or
// nil (which never fires) when the test did not start it or stopped it.
func (c *cluster) exited(name string) <-chan struct{} {
	if p := c.procs[name]; p != nil {
		return p.exited
	}
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// run runs a command and returns its standard output; the error carries
// both outputs.
func run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func (c *cluster) mustRun(name string, args ...string) string {
	c.t.Helper()
	out, err := run(2*time.Minute, name, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}
