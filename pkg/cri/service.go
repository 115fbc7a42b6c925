// Package cri is vmpod's CRI gRPC server: the RuntimeService and
// ImageService of k8s.io/cri-api v1 on one unix socket. Each RPC lives in its
// own file (<object>_<verb>.go); this file holds the service and the
// interfaces of what it depends on, interceptor.go the boundary layer
// (logging, readiness gate, error -> gRPC code mapping).
package cri

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/metrics"
	"github.com/vmpod/vmpod/pkg/store"
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
	// Release tells the store a container whose overlay was backed by the
	// disk file with digest d is gone.
	Release(d string)
}

// ConsoleHandle is a VM's serial console reader (pkg/console).
type ConsoleHandle interface {
	Subscribe() (io.ReadCloser, error)
	Write(p []byte) (int, error)
	ReopenLog() error
	Close() error
	Done() <-chan struct{}
}

// ConsoleFactory starts the console reader of a VM: it connects to the
// serial socket and writes the CRI log at logPath.
type ConsoleFactory func(socketPath, logPath string, log *slog.Logger) (ConsoleHandle, error)

// StreamServer is the CRI streaming server (k8s.io/cri-streaming).
type StreamServer interface {
	GetAttach(*runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error)
	GetPortForward(*runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error)
	GetExec(*runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error)
}

// Network is the pods' network (*cni.Manager implements it; see pkg/cni
// for the life of a pod's network). Errors wrap errdefs classes where the
// caller can act on them.
type Network interface {
	// Ready says whether pods can get a network; the error says why not.
	Ready() error
	// Plan picks the network for a new sandbox without creating anything.
	Plan(sandboxID string, pod cni.PodInfo) (*cni.Attachment, error)
	// Setup creates the netns, runs CNI ADD and fills in the attachment;
	// persist is called with the ADD result in att, before the interfaces
	// are rewired.
	Setup(ctx context.Context, att *cni.Attachment, persist func() error) error
	// Teardown removes everything of att; idempotent.
	Teardown(ctx context.Context, att *cni.Attachment) error
	// PrepareVM creates a boot's taps in the host netns.
	PrepareVM(att *cni.Attachment) error
	// PlugVM moves a started VM's taps into the pod and starts DHCP.
	PlugVM(att *cni.Attachment, guest cni.Guest) error
	// UnplugVM removes a failed boot's taps and DHCP servers.
	UnplugVM(att *cni.Attachment) error
	// ServeDHCP restarts the DHCP servers of a running VM (after a restart).
	ServeDHCP(att *cni.Attachment, guest cni.Guest) error
	// Usage reads the pod interfaces' traffic counters.
	Usage(att *cni.Attachment) ([]cni.Usage, error)
}

// Service implements runtimeapi.RuntimeServiceServer and
// runtimeapi.ImageServiceServer.
type Service struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	cfg        config.Config
	images     ImageStore
	libvirt    libvirttools.Connection
	log        *slog.Logger
	state      *state
	newConsole ConsoleFactory
	streams    StreamServer
	overlays   OverlayMaker
	net        Network
	now        func() time.Time
	hostCheck  string // why VM creation may be slow, from the start-up host check
	// pending holds creates whose caller gave up (deadline) while the work
	// went on, by reserved name, so the retry gets the result.
	pending *pendingCreates
	// events fans container events out to GetContainerEvents streams;
	// eventMu makes building and publishing an event one step, so streams
	// see events in created_at order (events.go).
	events  *eventBroadcaster
	eventMu sync.Mutex
	metrics *metrics.Metrics // nil: no metrics

	mu      sync.Mutex
	podCIDR string // from UpdateRuntimeConfig
}

// Options are the Service's dependencies.
type Options struct {
	Config     config.Config
	Images     ImageStore
	Libvirt    libvirttools.Connection
	Meta       *store.Store
	Log        *slog.Logger
	NewConsole ConsoleFactory
	Overlays   OverlayMaker
	Network    Network
	Now        func() time.Time
	// HostCheck is a problem found on the host at start-up that makes VMs
	// slow or failing; Status reports it.
	HostCheck string
	// Metrics receives the service's metrics and reads its state at scrape
	// time; nil records nothing.
	Metrics *metrics.Metrics
}

// NewService returns the CRI service over its dependencies.
func NewService(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Overlays == nil {
		o.Overlays = QemuImg{}
	}
	s := &Service{
		cfg: o.Config, images: o.Images, libvirt: o.Libvirt, log: o.Log,
		state: newState(o.Meta), newConsole: o.NewConsole, overlays: o.Overlays, net: o.Network, now: o.Now,
		pending: newPendingCreates(), hostCheck: o.HostCheck,
		events: newEventBroadcaster(eventBufferSize), metrics: o.Metrics,
	}
	o.Metrics.SetSnapshot(s.metricsSnapshot)
	return s
}

// SetStreamServer installs the streaming server Attach and Exec URLs come
// from.
func (s *Service) SetStreamServer(ss StreamServer) { s.streams = ss }

// ImageDiskInUse reports whether a container's root overlay is backed by
// the image disk file with digest d.
func (s *Service) ImageDiskInUse(d string) bool { return s.state.diskInUse(d) }

// runDir is where per-VM sockets live: beside the CRI socket, because
// unix socket paths are limited to 107 bytes and the state dir may be deep.
func (s *Service) runDir() string { return filepath.Join(filepath.Dir(s.cfg.Socket), "vms") }

// containersDir holds each container's directory (root overlay, serial log).
func (s *Service) containersDir() string { return filepath.Join(s.cfg.StateDir, "containers") }

var (
	_ runtimeapi.RuntimeServiceServer = (*Service)(nil)
	_ runtimeapi.ImageServiceServer   = (*Service)(nil)
)
