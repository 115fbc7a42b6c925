package console

import (
	"io"
	"sync"
)

// Subscription is one attached client's copy of the console output, from the
// moment it was created. Read it from one goroutine.
//
// It never slows down the console: the output is queued in a buffer of
// Options.SubscriberBuffer bytes, and when the reader falls behind so far
// that the buffer is full, the oldest queued bytes are dropped to make room
// (Dropped counts them). A client that stops reading thus sees a gap in the
// output and then the most recent output, as on a terminal that scrolled; it
// is not disconnected.
type Subscription struct {
	console *Console
	limit   int
	wake    chan struct{} // one pending wake-up for Read; capacity 1
	done    chan struct{} // closed by end or Close
	doneOne sync.Once

	mu      sync.Mutex
	buf     []byte // queued output, at most limit bytes
	dropped uint64
	ended   bool // no more output will come: Read drains buf, then io.EOF
	closed  bool // Close was called: Read returns io.EOF at once
}

func newSubscription(c *Console, limit int) *Subscription {
	return &Subscription{
		console: c,
		limit:   limit,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// Read reads console output, blocking until some is available. It returns
// io.EOF once the Subscription is closed, or once the Console is closed and
// the queued output has been read.
func (s *Subscription) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return 0, io.EOF
		}
		if len(s.buf) > 0 {
			n := copy(p, s.buf)
			s.buf = s.buf[:copy(s.buf, s.buf[n:])]
			s.mu.Unlock()
			return n, nil
		}
		if s.ended {
			s.mu.Unlock()
			return 0, io.EOF
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-s.done:
		}
	}
}

// Close detaches the client: it stops receiving output and a blocked Read
// returns io.EOF. The console and the VM are not affected. Close is
// idempotent and always returns nil.
func (s *Subscription) Close() error {
	s.mu.Lock()
	s.closed = true
	s.buf = nil
	s.mu.Unlock()
	s.doneOne.Do(func() { close(s.done) })
	s.console.unsubscribe(s)
	return nil
}

// Dropped returns how many bytes of output were discarded because the reader
// was too slow.
func (s *Subscription) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// push queues p, dropping the oldest queued bytes beyond limit. It never
// blocks on the reader.
func (s *Subscription) push(p []byte) {
	s.mu.Lock()
	if s.closed || s.ended {
		s.mu.Unlock()
		return
	}
	switch over := len(s.buf) + len(p) - s.limit; {
	case len(p) >= s.limit:
		s.dropped += uint64(len(s.buf) + len(p) - s.limit)
		s.buf = append(s.buf[:0], p[len(p)-s.limit:]...)
	case over > 0:
		s.dropped += uint64(over)
		s.buf = append(s.buf[:copy(s.buf, s.buf[over:])], p...)
	default:
		s.buf = append(s.buf, p...)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// end tells the Subscription that no more output will come.
func (s *Subscription) end() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	s.doneOne.Do(func() { close(s.done) })
}
