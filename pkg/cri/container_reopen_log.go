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
	con := c.getConsole()
	if con == nil {
		return nil, fmt.Errorf("container %s is not running; its log is closed: %w", req.GetContainerId(), errdefs.ErrFailedPrecondition)
	}
	if err := con.ReopenLog(); err != nil {
		return nil, fmt.Errorf("reopen log of %s: %w", req.GetContainerId(), err)
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
