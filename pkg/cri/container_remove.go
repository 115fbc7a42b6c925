package cri

import (
	"context"
	"errors"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/store"
)

// RemoveContainer destroys the VM if it runs, undefines the domain, deletes
// its root overlay and sockets and forgets it. Removing an unknown
// container succeeds.
func (s *Service) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	c, err := s.state.getContainer(req.GetContainerId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.removeContainer(ctx, c); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (s *Service) removeContainer(ctx context.Context, c *container) error {
	if err := s.stopContainer(ctx, c, 0); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.console != nil {
		c.console.Close()
		c.console = nil
	}
	if err := s.destroyContainerResources(ctx, c.rec); err != nil {
		return err
	}
	if err := s.state.meta.Delete(store.Containers, c.rec.ID); err != nil {
		return err
	}
	s.state.removeContainer(c.rec.ID)
	s.state.release(c.rec.Name, c.rec.ID)
	s.images.Release(c.rec.ImageRef)
	logging.From(ctx).Info("container removed", logging.KeyContainerID, c.rec.ID)
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, errdefs.ErrNotFound) }
