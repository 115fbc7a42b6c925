package lifecycle

import (
	"context"
	"sync"
	"time"
)

// pendingCreates lets VM creation outlast the caller's deadline (cri-o's
// resourcestore idea). The work for a reserved name runs under a context
// that the caller's cancellation does not reach; when the caller gives up,
// the result is kept so that the kubelet's retry with the same name gets
// the object that was being built instead of a second VM or an
// AlreadyExists error.
type pendingCreates struct {
	mu sync.Mutex
	m  map[string]*pendingCreate
}

type pendingCreate struct {
	done chan struct{}
	id   string
	err  error
}

// abandonedTTL bounds how long the result of an abandoned create waits for
// a retry; after that the object is still there (the kubelet lists and
// removes what it does not know), only the shortcut is gone.
const abandonedTTL = 10 * time.Minute

func newPendingCreates() *pendingCreates { return &pendingCreates{m: map[string]*pendingCreate{}} }

// run returns the result of fn for name. If an earlier call for name is
// still running or gave up, it waits for that one's result instead.
func (p *pendingCreates) run(ctx context.Context, name string, fn func(ctx context.Context) (string, error)) (string, error) {
	p.mu.Lock()
	pc, joined := p.m[name]
	if !joined {
		pc = &pendingCreate{done: make(chan struct{})}
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

func (p *pendingCreates) forget(name string, pc *pendingCreate) {
	p.mu.Lock()
	if p.m[name] == pc {
		delete(p.m, name)
	}
	p.mu.Unlock()
}
