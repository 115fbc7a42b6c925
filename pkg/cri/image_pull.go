package cri

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/image/oci"
)

// PullImage fetches the image and returns its ID. Names an image
// translation rule matches come over HTTP(S) (the rule's transport settings
// apply); other names are OCI references, pulled with the credentials in
// req.Auth (the kubelet's imagePullSecrets). Credentials are never logged
// or stored.
func (s *Service) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	name := req.GetImage().GetImage()
	if name == "" {
		return nil, fmt.Errorf("PullImage: image name is empty: %w", errdefs.ErrInvalidArgument)
	}
	start := time.Now()
	img, err := s.images.Pull(ctx, name, toOCIAuth(req.GetAuth()))
	s.metrics.ObserveImagePull(status.Code(toGRPC(err)).String(), time.Since(start))
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PullImageResponse{ImageRef: img.ID}, nil
}

func toOCIAuth(a *runtimeapi.AuthConfig) *oci.Auth {
	if a == nil {
		return nil
	}
	return &oci.Auth{
		Username: a.GetUsername(), Password: a.GetPassword(), Auth: a.GetAuth(),
		IdentityToken: a.GetIdentityToken(), RegistryToken: a.GetRegistryToken(), ServerAddress: a.GetServerAddress(),
	}
}
