package cri

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/store"
)

// RemovePodSandbox removes the sandbox and every container in it (stopping
// a running VM first), tearing the network down if no stop did. Removing an unknown sandbox succeeds.
func (s *Service) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	sb, err := s.state.getSandbox(req.GetPodSandboxId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	for _, c := range s.state.containersOf(sb.rec.ID) {
		if err := s.removeContainer(ctx, c); err != nil {
			return nil, fmt.Errorf("remove container %s of pod sandbox %s: %w", c.rec.ID, sb.rec.ID, err)
		}
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if err := s.teardownNetwork(ctx, sb); err != nil {
		return nil, err
	}
	if err := s.state.meta.Delete(store.Sandboxes, sb.rec.ID); err != nil {
		return nil, err
	}
	s.state.removeSandbox(sb.rec.ID)
	s.state.release(sb.rec.Name, sb.rec.ID)
	logging.From(ctx).Info("pod sandbox removed", logging.KeySandboxID, sb.rec.ID)
	s.sandboxEvent(ctx, sb, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}
