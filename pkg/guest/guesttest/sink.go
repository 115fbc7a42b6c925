package guesttest

import (
	"bytes"
	"errors"
	"sync"
)

// Sink is an exec client's stream: it keeps what it gets, and fails every
// write once FailAfter writes with data went through (0: never, -1:
// always), as a client that went away.
type Sink struct {
	FailAfter int

	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

// Write keeps p, or fails as configured.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.FailAfter < 0 || (s.FailAfter > 0 && s.writes >= s.FailAfter) {
		return 0, errors.New("stream reset")
	}
	if len(p) > 0 {
		s.writes++
	}
	return s.buf.Write(p)
}

// Close does nothing.
func (s *Sink) Close() error { return nil }

// String is what was written.
func (s *Sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
