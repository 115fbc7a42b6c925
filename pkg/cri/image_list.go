package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListImages lists the stored images; a filter names one image by name or ID.
func (s *Service) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	return &runtimeapi.ListImagesResponse{Images: s.listImages(req.GetFilter())}, nil
}

// StreamImages sends the same list as ListImages in one message.
func (s *Service) StreamImages(req *runtimeapi.StreamImagesRequest, stream runtimeapi.ImageService_StreamImagesServer) error {
	return stream.Send(&runtimeapi.StreamImagesResponse{Images: s.listImages(req.GetFilter())})
}

func (s *Service) listImages(filter *runtimeapi.ImageFilter) []*runtimeapi.Image {
	out := []*runtimeapi.Image{}
	if ref := filter.GetImage().GetImage(); ref != "" {
		if img, err := s.images.Get(ref); err == nil {
			out = append(out, toCRIImage(img))
		}
		return out
	}
	for _, img := range s.images.List() {
		out = append(out, toCRIImage(img))
	}
	return out
}
