package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/logging"
)

// execSyncOutputCap bounds stdout and stderr of ExecSync, each. qemu-ga
// itself keeps at most 16 MiB per stream; probes need far less.
const execSyncOutputCap = 1 << 20

// heartbeatInterval is how often a streaming exec writes an empty frame to
// the client: the streaming server gives no other sign that a client went
// away, and a write to a closed connection fails.
const heartbeatInterval = 2 * time.Second

// ExecResult is a finished command's output and exit code.
type ExecResult struct {
	Stdout, Stderr []byte
	ExitCode       int
}

// ExecStreams are a streaming exec's client streams; a stream the client
// did not ask for is nil.
type ExecStreams struct {
	In       io.Reader
	Out, Err io.Writer
	TTY      bool
	// Resize carries the client's terminal sizes (TTY only; may be nil).
	Resize <-chan TerminalSize
}

// TerminalSize is a client terminal's size in characters.
type TerminalSize = guest.Size

// runningContainer returns a container and its record if its VM runs, else
// NotFound or a FailedPrecondition naming what (attach, exec) needs it.
func (c *Controller) runningContainer(id, what string) (*container, ContainerRecord, error) {
	ct, err := c.reg.container(id)
	if err != nil {
		return nil, ContainerRecord{}, err
	}
	rec := ct.Get()
	if rec.State != ContainerRunning {
		return nil, rec, fmt.Errorf("container %s is %s; %s needs a running VM: %w", rec.ID, rec.State, what, errdefs.ErrFailedPrecondition)
	}
	return ct, rec, nil
}

// CheckAttach says whether an Attach to the container can start now.
func (c *Controller) CheckAttach(id string) error {
	_, _, err := c.runningContainer(id, "attach")
	return err
}

// CheckExec says whether an exec in the container can start now: its VM
// runs and, for a TTY exec, it has a free exec channel.
func (c *Controller) CheckExec(id string, tty bool) error {
	ct, rec, err := c.runningContainer(id, "exec")
	if err != nil {
		return err
	}
	if tty && ct.ttyPorts.Free() == 0 {
		return errTTYPortsBusy(rec.ID)
	}
	return nil
}

func errTTYPortsBusy(id string) error {
	return fmt.Errorf("container %s already runs %d TTY execs, as many as its VM has exec channels; end one and retry: %w",
		id, guest.ExecPorts, errdefs.ErrUnavailable)
}

// ExecSync runs cmd in the guest through the QEMU guest agent and returns
// its stdout, stderr (each cut at 1 MiB) and exit code as the guest
// produced them. cmd is argv, never run through a shell. When timeout
// (0: none) passes, the guest process is killed and the error wraps
// context.DeadlineExceeded, as the kubelet expects of a timed-out exec
// probe. A VM without a guest agent gives FailedPrecondition.
func (c *Controller) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (ExecResult, error) {
	if len(cmd) == 0 || cmd[0] == "" {
		return ExecResult{}, fmt.Errorf("ExecSync: the command is empty: %w", errdefs.ErrInvalidArgument)
	}
	_, rec, err := c.runningContainer(id, "exec")
	if err != nil {
		return ExecResult{}, err
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	res, err := guest.NewAgent(c.libvirt, rec.Domain).RunCaptured(ctx, cmd, nil, guest.ProbePoll, execSyncOutputCap)
	if errors.Is(err, guest.ErrKilled) {
		if !errors.Is(err, context.DeadlineExceeded) {
			return ExecResult{}, fmt.Errorf("command %q in container %s (the guest process was killed): %w", cmd, rec.ID, ctx.Err())
		}
		return ExecResult{}, fmt.Errorf("command %q timed out after %s in container %s (the guest process was killed): %w",
			cmd, timeout, rec.ID, context.DeadlineExceeded)
	}
	if err != nil {
		return ExecResult{}, err
	}
	return ExecResult{Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: res.Code}, nil
}

// Exec runs cmd in a container's guest for a streaming client and returns
// its exit code. A TTY exec gets a pseudo-terminal in the guest and
// streams both ways over an exec channel; otherwise the command runs
// through the guest agent with stdin read whole first (at most
// guest.StdinCap) and output written when it ended. A client that goes
// away (a write to it fails; an empty frame is written every few seconds
// to notice) ends the exec and kills the guest process.
func (c *Controller) Exec(ctx context.Context, id string, cmd []string, s ExecStreams) (int, error) {
	if len(cmd) == 0 || cmd[0] == "" {
		return 0, fmt.Errorf("the command is empty: %w", errdefs.ErrInvalidArgument)
	}
	log := c.log.With(logging.KeyContainerID, id)
	ctx = logging.With(ctx, log)
	start := time.Now()
	ct, rec, err := c.runningContainer(id, "exec")
	if err != nil {
		return 0, err
	}
	if s.Resize != nil && !s.TTY {
		go func() {
			for range s.Resize {
			}
		}()
	}
	o, e := newClientWriter(s.Out), newClientWriter(s.Err)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if o != nil {
		go o.heartbeat(ctx, cancel)
	} else if e != nil {
		go e.heartbeat(ctx, cancel)
	}
	log.Debug("exec started", "cmd", cmd, "tty", s.TTY, "stdin", s.In != nil)
	a := guest.NewAgent(c.libvirt, rec.Domain)
	var code int
	if s.TTY {
		code, err = c.execTTY(ctx, ct, a, cmd, s.In, o, s.Resize)
	} else {
		code, err = execPiped(ctx, a, rec.ID, cmd, s.In, o, e)
	}
	if err != nil {
		log.Info("exec failed", "cmd", cmd, "tty", s.TTY, logging.KeyErr, err)
		return 0, err
	}
	log.Debug("exec ended", "cmd", cmd, "tty", s.TTY, "exit_code", code, "seconds", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
	return code, nil
}

// execTTY runs cmd on a free exec channel of the container's VM.
func (c *Controller) execTTY(ctx context.Context, ct *container, a *guest.Agent, cmd []string, in io.Reader, out *clientWriter, resize <-chan guest.Size) (int, error) {
	rec := ct.Get()
	port, ok := ct.ttyPorts.Acquire()
	if !ok {
		return 0, errTTYPortsBusy(rec.ID)
	}
	defer ct.ttyPorts.Release(port)
	var w io.Writer
	if out != nil {
		w = out
	}
	code, err := a.RunTTY(ctx, execChannel(rec.RunDir, port), cmd, in, w, resize)
	if err != nil {
		return 0, fmt.Errorf("TTY exec %q in container %s: %w", cmd, rec.ID, err)
	}
	return code, nil
}

// execPiped runs cmd through guest-exec: stdin (when attached) is read to
// EOF and given as input-data, stdout and stderr are captured and written
// to the client when the process has exited (qemu-ga hands out captured
// output only then).
func execPiped(ctx context.Context, a *guest.Agent, id string, cmd []string, in io.Reader, out, errw *clientWriter) (int, error) {
	var input []byte
	if in != nil {
		var err error
		if input, err = guest.ReadStdin(in); err != nil {
			return 0, err
		}
	}
	res, err := a.RunCaptured(ctx, cmd, input, guest.StreamPoll, 0)
	if errors.Is(err, guest.ErrKilled) {
		return 0, fmt.Errorf("exec %q in container %s ended before the command (the guest process was killed): %w", cmd, id, context.Cause(ctx))
	}
	if err != nil {
		return 0, err
	}
	for _, w := range []struct {
		to   *clientWriter
		data []byte
	}{{out, res.Stdout}, {errw, res.Stderr}} {
		if w.to != nil && len(w.data) > 0 {
			if _, err := w.to.Write(w.data); err != nil {
				return 0, fmt.Errorf("write exec output to the client: %w", err)
			}
		}
	}
	return res.Code, nil
}

// clientWriter serialises writes to one of the client's streams (the
// output copier and the heartbeat share it).
type clientWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func newClientWriter(w io.Writer) *clientWriter {
	if w == nil {
		return nil
	}
	return &clientWriter{w: w}
}

func (c *clientWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}

// heartbeat writes an empty frame every heartbeatInterval until ctx ends,
// and cancels ctx with guest.ErrClientGone when that fails. Clients read
// an empty frame as no data.
func (c *clientWriter) heartbeat(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(heartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := c.Write(nil); err != nil {
				cancel(fmt.Errorf("%w: %v", guest.ErrClientGone, err))
				return
			}
		}
	}
}
