package cri

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/vmpod/vmpod/pkg/logging"
)

// execStdinCap bounds the stdin of a non-TTY exec. qemu-ga takes a
// process's stdin once, at start (guest-exec's input-data, base64), so it
// is read whole first, and the guest-exec command must stay small: with
// libvirt 9.0 and qemu-ga 7.2 a command of 180 KiB of input went through
// in 0.2 s, one of 188 KiB never got an answer and left qemu-ga deaf to
// every later command.
const execStdinCap = 128 << 10

// heartbeatInterval is how often a streaming exec writes an empty frame to
// the client: the streaming server gives no other sign that a client went
// away, and a write to a closed connection fails.
const heartbeatInterval = 2 * time.Second

// errClientGone ends an exec whose client can no longer be written to.
var errClientGone = errors.New("the exec client went away")

// Exec validates the request and returns the streaming server's URL for
// it; the command runs when the client connects there (ExecStream).
func (s *Service) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if len(req.GetCmd()) == 0 || req.GetCmd()[0] == "" {
		return nil, fmt.Errorf("Exec: the command is empty: %w", errdefs.ErrInvalidArgument)
	}
	if !req.GetTty() && !req.GetStdout() && !req.GetStderr() {
		return nil, fmt.Errorf("Exec: a non-TTY exec needs stdout or stderr: %w", errdefs.ErrInvalidArgument)
	}
	c, rec, err := s.runningContainer(req.GetContainerId(), "exec")
	if err != nil {
		return nil, err
	}
	if req.GetTty() && c.ttyPorts.free() == 0 {
		return nil, errTTYPortsBusy(rec.ID)
	}
	if s.streams == nil {
		return nil, fmt.Errorf("streaming server not running: %w", errdefs.ErrUnavailable)
	}
	return s.streams.GetExec(req)
}

// ExecStream runs cmd in a container's guest for a streaming client. A
// TTY exec gets a pseudo-terminal in the guest and streams both ways over
// an exec channel (execTTY); otherwise the command runs through the guest
// agent with stdin read whole first (execPiped). A non-zero exit is a
// utilexec.CodeExitError, returned as is: the streaming server checks for
// it by type assertion and hands the code to the client.
func (s *Service) ExecStream(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	if len(cmd) == 0 || cmd[0] == "" {
		return fmt.Errorf("the command is empty: %w", errdefs.ErrInvalidArgument)
	}
	log := s.log.With(logging.KeyContainerID, containerID)
	ctx = logging.With(ctx, log)
	start := time.Now()
	c, rec, err := s.runningContainer(containerID, "exec")
	if err != nil {
		return err
	}
	if resize != nil && !tty {
		go func() {
			for range resize {
			}
		}()
	}
	// A stream the client did not ask for is nil.
	o, e := newClientWriter(out), newClientWriter(errw)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if o != nil {
		go o.heartbeat(ctx, cancel)
	} else if e != nil {
		go e.heartbeat(ctx, cancel)
	}
	log.Debug("exec started", "cmd", cmd, "tty", tty, "stdin", in != nil)
	var code int
	if tty {
		code, err = s.execTTY(ctx, c, rec, cmd, in, o, resize)
	} else {
		code, err = s.execPiped(ctx, rec, cmd, in, o, e)
	}
	if err != nil {
		log.Info("exec failed", "cmd", cmd, "tty", tty, logging.KeyErr, err)
		return err
	}
	log.Debug("exec ended", "cmd", cmd, "tty", tty, "exit_code", code, "seconds", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %q exited with %d in container %s", cmd, code, rec.ID), Code: code}
	}
	return nil
}

// execPiped runs cmd through guest-exec: stdin (when attached) is read to
// EOF and given as input-data, stdout and stderr are captured and written
// to the client when the process has exited (qemu-ga hands out captured
// output only then). It returns the exit code.
func (s *Service) execPiped(ctx context.Context, rec containerRecord, cmd []string, in io.Reader, out, errw *clientWriter) (int, error) {
	var input []byte
	if in != nil {
		var err error
		input, err = io.ReadAll(io.LimitReader(in, execStdinCap+1))
		if err != nil {
			return 0, fmt.Errorf("read the exec's stdin: %w", err)
		}
		if len(input) > execStdinCap {
			return 0, fmt.Errorf("the stdin of a non-TTY exec is read whole before the command starts (the guest agent takes it once, in one message) and is limited to %d bytes; use a TTY exec or copy the data into the VM another way: %w",
				execStdinCap, errdefs.ErrInvalidArgument)
		}
		if input == nil {
			input = []byte{} // attached but empty: the command still gets EOF at once
		}
	}
	pid, err := s.guestExec(ctx, rec.Domain, cmd, input)
	if err != nil {
		return 0, err
	}
	st, err := s.waitGuestProcess(ctx, rec.Domain, pid, 250*time.Millisecond)
	if ctx.Err() != nil {
		s.killGuestProcess(ctx, rec.Domain, pid, false)
		return 0, fmt.Errorf("exec %q in container %s ended before the command (the guest process was killed): %w", cmd, rec.ID, context.Cause(ctx))
	}
	if err != nil {
		return 0, err
	}
	for _, w := range []struct {
		to        *clientWriter
		data      string
		truncated bool
	}{{out, st.OutData, st.OutTruncated}, {errw, st.ErrData, st.ErrTruncated}} {
		b, err := decodeAgentOutput(w.data, w.truncated)
		if err != nil {
			return 0, err
		}
		if w.to != nil && len(b) > 0 {
			if _, err := w.to.Write(b); err != nil {
				return 0, fmt.Errorf("write exec output to the client: %w", err)
			}
		}
	}
	return st.code(), nil
}

// decodeAgentOutput decodes captured output (uncapped: qemu-ga keeps at
// most 16 MiB per stream, and marks what it cut).
func decodeAgentOutput(b64 string, truncated bool) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("guest agent output is not base64: %w", err)
	}
	if truncated {
		b = append(b, truncationNote...)
	}
	return b, nil
}

// clientWriter serialises writes to one of the client's streams (the
// output copier and the heartbeat share it).
type clientWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func newClientWriter(w io.WriteCloser) *clientWriter {
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
// and cancels ctx with errClientGone when that fails. Clients read an
// empty frame as no data.
func (c *clientWriter) heartbeat(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(heartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := c.Write(nil); err != nil {
				cancel(fmt.Errorf("%w: %v", errClientGone, err))
				return
			}
		}
	}
}
