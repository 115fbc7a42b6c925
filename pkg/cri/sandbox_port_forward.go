package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PortForward returns the streaming URL for forwarding ports to the pod.
func (s *Service) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if err := s.pods.CheckPortForward(req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	for _, p := range req.GetPort() {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("port %d is not a TCP port (1-65535): %w", p, errdefs.ErrInvalidArgument)
		}
	}
	if s.streams == nil {
		return nil, fmt.Errorf("streaming server not running: %w", errdefs.ErrUnavailable)
	}
	return s.streams.GetPortForward(req)
}
