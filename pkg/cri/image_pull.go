package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PullImage fetches the image and returns its ID. Credentials in req.Auth
// are not used by HTTP(S) sources (the transport settings of the image
// translation rule apply instead).
func (s *Service) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	name := req.GetImage().GetImage()
	if name == "" {
		return nil, fmt.Errorf("PullImage: image name is empty: %w", errdefs.ErrInvalidArgument)
	}
	img, err := s.images.Pull(ctx, name)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PullImageResponse{ImageRef: img.ID}, nil
}
