package cri

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ExecSync runs a command in the guest through the QEMU guest agent and
// returns its stdout, stderr and exit code; past the timeout the guest
// process is killed and the call fails with DeadlineExceeded, as the
// kubelet expects of a timed-out exec probe
// (lifecycle.Controller.ExecSync).
func (s *Service) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (resp *runtimeapi.ExecSyncResponse, retErr error) {
	defer s.observeExecSync(time.Now(), &resp, &retErr)
	res, err := s.pods.ExecSync(ctx, req.GetContainerId(), req.GetCmd(), time.Duration(req.GetTimeout())*time.Second)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: int32(res.ExitCode)}, nil
}
