package cri

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
)

// execOutputCap bounds stdout and stderr of ExecSync, each. qemu-ga itself
// keeps at most 16 MiB per stream; probes need far less.
const execOutputCap = 1 << 20

// agentCallTimeout bounds one guest agent request.
const agentCallTimeout = 5 * time.Second

// ExecSync runs a command in the guest through the QEMU guest agent
// (guest-exec with captured output, then guest-exec-status until it
// exits) and returns its stdout, stderr and exit code as the guest
// produced them. The command is passed as argv, never through a shell.
// When the timeout passes, the guest process is killed (a second
// guest-exec of kill -9, since qemu-ga has no kill command) and the call
// fails with DeadlineExceeded, as the kubelet expects of a timed-out exec
// probe. An image without qemu-guest-agent gets FailedPrecondition.
func (s *Service) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (resp *runtimeapi.ExecSyncResponse, retErr error) {
	defer s.observeExecSync(time.Now(), &resp, &retErr)
	if len(req.GetCmd()) == 0 || req.GetCmd()[0] == "" {
		return nil, fmt.Errorf("ExecSync: the command is empty: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.state.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	rec, _ := c.snapshot()
	if rec.State != containerRunning {
		return nil, fmt.Errorf("container %s is %s; exec needs a running VM: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	if t := req.GetTimeout(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Second)
		defer cancel()
	}
	pid, err := s.guestExec(ctx, rec.Domain, req.GetCmd())
	if err != nil {
		return nil, err
	}
	poll := 10 * time.Millisecond
	for {
		st, err := s.guestExecStatus(ctx, rec.Domain, pid)
		if err != nil {
			return nil, err
		}
		if st.Exited {
			return st.response()
		}
		select {
		case <-ctx.Done():
			// Kill the guest process; the request's context is spent.
			kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), agentCallTimeout)
			defer cancel()
			if _, err := s.guestExec(kctx, rec.Domain, []string{"kill", "-9", strconv.Itoa(pid)}); err != nil {
				logging.From(ctx).Warn("could not kill timed-out guest process", "pid", pid, logging.KeyErr, err)
			}
			return nil, fmt.Errorf("command %q timed out after %ds in container %s (the guest process was killed): %w",
				req.GetCmd(), req.GetTimeout(), rec.ID, context.DeadlineExceeded)
		case <-time.After(poll):
		}
		if poll < 100*time.Millisecond {
			poll *= 2
		}
	}
}

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

type guestExecArgs struct {
	Path          string   `json:"path"`
	Arg           []string `json:"arg,omitempty"`
	CaptureOutput bool     `json:"capture-output"`
}

func (s *Service) guestExec(ctx context.Context, domain string, argv []string) (int, error) {
	var ret struct {
		PID int `json:"pid"`
	}
	cmd := map[string]any{"execute": "guest-exec", "arguments": guestExecArgs{Path: argv[0], Arg: argv[1:], CaptureOutput: true}}
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

func (s *Service) guestExecStatus(ctx context.Context, domain string, pid int) (guestExecStatus, error) {
	var st guestExecStatus
	cmd := map[string]any{"execute": "guest-exec-status", "arguments": map[string]int{"pid": pid}}
	if err := s.agent(ctx, domain, cmd, &st); err != nil {
		return st, fmt.Errorf("status of guest process %d: %w", pid, err)
	}
	return st, nil
}

func (st guestExecStatus) response() (*runtimeapi.ExecSyncResponse, error) {
	out, err := decodeOutput(st.OutData, st.OutTruncated)
	if err != nil {
		return nil, err
	}
	errOut, err := decodeOutput(st.ErrData, st.ErrTruncated)
	if err != nil {
		return nil, err
	}
	code := 0
	switch {
	case st.ExitCode != nil:
		code = *st.ExitCode
	case st.Signal != nil:
		code = 128 + *st.Signal // as a shell reports a process killed by a signal
	}
	return &runtimeapi.ExecSyncResponse{Stdout: out, Stderr: errOut, ExitCode: int32(code)}, nil
}

// truncationNote ends output that was cut, so the reader knows.
const truncationNote = "\n[vmpod: output truncated]\n"

func decodeOutput(b64 string, truncated bool) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("guest agent output is not base64: %w", err)
	}
	if len(b) > execOutputCap {
		b, truncated = b[:execOutputCap], true
	}
	if truncated {
		b = append(b, truncationNote...)
	}
	return b, nil
}
