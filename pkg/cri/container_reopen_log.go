package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ReopenContainerLog reopens the container's log file after the kubelet
// rotated it.
func (s *Service) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	c, err := s.state.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rec.State != containerRunning || c.console == nil {
		return nil, fmt.Errorf("container %s is not running; its log is closed: %w", c.rec.ID, errdefs.ErrFailedPrecondition)
	}
	if err := c.console.ReopenLog(); err != nil {
		return nil, fmt.Errorf("reopen log of %s: %w", c.rec.ID, err)
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
