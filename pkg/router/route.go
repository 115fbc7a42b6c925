package router

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// sandboxBackend returns the backend that owns the sandbox id. See
// ownerOf.
func (r *Router) sandboxBackend(ctx context.Context, id string) (*backend, error) {
	return r.ownerOf(ctx, id, func(ctx context.Context, b *backend) error {
		_, err := b.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
		return err
	})
}

// containerBackend returns the backend that owns the container id. See
// ownerOf.
func (r *Router) containerBackend(ctx context.Context, id string) (*backend, error) {
	return r.ownerOf(ctx, id, func(ctx context.Context, b *backend) error {
		_, err := b.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		return err
	})
}

// ownerOf finds the backend that owns an ID with the status call probe,
// asked of both runtimes at once:
//
//	cached?                    -> that backend
//	vmpod knows it             -> vmpod
//	vmpod says NotFound        -> primary (also for IDs nobody knows: the
//	                              primary then answers Stop/Remove with
//	                              success and Status with NotFound)
//	the primary knows it       -> primary, without waiting for a vmpod that
//	                              is down, hung or still recovering
//	neither can say            -> Unavailable naming vmpod's socket: the ID
//	                              is most likely a VM's
//
// An ID never moves between runtimes, so whichever knows it owns it. An
// empty ID goes to the primary, which rejects it as its own API says.
func (r *Router) ownerOf(ctx context.Context, id string, probe func(context.Context, *backend) error) (*backend, error) {
	if id == "" {
		return r.primary, nil
	}
	if b := r.cache.get(id); b != nil {
		return b, nil
	}
	pctx, cancel := r.vmContext(ctx) // bounds both probes; the primary answers at once
	defer cancel()
	type answer struct {
		b   *backend
		err error
	}
	answers := make(chan answer, 2)
	for _, b := range []*backend{r.vm, r.primary} {
		go func() { answers <- answer{b, probe(pctx, b)} }()
	}
	var vmErr error
	for range 2 {
		a := <-answers
		switch {
		case a.err == nil:
			r.cache.put(id, a.b)
			return a.b, nil
		case a.b == r.vm && status.Code(a.err) == codes.NotFound:
			r.cache.put(id, r.primary)
			return r.primary, nil
		case a.b == r.vm:
			vmErr = a.err
		}
	}
	if ctx.Err() != nil {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return nil, status.Errorf(codes.Unavailable, "ID %s is not the primary runtime's and vmpod at %s cannot say whether it is a VM's: %s",
		id, r.vm.endpoint, status.Convert(vmErr).Message())
}

// sandboxRequest is a request that names a sandbox.
type sandboxRequest interface{ GetPodSandboxId() string }

// containerRequest is a request that names a container.
type containerRequest interface{ GetContainerId() string }

// rpc is a client method of RuntimeServiceClient as a method expression,
// e.g. runtimeapi.RuntimeServiceClient.StopPodSandbox.
type rpc[Req, Resp any] func(runtimeapi.RuntimeServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error)

// bySandbox forwards req to the backend that owns its sandbox ID.
func bySandbox[Req sandboxRequest, Resp any](ctx context.Context, r *Router, req Req, call rpc[Req, Resp]) (Resp, error) {
	b, err := r.sandboxBackend(ctx, req.GetPodSandboxId())
	if err != nil {
		var zero Resp
		return zero, err
	}
	resp, err := call(b.rt, ctx, req)
	return resp, b.wrap(err)
}

// byContainer forwards req to the backend that owns its container ID.
func byContainer[Req containerRequest, Resp any](ctx context.Context, r *Router, req Req, call rpc[Req, Resp]) (Resp, error) {
	b, err := r.containerBackend(ctx, req.GetContainerId())
	if err != nil {
		var zero Resp
		return zero, err
	}
	resp, err := call(b.rt, ctx, req)
	return resp, b.wrap(err)
}

// toPrimary forwards req to the primary runtime.
func toPrimary[Req, Resp any](ctx context.Context, r *Router, req Req, call rpc[Req, Resp]) (Resp, error) {
	resp, err := call(r.primary.rt, ctx, req)
	return resp, r.primary.wrap(err)
}

// routeCache is a bounded map of ID -> owning backend. It is only an
// optimisation (see ownerOf): when full, a random entry makes room.
type routeCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*backend
}

func newRouteCache(max int) *routeCache {
	return &routeCache{max: max, m: make(map[string]*backend, max)}
}

func (c *routeCache) get(id string) *backend {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func (c *routeCache) put(id string, b *backend) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[id]; !ok && len(c.m) >= c.max {
		for k := range c.m { // Go's map order is random enough for eviction.
			delete(c.m, k)
			break
		}
	}
	c.m[id] = b
}

func (c *routeCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

func (c *routeCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
