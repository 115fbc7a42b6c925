// Package testdaemon runs `vmpod serve` as a child process for the e2e
// tests, the Kubernetes test and the benchmarks. It owns the process: it
// starts the daemon on the caller's socket and state directory with the
// caller's flags, environment and config file, appends its output to a log
// file, and waits until the CRI socket answers Version; it stops the daemon
// gracefully (SIGTERM, then a bounded wait), kills it with SIGKILL as a
// crash would, and starts it again on the same socket, state directory and
// log to test recovery. The caller makes and removes the directories and
// talks to the daemon with its own client (crictl or gRPC).
package testdaemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Options says how to run the daemon.
type Options struct {
	// Bin is the vmpod binary (Build makes one). Required.
	Bin string
	// Dir holds the socket (v.sock), the state directory (state) and the
	// log (vmpod.log) unless they are given below; required unless all
	// three are. Unix socket paths are limited to 107 bytes and vmpod puts
	// per-VM sockets beside its own: keep the socket's directory short.
	Dir string
	// Socket is the CRI socket (--socket). Default: Dir/v.sock.
	Socket string
	// StateDir is vmpod's state directory (--state-dir). Default: Dir/state.
	StateDir string
	// LogPath is the file the daemon's stdout and stderr are appended to,
	// so that a restarted daemon's log follows the earlier one's.
	// Default: Dir/vmpod.log.
	LogPath string
	// Config is the configuration file (--config). Default: /dev/null,
	// vmpod's built-in defaults rather than the host's configuration.
	Config string
	// LogLevel is --log-level: debug, info, warn or error; "" leaves
	// vmpod's default.
	LogLevel string
	// Args are more `vmpod serve` flags, e.g. "--libvirt-uri", uri.
	Args []string
	// Env is added to this process's environment, e.g.
	// "VMPOD_ACCELERATOR=tcg"; vmpod reads VMPOD_* variables as config.
	Env []string
	// Echo, if set, also gets the daemon's output (e.g. os.Stderr).
	Echo io.Writer
	// StartTimeout bounds Start's wait for the socket to answer.
	// Default: 30s.
	StartTimeout time.Duration
	// StopTimeout bounds Stop's wait after SIGTERM before it kills the
	// daemon. Default: 60s.
	StopTimeout time.Duration
}

// Daemon is one `vmpod serve` that can be started, stopped, killed and
// started again. Its methods may be called from several goroutines.
type Daemon struct {
	o Options

	mu  sync.Mutex
	cur *run // the last process started; nil before the first Start
}

// run is one process of the daemon.
type run struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited
	err    error         // its exit status; read only after exited is closed
}

// New returns a daemon for o without starting it; Start checks o.
func New(o Options) *Daemon {
	if o.Dir != "" {
		o.Socket = cmp.Or(o.Socket, filepath.Join(o.Dir, "v.sock"))
		o.StateDir = cmp.Or(o.StateDir, filepath.Join(o.Dir, "state"))
		o.LogPath = cmp.Or(o.LogPath, filepath.Join(o.Dir, "vmpod.log"))
	}
	// gRPC needs an absolute path in a unix:// target.
	if abs, err := filepath.Abs(o.Socket); err == nil && o.Socket != "" {
		o.Socket = abs
	}
	o.Config = cmp.Or(o.Config, os.DevNull)
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 60 * time.Second
	}
	return &Daemon{o: o}
}

// AddEnv adds environment variables for the next Start (a restart with
// another setting; the running daemon keeps its own).
func (d *Daemon) AddEnv(env ...string) { d.o.Env = append(d.o.Env, env...) }

// Socket is the daemon's CRI socket, an absolute path.
func (d *Daemon) Socket() string { return d.o.Socket }

// StateDir is the daemon's state directory.
func (d *Daemon) StateDir() string { return d.o.StateDir }

// LogPath is the file the daemon's output goes to.
func (d *Daemon) LogPath() string { return d.o.LogPath }

// Start starts the daemon and waits until its socket answers CRI Version,
// served by the process started (Bin must be vmpod itself, not a wrapper
// that forks it). After Stop or Kill it starts it again with the same
// options, socket, state directory and log. If the daemon exits or does
// not answer within StartTimeout, Start kills it and returns an error that
// ends with the log's last lines.
func (d *Daemon) Start() error {
	o := d.o
	switch {
	case o.Bin == "":
		return errors.New("testdaemon: no vmpod binary (Options.Bin)")
	case o.Socket == "" || o.StateDir == "" || o.LogPath == "":
		return errors.New("testdaemon: Options.Dir, or Socket, StateDir and LogPath, must be set")
	case d.Running():
		return fmt.Errorf("vmpod on %s runs already (pid %d)", o.Socket, d.Pid())
	}
	if err := os.MkdirAll(filepath.Dir(o.LogPath), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(o.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	args := []string{"serve", "--config", o.Config, "--socket", o.Socket, "--state-dir", o.StateDir}
	if o.LogLevel != "" {
		args = append(args, "--log-level", o.LogLevel)
	}
	cmd := exec.Command(o.Bin, append(args, o.Args...)...)
	cmd.Env = append(os.Environ(), o.Env...)
	var out io.Writer = logf
	if o.Echo != nil {
		out = io.MultiWriter(logf, o.Echo)
		// The output then goes through a pipe, which a child of vmpod
		// (a CNI plugin) may hold open after vmpod has exited.
		cmd.WaitDelay = time.Second
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", o.Bin, err)
	}
	r := &run{cmd: cmd, exited: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		logf.Close()
		close(r.exited)
	}()
	d.mu.Lock()
	d.cur = r
	d.mu.Unlock()
	if err := d.waitReady(r); err != nil {
		d.Kill()
		return err
	}
	return nil
}

// waitReady polls Ping until it succeeds, the process exits or
// StartTimeout passes.
func (d *Daemon) waitReady(r *run) error {
	deadline := time.Now().Add(d.o.StartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := d.Ping(ctx)
		cancel()
		if err == nil {
			// Another process may answer on the socket: a daemon still
			// running there, which ours is about to refuse to replace.
			var pid int
			if pid, err = servedBy(d.o.Socket); err == nil && pid != r.cmd.Process.Pid {
				err = fmt.Errorf("the socket is served by pid %d, not by this vmpod (pid %d)", pid, r.cmd.Process.Pid)
			}
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vmpod did not answer CRI Version on %s within %v: %v\n%s", d.o.Socket, d.o.StartTimeout, err, d.LogTail(40))
		}
		select {
		case <-r.exited:
			return fmt.Errorf("vmpod exited at start: %v\n%s", r.err, d.LogTail(40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Ping calls CRI Version on the daemon's socket (what `vmpod ping` does).
func (d *Daemon) Ping(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+d.o.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
	return err
}

// servedBy returns the ID of the process that listens on a unix socket.
func servedBy(socket string) (int, error) {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("SO_PEERCRED on %s: %w", socket, credErr)
	}
	return int(cred.Pid), nil
}

// Stop sends SIGTERM and waits up to StopTimeout for the daemon to exit,
// then kills it. It returns an error when the daemon exited with a failure
// status or had to be killed, and nil when it was not running.
func (d *Daemon) Stop() error {
	r := d.running()
	if r == nil {
		return nil
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
		if r.err != nil {
			return fmt.Errorf("vmpod exited with %v after SIGTERM", r.err)
		}
		return nil
	case <-time.After(d.o.StopTimeout):
		r.cmd.Process.Kill()
		<-r.exited
		return fmt.Errorf("vmpod did not stop within %v of SIGTERM; killed it", d.o.StopTimeout)
	}
}

// Kill kills the daemon with SIGKILL, as a crash would, and waits until it
// has exited. It leaves the socket file, the state and the VMs for the next
// Start to recover.
func (d *Daemon) Kill() {
	if r := d.running(); r != nil {
		r.cmd.Process.Kill()
		<-r.exited
	}
}

// Signal sends sig to the daemon without waiting; Exited tells when it is
// gone.
func (d *Daemon) Signal(sig os.Signal) error {
	r := d.running()
	if r == nil {
		return errors.New("vmpod does not run")
	}
	return r.cmd.Process.Signal(sig)
}

// Exited is closed once the daemon last started has exited (at once when
// it was never started).
func (d *Daemon) Exited() <-chan struct{} {
	if r := d.current(); r != nil {
		return r.exited
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

// ExitErr is the exit status of the daemon last started, once Exited is
// closed: nil for a clean exit; nil as well while it runs.
func (d *Daemon) ExitErr() error {
	if r := d.current(); r != nil && r.done() {
		return r.err
	}
	return nil
}

// Running reports whether the daemon's process runs.
func (d *Daemon) Running() bool { return d.running() != nil }

// Pid is the process ID of the daemon last started, 0 before Start.
func (d *Daemon) Pid() int {
	if r := d.current(); r != nil {
		return r.cmd.Process.Pid
	}
	return 0
}

// current returns the process last started, nil before Start.
func (d *Daemon) current() *run {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

// running returns the process last started if it has not exited.
func (d *Daemon) running() *run {
	if r := d.current(); r != nil && !r.done() {
		return r
	}
	return nil
}

// done reports whether the process has exited.
func (r *run) done() bool {
	select {
	case <-r.exited:
		return true
	default:
		return false
	}
}

// Log returns the daemon's log, of every start so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.o.LogPath)
	return string(b)
}

// LogTail returns the last n lines of the log.
func (d *Daemon) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(d.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
