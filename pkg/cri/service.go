// Package cri is vmpod's CRI gRPC server: the RuntimeService and
// ImageService of k8s.io/cri-api v1 on one unix socket. Each RPC lives in its
// own file (<object>_<verb>.go); this file holds the service and the
// interfaces of what it depends on, interceptor.go the boundary layer
// (logging, readiness gate, error -> gRPC code mapping).
package cri

import (
	"context"
	"log/slog"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// ImageStore is what the ImageService needs from the image store
// (*image.Store implements it). Errors wrap errdefs classes.
type ImageStore interface {
	// Pull fetches name and returns its record.
	Pull(ctx context.Context, name string) (image.Image, error)
	// Get returns the image a name or ID refers to, or an error wrapping
	// errdefs.ErrNotFound.
	Get(ref string) (image.Image, error)
	// List returns every image.
	List() []image.Image
	// Remove deletes an image with all its names; unknown refs succeed.
	Remove(ref string) error
	// Usage returns the space the store's own files take.
	Usage() (image.FsUsage, error)
	// Path returns the file of image id.
	Path(id string) string
}

// Service implements runtimeapi.RuntimeServiceServer and
// runtimeapi.ImageServiceServer.
type Service struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	cfg     config.Config
	images  ImageStore
	libvirt libvirttools.Connection
	log     *slog.Logger

	mu      sync.Mutex
	podCIDR string // from UpdateRuntimeConfig
}

// NewService returns the CRI service over its dependencies.
func NewService(cfg config.Config, images ImageStore, conn libvirttools.Connection, log *slog.Logger) *Service {
	return &Service{cfg: cfg, images: images, libvirt: conn, log: log}
}

var (
	_ runtimeapi.RuntimeServiceServer = (*Service)(nil)
	_ runtimeapi.ImageServiceServer   = (*Service)(nil)
)
