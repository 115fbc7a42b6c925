package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/logging"
)

// execSyncOutputCap bounds stdout and stderr of ExecSync, each. qemu-ga
// itself keeps at most 16 MiB per stream; probes need far less.
const execSyncOutputCap = 1 << 20

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
	a := guest.NewAgent(c.libvirt, rec.Domain)
	var res guest.Result
	err = c.withAgent(ctx, a, rec.ID, func() error {
		res, err = a.RunCaptured(ctx, cmd, nil, guest.ProbePoll, execSyncOutputCap)
		return err
	})
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

// ErrClientGone ends an exec whose client can no longer be written to.
var ErrClientGone = guest.ErrClientGone

// Exec runs cmd in a container's guest for a streaming client and returns
// its exit code. A TTY exec gets a pseudo-terminal in the guest and
// streams both ways over an exec channel; otherwise the command runs
// through the guest agent with stdin read whole first (at most 128 KiB)
// and output written when it ended. When ctx ends first (the client went
// away; its cause says why), the guest process is killed.
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
	log.Debug("exec started", "cmd", cmd, "tty", s.TTY, "stdin", s.In != nil)
	a := guest.NewAgent(c.libvirt, rec.Domain)
	var code int
	if s.TTY {
		size := guest.FirstSize(s.Resize)
		err = c.withAgent(ctx, a, rec.ID, func() error {
			code, err = c.execTTY(ctx, ct, a, cmd, s.In, s.Out, size, s.Resize)
			return err
		})
	} else {
		// The agent takes the stdin whole, at start: read it first.
		var input []byte
		if s.In != nil {
			input, err = guest.ReadStdin(s.In)
		}
		if err == nil {
			err = c.withAgent(ctx, a, rec.ID, func() error {
				code, err = a.RunPiped(ctx, cmd, input, s.Out, s.Err)
				return err
			})
		}
		if errors.Is(err, guest.ErrKilled) {
			err = fmt.Errorf("exec %q in container %s ended before the command (the guest process was killed): %w", cmd, rec.ID, context.Cause(ctx))
		}
	}
	if err != nil {
		log.Info("exec failed", "cmd", cmd, "tty", s.TTY, logging.KeyErr, err)
		return 0, err
	}
	log.Debug("exec ended", "cmd", cmd, "tty", s.TTY, "exit_code", code, "seconds", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
	return code, nil
}

// execTTY runs cmd on a free exec channel of the container's VM.
func (c *Controller) execTTY(ctx context.Context, ct *container, a *guest.Agent, cmd []string, in io.Reader, out io.Writer, size *guest.Size, resize <-chan guest.Size) (int, error) {
	rec := ct.Get()
	port, ok := ct.ttyPorts.Acquire()
	if !ok {
		return 0, errTTYPortsBusy(rec.ID)
	}
	defer ct.ttyPorts.Release(port)
	code, err := a.RunTTY(ctx, rec.Layout().ExecChannel(port), cmd, in, out, size, resize)
	if err != nil {
		return 0, fmt.Errorf("TTY exec %q in container %s: %w", cmd, rec.ID, err)
	}
	return code, nil
}

// agentPoll is how often an exec asks a booting guest's agent again.
const agentPoll = 500 * time.Millisecond

// withAgent runs fn, which starts a command through the guest agent; if
// the command did not start because the agent does not answer yet (a
// booting VM), it waits for the agent (waitAgent) and runs fn once more.
// A command that started is never started again.
func (c *Controller) withAgent(ctx context.Context, a *guest.Agent, id string, fn func() error) error {
	err := fn()
	if !errors.Is(err, guest.ErrNotStarted) || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		return err
	}
	if werr := c.waitAgent(ctx, a, id); werr != nil {
		return werr
	}
	return fn()
}

// waitAgent waits until the guest agent answers, for agent_wait_timeout
// at most, and no longer than ctx allows (an ExecSync's timeout). It fails
// with FailedPrecondition saying what to check.
func (c *Controller) waitAgent(ctx context.Context, a *guest.Agent, id string) error {
	wait := c.cfg.AgentWaitTimeout.Std()
	deadline := time.Now().Add(wait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline, wait = dl, time.Until(dl)
	}
	lastErr := fmt.Errorf("the guest agent does not answer: %w", errdefs.ErrFailedPrecondition)
	for {
		err := a.Ping(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return err
		}
		if ctx.Err() == nil {
			lastErr = err
		}
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return fmt.Errorf("the guest agent of container %s did not answer within %s: the VM may still be booting (retry), or its image has no qemu-guest-agent on the org.qemu.guest_agent.0 channel: %w",
				id, wait.Round(time.Millisecond), lastErr)
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(agentPoll, left)):
		}
	}
}
