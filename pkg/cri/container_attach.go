package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Attach returns the streaming URL for the container's serial console.
func (s *Service) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if err := s.pods.CheckAttach(req.GetContainerId()); err != nil {
		return nil, err
	}
	if s.streams == nil {
		return nil, fmt.Errorf("streaming server not running: %w", errdefs.ErrUnavailable)
	}
	return s.streams.GetAttach(req)
}
