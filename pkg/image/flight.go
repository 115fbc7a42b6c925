package image

import (
	"context"
	"sync"
)

// flightGroup runs one download per key however many callers ask for it at
// once. Unlike golang.org/x/sync/singleflight, the shared work runs under its
// own context that is cancelled only when every waiting caller has given up,
// so one impatient caller cannot fail the others, and the last one leaving
// stops the download (which then removes its partial file).
type flightGroup struct {
	mu      sync.Mutex
	flights map[string]*flight
}

type flight struct {
	done    chan struct{}
	waiters int
	cancel  context.CancelFunc
	img     Image
	err     error
}

// do runs fn once per key among concurrent callers and returns its result
// to each of them. shared reports whether the caller joined an existing run.
func (g *flightGroup) do(ctx context.Context, key string, fn func(ctx context.Context) (Image, error)) (img Image, shared bool, err error) {
	g.mu.Lock()
	if g.flights == nil {
		g.flights = map[string]*flight{}
	}
	f, ok := g.flights[key]
	if !ok {
		// The work outlives the first caller's context, but keeps its values
		// (the request logger).
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		g.flights[key] = f
		go func() {
			f.img, f.err = fn(wctx)
			cancel()
			g.mu.Lock()
			delete(g.flights, key)
			g.mu.Unlock()
			close(f.done)
		}()
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		return f.img, ok, f.err
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
		}
		g.mu.Unlock()
		return Image{}, ok, ctx.Err()
	}
}
