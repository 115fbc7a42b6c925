// Package router owns the CRI router that `vmpod router` serves on mixed
// nodes: the kubelet's single runtime endpoint, in front of the node's
// primary runtime (containerd, CRI-O) and vmpod.
//
// Routing rules (docs/router.md explains them for users):
//
//   - RunPodSandbox goes to vmpod when its runtime_handler is one of vmpod's
//     handlers, else to the primary.
//   - A call that names a sandbox or container ID goes to the backend that
//     owns the ID. The router keeps no state that matters: it asks vmpod
//     (PodSandboxStatus / ContainerStatus), and the primary at the same
//     time, whether it knows the ID; vmpod's NotFound means "the primary's"
//     (route.go). A bounded cache of ID -> backend saves the question next
//     time; IDs are random and never move between backends, so a cached
//     answer never goes stale, and losing the cache (a restart) costs one
//     question per ID.
//   - List calls go to both with the same filter and the answers are
//     concatenated, primary first. When vmpod cannot answer, the primary's
//     answer is returned with, for ListPodSandbox and ListContainers, the
//     VM pods as vmpod last listed them (held.go: so that a restart of
//     vmpod does not tell the kubelet its VM pods are gone), and a warning
//     is logged once.
//   - Image calls go to vmpod when the ImageSpec's runtime_handler is a
//     vmpod handler or a vmpod image translation rule matches the name, else
//     to the primary (with fallbacks for kubelets that do not send the
//     handler, see image.go).
//   - Version, RuntimeConfig and Status come from the primary; Status gets
//     vmpod's handlers appended to runtime_handlers.
//
// Streaming URLs (Exec, Attach, PortForward) are the owning backend's,
// returned untouched. Backend errors are returned as the backend gave them;
// an unreachable backend gives Unavailable naming its endpoint.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/imagetranslation"
)

// Defaults of Options (and of the `vmpod router` flags).
const (
	DefaultSocket          = "/run/vmpod/router.sock"
	DefaultPrimaryEndpoint = "unix:///run/containerd/containerd.sock"
	DefaultVMPodEndpoint   = "unix:///run/vmpod/vmpod.sock"
	DefaultHandler         = "vmpod"
	DefaultVMPodTimeout    = 10 * time.Second
	DefaultCacheSize       = 4096
)

// maxMsgSize matches the kubelet's CRI client limit (16 MiB).
const maxMsgSize = 16 << 20

// Options configure a Router.
type Options struct {
	// PrimaryEndpoint is the node's primary runtime, a unix:// URL or a path.
	PrimaryEndpoint string
	// VMPodEndpoint is vmpod's CRI socket, a unix:// URL or a path.
	VMPodEndpoint string
	// Handlers are the RuntimeClass handlers served by vmpod. Must not be
	// empty and must not contain "" (the empty handler is the primary's
	// default).
	Handlers []string
	// Translator, when not nil, holds vmpod's image translation rules: a
	// name one of them matches is a vmpod image.
	Translator *imagetranslation.Translator
	// VMPodTimeout bounds the part of a call that only asks vmpod on the
	// side (the vmpod half of a merged list, the question "is this ID
	// yours?"), so a hung or recovering vmpod cannot stall the primary's
	// pods. Default DefaultVMPodTimeout.
	VMPodTimeout time.Duration
	// CacheSize bounds the ID -> backend cache. Default DefaultCacheSize.
	CacheSize int
	// Log receives the router's warnings (slog.Default() when nil).
	Log *slog.Logger
}

// Router implements the CRI RuntimeService and ImageService by forwarding
// to the primary runtime and vmpod.
type Router struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	primary, vm *backend
	handlers    map[string]bool
	handlerList []string
	translator  *imagetranslation.Translator
	vmTimeout   time.Duration
	cache       *routeCache
	log         *slog.Logger
	// vmDown remembers that vmpod could not answer a merged call, so the
	// warning is logged once per outage rather than several times a second.
	vmDown atomic.Bool
	// held stands in for vmpod's part of the lists while vmpod is away.
	held heldLists
	// heldLogged remembers that the held lists were used in this outage.
	heldLogged atomic.Bool
}

// backend is one CRI runtime behind the router. Its ClientConn is created
// once and never replaced: gRPC reconnects it (with a short backoff) when
// the runtime restarts, so a dead connection is never kept.
type backend struct {
	name     string // "primary" or "vmpod", for messages
	endpoint string
	conn     *grpc.ClientConn
	rt       runtimeapi.RuntimeServiceClient
	img      runtimeapi.ImageServiceClient
}

// New returns a Router for opts. It does not connect yet: connections are
// made on first use and re-made whenever a backend comes back.
func New(opts Options) (*Router, error) {
	if len(opts.Handlers) == 0 {
		return nil, errors.New("router: at least one vmpod runtime handler is needed")
	}
	if slices.Contains(opts.Handlers, "") {
		return nil, errors.New(`router: the empty runtime handler is the primary runtime's default and cannot be a vmpod handler`)
	}
	if opts.VMPodTimeout <= 0 {
		opts.VMPodTimeout = DefaultVMPodTimeout
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	primary, err := dial("primary", opts.PrimaryEndpoint)
	if err != nil {
		return nil, err
	}
	vm, err := dial("vmpod", opts.VMPodEndpoint)
	if err != nil {
		primary.conn.Close()
		return nil, err
	}
	r := &Router{
		primary: primary, vm: vm,
		handlers:    map[string]bool{},
		handlerList: slices.Clone(opts.Handlers),
		translator:  opts.Translator,
		vmTimeout:   opts.VMPodTimeout,
		cache:       newRouteCache(opts.CacheSize),
		log:         opts.Log,
	}
	for _, h := range opts.Handlers {
		r.handlers[h] = true
	}
	return r, nil
}

// Close closes both backend connections.
func (r *Router) Close() error {
	return errors.Join(r.primary.conn.Close(), r.vm.conn.Close())
}

// dial creates the (lazy) connection to a backend.
func dial(name, endpoint string) (*backend, error) {
	target, err := unixTarget(endpoint)
	if err != nil {
		return nil, fmt.Errorf("router: %s endpoint: %w", name, err)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
		// A restarted runtime is reached again within about a second,
		// instead of after gRPC's default backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("router: %s endpoint %s: %w", name, endpoint, err)
	}
	return &backend{
		name: name, endpoint: target, conn: conn,
		rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn),
	}, nil
}

// unixTarget turns "unix:///path" or "/path" into a gRPC unix target.
func unixTarget(endpoint string) (string, error) {
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
		if !strings.HasPrefix(strings.TrimPrefix(endpoint, "unix://"), "/") {
			return "", fmt.Errorf("%q: want unix:///absolute/path", endpoint)
		}
		return endpoint, nil
	case strings.HasPrefix(endpoint, "/"):
		return "unix://" + endpoint, nil
	}
	return "", fmt.Errorf("%q: want unix:///absolute/path or an absolute path", endpoint)
}

// wrap returns err as the caller should see it: a backend's own errors
// unchanged; Unavailable from a backend the router cannot reach with a
// message naming that backend's socket.
func (b *backend) wrap(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable || b.conn.GetState() == connectivity.Ready {
		return err
	}
	return status.Errorf(codes.Unavailable, "%s runtime at %s is not reachable: %s", b.name, b.endpoint, st.Message())
}

// vmAnswered records whether vmpod answered a call made on the side, and
// logs the change: one warning when vmpod stops answering, one line when it
// is back.
func (r *Router) vmAnswered(method string, err error) {
	if err == nil {
		if r.vmDown.CompareAndSwap(true, false) {
			r.heldLogged.Store(false)
			r.log.Info("vmpod answers again; list calls include VM pods as vmpod lists them", "endpoint", r.vm.endpoint)
		}
		return
	}
	if status.Code(err) == codes.Unimplemented {
		return // vmpod has nothing to add to this call
	}
	if r.vmDown.CompareAndSwap(false, true) {
		r.log.Warn("vmpod does not answer; VM calls fail with Unavailable",
			"endpoint", r.vm.endpoint, "method", method, "err", err)
	}
}

// heldUsed logs, once per outage, what stands in for vmpod's part of the
// lists: the VM pods vmpod last listed, or nothing when the router has
// never had a complete list from vmpod.
func (r *Router) heldUsed(method string, held bool, n int) {
	if !r.heldLogged.CompareAndSwap(false, true) {
		return
	}
	if held {
		r.log.Warn("vmpod does not answer; list calls show the VM pods as vmpod last listed them until it does",
			"endpoint", r.vm.endpoint, "method", method, "held_items", n)
	} else {
		r.log.Warn("vmpod does not answer and the router has no list of its pods yet; list calls return the primary runtime's answer only",
			"endpoint", r.vm.endpoint, "method", method)
	}
}

// vmContext bounds a call made to vmpod on the side of another call.
func (r *Router) vmContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.vmTimeout)
}
