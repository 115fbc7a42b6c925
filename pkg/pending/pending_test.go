package pending

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// A caller that gives up does not stop the work; the retry with the same
// name gets its result instead of starting it again.
func TestRetryJoinsAbandonedWork(t *testing.T) {
	w := New()
	var runs atomic.Int32
	release := make(chan struct{})
	work := func(ctx context.Context) (string, error) {
		runs.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return "", errors.New("the work was cancelled with its caller")
		}
		return "vm-1", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := w.Run(ctx, "pod_a", work); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first caller: %v, want its deadline", err)
	}
	close(release)
	id, err := w.Run(context.Background(), "pod_a", work)
	if err != nil || id != "vm-1" || runs.Load() != 1 {
		t.Fatalf("retry = %q, %v after %d runs; want the first run's result", id, err, runs.Load())
	}
	// Done and collected: the next call runs anew.
	if id, _ := w.Run(context.Background(), "pod_a", func(context.Context) (string, error) { return "vm-2", nil }); id != "vm-2" {
		t.Fatalf("third call got %q", id)
	}
}
