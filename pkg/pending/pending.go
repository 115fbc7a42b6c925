// Package pending lets work outlast the caller that started it (cri-o's
// resourcestore idea): VM creation takes longer than the kubelet's
// deadline, and its retry with the same name must get the object that was
// being built instead of a second VM or an AlreadyExists error.
package pending

import (
	"context"
	"sync"
	"time"
)

// Work runs work by name. The work for a name runs under a context that
// the caller's cancellation does not reach; when the caller gives up, the
// result is kept for a while so that a retry with the same name gets it.
type Work struct {
	mu sync.Mutex
	m  map[string]*result
}

type result struct {
	done chan struct{}
	id   string
	err  error
}

// abandonedTTL bounds how long the result of an abandoned create waits for
// a retry; after that the object is still there (the kubelet lists and
// removes what it does not know), only the shortcut is gone.
const abandonedTTL = 10 * time.Minute

// New returns an empty Work.
func New() *Work { return &Work{m: map[string]*result{}} }

// Run returns the result of fn for name. If an earlier call for name is
// still running or gave up, it waits for that one's result instead.
func (p *Work) Run(ctx context.Context, name string, fn func(ctx context.Context) (string, error)) (string, error) {
	p.mu.Lock()
	pc, joined := p.m[name]
	if !joined {
		pc = &result{done: make(chan struct{})}
		p.m[name] = pc
		go func() {
			pc.id, pc.err = fn(context.WithoutCancel(ctx))
			close(pc.done)
		}()
	}
	p.mu.Unlock()

	select {
	case <-pc.done:
		p.forget(name, pc)
		return pc.id, pc.err
	case <-ctx.Done():
		time.AfterFunc(abandonedTTL, func() { p.forget(name, pc) })
		return "", ctx.Err()
	}
}

func (p *Work) forget(name string, pc *result) {
	p.mu.Lock()
	if p.m[name] == pc {
		delete(p.m, name)
	}
	p.mu.Unlock()
}
