package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveImage removes an image with all its names. Removing an image that
// does not exist succeeds.
func (s *Service) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("RemoveImage: image name is empty: %w", errdefs.ErrInvalidArgument)
	}
	img, getErr := s.images.Get(ref)
	if err := s.images.Remove(ref); err != nil {
		return nil, err
	}
	// Its warm start templates go with it (their disks are overlays of it).
	if getErr == nil && s.pods != nil {
		if err := s.pods.RemoveTemplates(img.ID); err != nil {
			return nil, fmt.Errorf("image %s was removed, its warm start templates not: %w", img.ID, err)
		}
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}
