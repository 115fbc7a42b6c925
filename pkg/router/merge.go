package router

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// streamChunk is how many items one message of a Stream* answer carries.
const streamChunk = 500

// eventRetry is how long the router waits before reopening vmpod's event
// stream after it broke.
const eventRetry = time.Second

func runtimeClient(b *backend) runtimeapi.RuntimeServiceClient { return b.rt }
func imageClient(b *backend) runtimeapi.ImageServiceClient     { return b.img }

// merge sends req to both backends at once and joins vmpod's answer into
// the primary's. The primary's error is the call's error. When vmpod fails
// (down, hung past VMPodTimeout, Unimplemented), the primary's answer is
// returned alone: the node's other pods must keep working without vmpod.
func merge[C, Req, Resp any](ctx context.Context, r *Router, method string, client func(*backend) C, req Req,
	call func(C, context.Context, Req, ...grpc.CallOption) (Resp, error), join func(primary, vm Resp)) (Resp, error) {
	return mergeOr(ctx, r, method, client, req, call, join, nil)
}

// mergeOr is merge with a stand-in for vmpod's part: when vmpod fails
// (other than Unimplemented), held, when not nil, adds what the router
// holds of vmpod's last answer to the primary's (heldLists).
func mergeOr[C, Req, Resp any](ctx context.Context, r *Router, method string, client func(*backend) C, req Req,
	call func(C, context.Context, Req, ...grpc.CallOption) (Resp, error), join func(primary, vm Resp), held func(primary Resp)) (Resp, error) {
	type result struct {
		resp Resp
		err  error
	}
	vmCh := make(chan result, 1)
	go func() {
		vctx, cancel := r.vmContext(ctx)
		defer cancel()
		resp, err := call(client(r.vm), vctx, req)
		vmCh <- result{resp, err}
	}()
	resp, err := call(client(r.primary), ctx, req)
	vm := <-vmCh
	if err != nil {
		return resp, r.primary.wrap(err)
	}
	r.vmAnswered(method, vm.err)
	if vm.err == nil {
		join(resp, vm.resp)
	} else if held != nil && status.Code(vm.err) != codes.Unimplemented {
		held(resp)
	}
	return resp, nil
}

// sendChunks sends items in messages of at most streamChunk items. No items
// means no message: a Stream* answer has at least one item per message.
func sendChunks[T, M any](items []T, wrap func([]T) *M, send func(*M) error) error {
	for len(items) > 0 {
		n := min(len(items), streamChunk)
		if err := send(wrap(items[:n])); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

// mergeEvents relays both backends' container events to one stream. The
// primary's stream decides the call: when it ends or fails, so does the
// call (the kubelet then falls back to relisting, or reopens). vmpod's
// stream is reopened while it breaks (vmpod restarting), and dropped when
// vmpod does not implement events.
func (r *Router) mergeEvents(req *runtimeapi.GetEventsRequest, srv grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	ctx, cancel := context.WithCancel(srv.Context())
	var mu sync.Mutex // grpc streams allow one sender at a time
	send := func(ev *runtimeapi.ContainerEventResponse) error {
		mu.Lock()
		defer mu.Unlock()
		return srv.Send(ev)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			err := relayEvents(ctx, r.vm, req, send)
			if ctx.Err() != nil {
				return
			}
			if status.Code(err) == codes.Unimplemented {
				r.log.Debug("vmpod does not stream container events; relaying the primary's only", "err", err)
				return
			}
			r.log.Debug("vmpod's container event stream broke; reopening", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(eventRetry):
			}
		}
	}()
	err := relayEvents(ctx, r.primary, req, send)
	cancel()
	wg.Wait()
	if errors.Is(err, io.EOF) {
		return nil
	}
	return r.primary.wrap(err)
}

// relayEvents copies one backend's event stream to send until either fails.
func relayEvents(ctx context.Context, b *backend, req *runtimeapi.GetEventsRequest, send func(*runtimeapi.ContainerEventResponse) error) error {
	stream, err := b.rt.GetContainerEvents(ctx, req)
	if err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := send(ev); err != nil {
			return err
		}
	}
}
