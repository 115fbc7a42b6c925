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
	c.op.Lock()
	defer c.op.Unlock()
	if cur, err := s.state.getContainer(c.rec.ID); err != nil || cur != c {
		return nil // a concurrent RemoveContainer finished first
	}
	c.mu.Lock()
	rec, con := c.rec, c.console
	c.console = nil
	c.mu.Unlock()
	if con != nil {
		con.Close()
	}
	if err := s.destroyContainerResources(ctx, rec); err != nil {
		return err
	}
	if err := s.state.meta.Delete(store.Containers, rec.ID); err != nil {
		return err
	}
	s.state.removeContainer(rec.ID)
	s.state.release(rec.Name, rec.ID)
	s.images.Release(rec.ImageDisk)
	s.containerEvent(ctx, rec, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	logging.From(ctx).Info("container removed", logging.KeyContainerID, rec.ID)
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, errdefs.ErrNotFound) }
