// Package broadcast fans values out to subscribers without ever blocking
// the publisher: each subscriber has a bounded buffer, and one that falls
// that far behind is disconnected (its subscription ends with an error
// wrapping errdefs.ErrResourceExhausted) rather than silently losing
// values. Close ends every subscription with errdefs.ErrUnavailable.
package broadcast

import (
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
)

// Subscription is one subscriber's values.
type Subscription[T any] struct {
	b  *Broadcaster[T]
	ch chan T
	// done is closed when the broadcaster ends the subscription; err says
	// why and is set before.
	done chan struct{}
	err  error
}

// C delivers the values.
func (s *Subscription[T]) C() <-chan T { return s.ch }

// Done is closed when the broadcaster ended the subscription; Err says why.
func (s *Subscription[T]) Done() <-chan struct{} { return s.done }

// Err is why the subscription ended (read it after Done is closed).
func (s *Subscription[T]) Err() error { return s.err }

// Close ends the subscription from the subscriber's side.
func (s *Subscription[T]) Close() {
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
}

// Broadcaster fans values out to its subscribers.
type Broadcaster[T any] struct {
	size int
	what string // names the values in errors, e.g. "container event"

	mu     sync.Mutex
	subs   map[*Subscription[T]]struct{}
	closed bool
}

// New returns a Broadcaster whose subscribers may fall size values behind;
// what names the values in the errors subscribers get.
func New[T any](size int, what string) *Broadcaster[T] {
	return &Broadcaster[T]{size: size, what: what, subs: map[*Subscription[T]]struct{}{}}
}

// Size is how many values a subscriber may fall behind.
func (b *Broadcaster[T]) Size() int { return b.size }

// Subscribe adds a subscriber; it fails with Unavailable after Close.
func (b *Broadcaster[T]) Subscribe() (*Subscription[T], error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("vmpod is shutting down; no new %s subscriptions: %w", b.what, errdefs.ErrUnavailable)
	}
	sub := &Subscription[T]{b: b, ch: make(chan T, b.size), done: make(chan struct{})}
	b.subs[sub] = struct{}{}
	return sub, nil
}

// endLocked ends a subscription with err. b.mu is held.
func (b *Broadcaster[T]) endLocked(sub *Subscription[T], err error) {
	delete(b.subs, sub)
	sub.err = err
	close(sub.done)
}

// Publish hands v to every subscriber and returns how many it had to
// disconnect because their buffer was full.
func (b *Broadcaster[T]) Publish(v T) (dropped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		select {
		case sub.ch <- v:
		default:
			b.endLocked(sub, fmt.Errorf("%s stream fell %d %ss behind and was closed; relist and subscribe again: %w",
				b.what, b.size, b.what, errdefs.ErrResourceExhausted))
			dropped++
		}
	}
	return dropped
}

// Count is the number of subscribers.
func (b *Broadcaster[T]) Count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Close ends every subscription with Unavailable and refuses new ones.
func (b *Broadcaster[T]) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for sub := range b.subs {
		b.endLocked(sub, fmt.Errorf("vmpod is shutting down: %w", errdefs.ErrUnavailable))
	}
}
