package cri

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
)

// StopContainer asks the guest to power off (ACPI) and destroys the domain
// if it is still running after the timeout (seconds; 0 destroys at once).
// Stopping an unknown or already stopped container succeeds.
func (s *Service) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	c, err := s.state.getContainer(req.GetContainerId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.StopContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.stopContainer(ctx, c, time.Duration(req.GetTimeout())*time.Second); err != nil {
		return nil, err
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

func (s *Service) stopContainer(ctx context.Context, c *container, timeout time.Duration) error {
	c.op.Lock()
	defer c.op.Unlock()
	s.refreshOpLocked(ctx, c)
	rec, _ := c.snapshot()
	if rec.State != containerRunning {
		return nil
	}
	log := logging.From(ctx).With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	rec.StopRequested = true
	if err := s.state.saveContainer(rec); err != nil {
		return err
	}
	c.setRec(rec)
	if timeout > 0 {
		log.Info("asking the guest to power off", "timeout", timeout)
		if err := s.libvirt.Shutdown(ctx, rec.Domain); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			log.Warn("ACPI shutdown failed; destroying", logging.KeyErr, err)
		} else if off, err := s.libvirt.WaitShutoff(ctx, rec.Domain, timeout); err == nil && off {
			s.refreshOpLocked(ctx, c)
			return nil
		}
	}
	if err := s.libvirt.Destroy(ctx, rec.Domain); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("destroy domain %s: %w", rec.Domain, err)
	}
	log.Info("VM destroyed")
	s.refreshOpLocked(ctx, c)
	return nil
}
