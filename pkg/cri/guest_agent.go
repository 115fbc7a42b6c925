package cri

// Running processes in the guest through the QEMU guest agent: qemu-ga's
// guest-exec starts a process (argv, optional stdin given once, optional
// captured stdout/stderr) and returns its pid; guest-exec-status reports
// whether it exited, its exit code and, only once it exited, the captured
// output. qemu-ga has no kill command and forgets a process only when
// guest-exec-status has seen it exit. ExecSync and Exec use these helpers.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/logging"
)

// agentCallTimeout bounds one guest agent request.
const agentCallTimeout = 5 * time.Second

// agent sends one guest agent command and decodes its "return" into out.
func (s *Service) agent(ctx context.Context, domain string, cmd any, out any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	timeout := agentCallTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Second)
	}
	reply, err := s.libvirt.AgentCommand(ctx, domain, string(b), timeout)
	if err != nil {
		if errors.Is(err, errdefs.ErrFailedPrecondition) {
			return fmt.Errorf("the VM has no responding QEMU guest agent (the image needs qemu-guest-agent running on the org.qemu.guest_agent.0 channel; it starts late in a real guest's boot): %w", err)
		}
		return err
	}
	var env struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal([]byte(reply), &env); err != nil {
		return fmt.Errorf("guest agent reply %q: %w", reply, err)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(env.Return, out)
}

// guestExecArgs are guest-exec's arguments.
type guestExecArgs struct {
	Path string   `json:"path"`
	Arg  []string `json:"arg,omitempty"`
	// InputData is the process's whole stdin, base64; qemu-ga writes it
	// and closes the pipe. Without it the process inherits qemu-ga's
	// stdin (/dev/null in practice).
	InputData     string `json:"input-data,omitempty"`
	CaptureOutput bool   `json:"capture-output"`
}

// guestExec starts argv in the guest with stdout and stderr captured and
// input, when not nil, as its whole stdin. It returns the guest pid.
func (s *Service) guestExec(ctx context.Context, domain string, argv []string, input []byte) (int, error) {
	var ret struct {
		PID int `json:"pid"`
	}
	args := guestExecArgs{Path: argv[0], Arg: argv[1:], CaptureOutput: true}
	if input != nil {
		args.InputData = base64.StdEncoding.EncodeToString(input)
	}
	cmd := map[string]any{"execute": "guest-exec", "arguments": args}
	if err := s.agent(ctx, domain, cmd, &ret); err != nil {
		return 0, fmt.Errorf("exec %q in the guest: %w", argv, err)
	}
	return ret.PID, nil
}

// guestExecStatus is guest-exec-status's reply.
type guestExecStatus struct {
	Exited       bool   `json:"exited"`
	ExitCode     *int   `json:"exitcode"`
	Signal       *int   `json:"signal"`
	OutData      string `json:"out-data"`
	ErrData      string `json:"err-data"`
	OutTruncated bool   `json:"out-truncated"`
	ErrTruncated bool   `json:"err-truncated"`
}

// code is the exit code as a shell reports it: a process killed by
// signal N gives 128+N.
func (st guestExecStatus) code() int {
	switch {
	case st.ExitCode != nil:
		return *st.ExitCode
	case st.Signal != nil:
		return 128 + *st.Signal
	}
	return 0
}

func (s *Service) guestExecStatus(ctx context.Context, domain string, pid int) (guestExecStatus, error) {
	var st guestExecStatus
	cmd := map[string]any{"execute": "guest-exec-status", "arguments": map[string]int{"pid": pid}}
	if err := s.agent(ctx, domain, cmd, &st); err != nil {
		if errors.Is(err, errdefs.ErrResourceExhausted) {
			// qemu-ga answered, and forgot the process: its output is lost.
			return st, fmt.Errorf("status of guest process %d: its captured output is more than libvirt carries in one guest agent reply (4 MiB of base64: about 3 MiB of stdout and stderr together); use a TTY exec or write the output to a file: %w", pid, err)
		}
		return st, fmt.Errorf("status of guest process %d: %w", pid, err)
	}
	return st, nil
}

// waitGuestProcess polls guest-exec-status until the process exits,
// every 10 ms at first, backing off to maxPoll. It returns ctx's error
// when ctx ends first; the process is then still running (see
// killGuestProcess).
func (s *Service) waitGuestProcess(ctx context.Context, domain string, pid int, maxPoll time.Duration) (guestExecStatus, error) {
	poll := 10 * time.Millisecond
	for {
		st, err := s.guestExecStatus(ctx, domain, pid)
		if ctx.Err() != nil {
			return st, context.Cause(ctx)
		}
		if err != nil || st.Exited {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, context.Cause(ctx)
		case <-time.After(poll):
		}
		poll = min(2*poll, maxPoll)
	}
}

// runGuestHelper runs a short helper command in the guest and waits for
// it, so that qemu-ga forgets it. A failing exit is an error carrying the
// helper's stderr.
func (s *Service) runGuestHelper(ctx context.Context, domain string, argv []string) error {
	pid, err := s.guestExec(ctx, domain, argv, nil)
	if err != nil {
		return err
	}
	st, err := s.waitGuestProcess(ctx, domain, pid, 100*time.Millisecond)
	if err != nil {
		return fmt.Errorf("%q in the guest: %w", argv, err)
	}
	if c := st.code(); c != 0 {
		msg, _ := base64.StdEncoding.DecodeString(st.ErrData)
		return fmt.Errorf("%q in the guest exited with %d: %q", argv, c, msg)
	}
	return nil
}

// killGuestProcess kills a guest process with SIGKILL through a second
// guest-exec (qemu-ga has no kill command); group kills its whole process
// group, whose leader it must be. The caller's context may be spent, so it
// gets a fresh time limit. Failures are only logged: the caller is already
// on its way out.
func (s *Service) killGuestProcess(ctx context.Context, domain string, pid int, group bool) {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*agentCallTimeout)
	defer cancel()
	argv := []string{"kill", "-9", strconv.Itoa(pid)}
	if group {
		// The shell's kill builtin: procps' kill wants "--" before a
		// negative pid, busybox's rejects it; both shells take -9 -PID.
		argv = []string{"sh", "-c", `kill -9 -"$1"`, "vmpod-kill", strconv.Itoa(pid)}
	}
	if err := s.runGuestHelper(kctx, domain, argv); err != nil {
		logging.From(ctx).Warn("could not kill guest process", "pid", pid, "group", group, logging.KeyErr, err)
	}
}
