package cri

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
)

// StopPodSandbox marks the sandbox NOTREADY (so nothing new is created or
// started in it), stops the pod's VM at once (the kubelet has already given
// its containers their grace period) and tears the pod's network down.
// Stopping an unknown or already stopped sandbox succeeds; a retry finishes
// a half-done teardown.
func (s *Service) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	sb, err := s.state.getSandbox(req.GetPodSandboxId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	// The op lock waits for a CreateContainer in progress.
	sb.op.Lock()
	sb.mu.Lock()
	rec := sb.rec
	sb.mu.Unlock()
	if rec.State != sandboxNotReady {
		rec.State = sandboxNotReady
		if err := s.state.saveSandbox(rec); err != nil {
			sb.op.Unlock()
			return nil, err
		}
		sb.mu.Lock()
		sb.rec = rec
		sb.mu.Unlock()
		logging.From(ctx).Info("pod sandbox stopped", logging.KeySandboxID, rec.ID)
		s.sandboxEvent(ctx, sb, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
	}
	sb.op.Unlock()
	for _, c := range s.state.containersOf(sb.rec.ID) {
		if err := s.stopContainer(ctx, c, 0); err != nil {
			return nil, fmt.Errorf("stop container %s of pod sandbox %s: %w", c.rec.ID, sb.rec.ID, err)
		}
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if err := s.teardownNetwork(ctx, sb); err != nil {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}
