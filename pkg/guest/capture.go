package guest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"
)

// StdinCap bounds the stdin of a captured command. qemu-ga takes a
// process's stdin once, at start (guest-exec's input-data, base64), so it
// is read whole first, and the guest-exec command must stay small: with
// libvirt 9.0 and qemu-ga 7.2 a command of 180 KiB of input went through
// in 0.2 s, one of 188 KiB never got an answer and left qemu-ga deaf to
// every later command.
const StdinCap = 128 << 10

// TruncationNote ends output that was cut, so the reader knows.
const TruncationNote = "\n[vmpod: output truncated]\n"

// ErrKilled says the caller's context ended before the command did, and
// the guest process was killed. Errors wrapping it also wrap the
// context's cause.
var ErrKilled = errors.New("the guest process was killed")

// Result is a finished command's captured output and exit code.
type Result struct {
	Stdout, Stderr []byte
	Code           int
}

// RunCaptured runs argv with input (nil: none) as its whole stdin, waits
// for it polling up to maxPoll, and returns its output, each stream cut at
// outCap bytes when outCap is above 0 (qemu-ga itself keeps at most 16 MiB
// per stream and marks what it cut). When ctx ends first, the process is
// killed and the error wraps ErrKilled and ctx's cause.
func (a *Agent) RunCaptured(ctx context.Context, argv []string, input []byte, maxPoll time.Duration, outCap int) (Result, error) {
	pid, err := a.Exec(ctx, argv, input)
	if err != nil {
		return Result{}, err
	}
	st, err := a.Wait(ctx, pid, maxPoll)
	if ctx.Err() != nil {
		a.Kill(ctx, pid, false)
		return Result{}, fmt.Errorf("%w: %w", ErrKilled, context.Cause(ctx))
	}
	if err != nil {
		return Result{}, err
	}
	out, err := decodeOutput(st.OutData, st.OutTruncated, outCap)
	if err != nil {
		return Result{}, err
	}
	errOut, err := decodeOutput(st.ErrData, st.ErrTruncated, outCap)
	if err != nil {
		return Result{}, err
	}
	return Result{Stdout: out, Stderr: errOut, Code: st.Code()}, nil
}

func decodeOutput(b64 string, truncated bool, limit int) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("guest agent output is not base64: %w", err)
	}
	if limit > 0 && len(b) > limit {
		b, truncated = b[:limit], true
	}
	if truncated {
		b = append(b, TruncationNote...)
	}
	return b, nil
}

// ReadStdin reads a captured command's stdin whole, refusing more than
// StdinCap bytes. An attached but empty stdin is an empty, non-nil slice,
// so the command still gets EOF at once.
func ReadStdin(in io.Reader) ([]byte, error) {
	input, err := io.ReadAll(io.LimitReader(in, StdinCap+1))
	if err != nil {
		return nil, fmt.Errorf("read the exec's stdin: %w", err)
	}
	if len(input) > StdinCap {
		return nil, fmt.Errorf("the stdin of a non-TTY exec is read whole before the command starts (the guest agent takes it once, in one message) and is limited to %d bytes; use a TTY exec or copy the data into the VM another way: %w",
			StdinCap, errdefs.ErrInvalidArgument)
	}
	if input == nil {
		input = []byte{}
	}
	return input, nil
}

// RunPiped runs argv for a streaming client with input (nil: no stdin;
// see ReadStdin) as its whole stdin; its stdout and stderr go to out and
// errw (nil drops) once it ended (qemu-ga hands out captured output only
// then). It returns the exit code; when ctx ends first the process is
// killed and the error wraps ErrKilled.
func (a *Agent) RunPiped(ctx context.Context, argv []string, input []byte, out, errw io.Writer) (int, error) {
	res, err := a.RunCaptured(ctx, argv, input, StreamPoll, 0)
	if err != nil {
		return 0, err
	}
	for _, w := range []struct {
		to   io.Writer
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
