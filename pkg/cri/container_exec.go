package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Exec validates the request and returns the streaming server's URL for
// it; the command runs when the client connects there (streaming.go).
func (s *Service) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if len(req.GetCmd()) == 0 || req.GetCmd()[0] == "" {
		return nil, fmt.Errorf("Exec: the command is empty: %w", errdefs.ErrInvalidArgument)
	}
	if !req.GetTty() && !req.GetStdout() && !req.GetStderr() {
		return nil, fmt.Errorf("Exec: a non-TTY exec needs stdout or stderr: %w", errdefs.ErrInvalidArgument)
	}
	if err := s.pods.CheckExec(req.GetContainerId(), req.GetTty()); err != nil {
		return nil, err
	}
	if s.streams == nil {
		return nil, fmt.Errorf("streaming server not running: %w", errdefs.ErrUnavailable)
	}
	return s.streams.GetExec(req)
}
