// Package cri is vmpod's CRI gRPC server: the RuntimeService and
// ImageService of k8s.io/cri-api v1 on one unix socket. It is a thin
// adapter: each RPC (one per file, <object>_<verb>.go) turns its request
// into one call of the VM pod lifecycle (pkg/lifecycle) or the image store
// and its result into the response. interceptor.go is the boundary layer
// (logging, readiness gate, metrics, error -> gRPC code mapping);
// streaming.go serves attach, exec and port-forward streams. Nothing here
// talks to libvirt, CNI, the guest agent or cloud-init.
package cri

import (
	"context"
	"log/slog"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/metrics"
)

// ImageStore is what the ImageService needs from the image store
// (*image.Store implements it). Errors wrap errdefs classes.
type ImageStore interface {
	// Pull fetches name (with registry credentials auth, may be nil) and
	// returns its record.
	Pull(ctx context.Context, name string, auth *oci.Auth) (image.Image, error)
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

// StreamServer is the CRI streaming server (k8s.io/cri-streaming).
type StreamServer interface {
	GetAttach(*runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error)
	GetPortForward(*runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error)
	GetExec(*runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error)
}

// Service implements runtimeapi.RuntimeServiceServer and
// runtimeapi.ImageServiceServer.
type Service struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	cfg     config.Config
	pods    *lifecycle.Controller
	images  ImageStore
	log     *slog.Logger
	streams StreamServer
	metrics *metrics.Metrics // nil: no metrics

	mu      sync.Mutex
	podCIDR string // from UpdateRuntimeConfig
}

// Options are the Service's dependencies.
type Options struct {
	Config config.Config
	// Pods runs the VM pods.
	Pods   *lifecycle.Controller
	Images ImageStore
	Log    *slog.Logger
	// Metrics receives the service's metrics; nil records nothing.
	Metrics *metrics.Metrics
}

// NewService returns the CRI service over its dependencies.
func NewService(o Options) *Service {
	return &Service{cfg: o.Config, pods: o.Pods, images: o.Images, log: o.Log, metrics: o.Metrics}
}

// SetStreamServer installs the streaming server Attach and Exec URLs come
// from.
func (s *Service) SetStreamServer(ss StreamServer) { s.streams = ss }

// CloseEventStreams ends every GetContainerEvents stream (with Unavailable)
// and refuses new ones, so that a graceful stop of the gRPC server does not
// wait for these endless streams.
func (s *Service) CloseEventStreams() { s.pods.CloseEvents() }

var (
	_ runtimeapi.RuntimeServiceServer = (*Service)(nil)
	_ runtimeapi.ImageServiceServer   = (*Service)(nil)
)
