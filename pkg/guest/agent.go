// Package guest talks to the inside of a VM: the QEMU guest agent client
// (exec, status, kill, info, and how often to poll) and the TTY exec
// channel protocol. It knows nothing of the CRI or of libvirt: the agent is
// reached through a Commander (libvirttools.Connection is one), a TTY
// channel through a unix socket path and its device path in the guest.
//
// qemu-ga's guest-exec starts a process (argv, optional stdin given once,
// optional captured stdout/stderr) and returns its pid; guest-exec-status
// reports whether it exited, its exit code and, only once it exited, the
// captured output. qemu-ga has no kill command and forgets a process only
// when guest-exec-status has seen it exit.
package guest

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

// CallTimeout bounds one guest agent request.
const CallTimeout = 5 * time.Second

// MaxReplyBytes bounds a guest agent reply vmpod decodes. The agent is the
// guest's, so its replies are hostile input; libvirt already refuses
// replies over 4 MiB of base64 output (ErrResourceExhausted), and this is
// the line vmpod holds whatever libvirt does.
const MaxReplyBytes = 8 << 20

// Polling policy: a process is polled every FirstPoll at first, the
// interval doubling up to the caller's maximum.
const (
	FirstPoll = 10 * time.Millisecond
	// ProbePoll is the longest interval for short commands (exec probes,
	// helpers): they usually end within a few polls.
	ProbePoll = 100 * time.Millisecond
	// StreamPoll is the longest interval for a streaming exec, which may
	// run for minutes.
	StreamPoll = 250 * time.Millisecond
)

// Commander sends one QEMU guest agent command (a JSON document such as
// {"execute":"guest-ping"}) to a VM and returns the agent's JSON reply.
// It fails with errdefs.ErrFailedPrecondition when the VM has no agent or
// the agent does not answer within timeout, and with
// errdefs.ErrResourceExhausted when the reply is larger than it carries.
type Commander interface {
	AgentCommand(ctx context.Context, domain, command string, timeout time.Duration) (string, error)
}

// Agent is the guest agent of one VM.
type Agent struct {
	cmd    Commander
	domain string
}

// NewAgent returns the agent of the VM whose libvirt domain is domain.
func NewAgent(c Commander, domain string) *Agent { return &Agent{cmd: c, domain: domain} }

// Call sends one command and decodes its "return" into out (nil: ignore).
func (a *Agent) Call(ctx context.Context, cmd any, out any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	timeout := CallTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Second)
	}
	reply, err := a.cmd.AgentCommand(ctx, a.domain, string(b), timeout)
	if err != nil {
		if errors.Is(err, errdefs.ErrFailedPrecondition) {
			return fmt.Errorf("the VM has no responding QEMU guest agent (the image needs qemu-guest-agent running on the org.qemu.guest_agent.0 channel; it starts late in a real guest's boot): %w", err)
		}
		return err
	}
	if len(reply) > MaxReplyBytes {
		return fmt.Errorf("the guest agent's reply is %d bytes, more than the %d vmpod reads: %w", len(reply), MaxReplyBytes, errdefs.ErrResourceExhausted)
	}
	var env struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal([]byte(reply), &env); err != nil {
		return fmt.Errorf("the guest agent's reply is not JSON (%.100q): %w", reply, err)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(env.Return, out)
}

// ErrNotStarted marks an error of a command that never started in the
// guest (its guest-exec failed): running it again cannot run it twice.
var ErrNotStarted = errors.New("the command did not start")

// Ping asks the agent to answer.
func (a *Agent) Ping(ctx context.Context) error {
	return a.Call(ctx, map[string]string{"execute": "guest-ping"}, nil)
}

// Info returns the agent's version.
func (a *Agent) Info(ctx context.Context) (string, error) {
	var info struct {
		Version string `json:"version"`
	}
	if err := a.Call(ctx, map[string]string{"execute": "guest-info"}, &info); err != nil {
		return "", err
	}
	return info.Version, nil
}

// execArgs are guest-exec's arguments.
type execArgs struct {
	Path string   `json:"path"`
	Arg  []string `json:"arg,omitempty"`
	// InputData is the process's whole stdin, base64; qemu-ga writes it
	// and closes the pipe. Without it the process inherits qemu-ga's
	// stdin (/dev/null in practice).
	InputData string `json:"input-data,omitempty"`
	// Env, when set, is the process's whole environment (NAME=VALUE);
	// without it the process inherits qemu-ga's.
	Env           []string `json:"env,omitempty"`
	CaptureOutput bool     `json:"capture-output"`
}

// Exec starts argv in the guest with stdout and stderr captured and
// input, when not nil, as its whole stdin. It returns the guest pid.
func (a *Agent) Exec(ctx context.Context, argv []string, input []byte) (int, error) {
	args := execArgs{Path: argv[0], Arg: argv[1:], CaptureOutput: true}
	if input != nil {
		args.InputData = base64.StdEncoding.EncodeToString(input)
	}
	return a.exec(ctx, args)
}

// exec sends one guest-exec and returns the pid.
func (a *Agent) exec(ctx context.Context, args execArgs) (int, error) {
	var ret struct {
		PID int `json:"pid"`
	}
	argv := append([]string{args.Path}, args.Arg...)
	cmd := map[string]any{"execute": "guest-exec", "arguments": args}
	if err := a.Call(ctx, cmd, &ret); err != nil {
		return 0, fmt.Errorf("exec %.200q in the guest: %w: %w", argv, ErrNotStarted, err)
	}
	if ret.PID <= 0 {
		return 0, fmt.Errorf("exec %.200q in the guest: the agent answered pid %d", argv, ret.PID)
	}
	return ret.PID, nil
}

// ExecStatus is guest-exec-status's reply.
type ExecStatus struct {
	Exited       bool   `json:"exited"`
	ExitCode     *int   `json:"exitcode"`
	Signal       *int   `json:"signal"`
	OutData      string `json:"out-data"`
	ErrData      string `json:"err-data"`
	OutTruncated bool   `json:"out-truncated"`
	ErrTruncated bool   `json:"err-truncated"`
}

// Code is the exit code as a shell reports it: a process killed by
// signal N gives 128+N.
func (st ExecStatus) Code() int {
	switch {
	case st.ExitCode != nil:
		return *st.ExitCode
	case st.Signal != nil:
		return 128 + *st.Signal
	}
	return 0
}

// Stderr is the captured stderr as text (empty when it cannot be decoded).
func (st ExecStatus) Stderr() string {
	b, _ := base64.StdEncoding.DecodeString(st.ErrData)
	return string(b)
}

// Status asks for process pid's status.
func (a *Agent) Status(ctx context.Context, pid int) (ExecStatus, error) {
	var st ExecStatus
	cmd := map[string]any{"execute": "guest-exec-status", "arguments": map[string]int{"pid": pid}}
	if err := a.Call(ctx, cmd, &st); err != nil {
		if errors.Is(err, errdefs.ErrResourceExhausted) {
			// qemu-ga answered, and forgot the process: its output is lost.
			return st, fmt.Errorf("status of guest process %d: its captured output is more than libvirt carries in one guest agent reply (4 MiB of base64: about 3 MiB of stdout and stderr together); use a TTY exec or write the output to a file: %w", pid, err)
		}
		return st, fmt.Errorf("status of guest process %d: %w", pid, err)
	}
	return st, nil
}

// Wait polls process pid until it exits, every FirstPoll at first, backing
// off to maxPoll. It returns ctx's cause when ctx ends first; the process
// is then still running (see Kill).
func (a *Agent) Wait(ctx context.Context, pid int, maxPoll time.Duration) (ExecStatus, error) {
	poll := FirstPoll
	for {
		st, err := a.Status(ctx, pid)
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

// Run runs a short helper command in the guest and waits for it, so that
// qemu-ga forgets it. A failing exit is an error carrying the helper's
// stderr.
func (a *Agent) Run(ctx context.Context, argv []string) error {
	pid, err := a.Exec(ctx, argv, nil)
	if err != nil {
		return err
	}
	st, err := a.Wait(ctx, pid, ProbePoll)
	if err != nil {
		return fmt.Errorf("%q in the guest: %w", argv, err)
	}
	if c := st.Code(); c != 0 {
		return fmt.Errorf("%q in the guest exited with %d: %q", argv, c, st.Stderr())
	}
	return nil
}

// Kill kills a guest process with SIGKILL through a second guest-exec
// (qemu-ga has no kill command); group kills its whole process group,
// whose leader it must be. The caller's context may be spent, so it gets a
// fresh time limit. Failures are only logged: the caller is already on
// its way out.
func (a *Agent) Kill(ctx context.Context, pid int, group bool) {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*CallTimeout)
	defer cancel()
	argv := []string{"kill", "-9", strconv.Itoa(pid)}
	if group {
		// The shell's kill builtin: procps' kill wants "--" before a
		// negative pid, busybox's rejects it; both shells take -9 -PID.
		argv = []string{"sh", "-c", `kill -9 -"$1"`, "vmpod-kill", strconv.Itoa(pid)}
	}
	if err := a.Run(kctx, argv); err != nil {
		logging.From(ctx).Warn("could not kill guest process", "pid", pid, "group", group, logging.KeyErr, err)
	}
}
