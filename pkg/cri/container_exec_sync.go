package cri

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// execOutputCap bounds stdout and stderr of ExecSync, each. qemu-ga itself
// keeps at most 16 MiB per stream; probes need far less.
const execOutputCap = 1 << 20

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
	_, rec, err := s.runningContainer(req.GetContainerId(), "exec")
	if err != nil {
		return nil, err
	}
	if t := req.GetTimeout(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Second)
		defer cancel()
	}
	pid, err := s.guestExec(ctx, rec.Domain, req.GetCmd(), nil)
	if err != nil {
		return nil, err
	}
	st, err := s.waitGuestProcess(ctx, rec.Domain, pid, 100*time.Millisecond)
	if ctx.Err() != nil {
		s.killGuestProcess(ctx, rec.Domain, pid, false)
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("command %q in container %s (the guest process was killed): %w", req.GetCmd(), rec.ID, ctx.Err())
		}
		return nil, fmt.Errorf("command %q timed out after %ds in container %s (the guest process was killed): %w",
			req.GetCmd(), req.GetTimeout(), rec.ID, context.DeadlineExceeded)
	}
	if err != nil {
		return nil, err
	}
	return st.response()
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
	return &runtimeapi.ExecSyncResponse{Stdout: out, Stderr: errOut, ExitCode: int32(st.code())}, nil
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
