package libvirttools

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func waitAbandoned(t *testing.T, c *Calls, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.Abandoned() != want {
		if time.Now().After(deadline) {
			t.Fatalf("abandoned = %d, want %d", c.Abandoned(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCallsResult(t *testing.T) {
	var c Calls
	boom := errors.New("boom")
	if err := c.Run(context.Background(), "op", time.Second, func() error { return boom }); err != boom {
		t.Fatalf("Run = %v, want fn's own error", err)
	}
	if err := c.Run(context.Background(), "op", time.Second, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	if err := c.Run(cctx, "op", time.Second, func() error { ran = true; return nil }); !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("Run with a done context = %v (ran %v)", err, ran)
	}
}

// TestCallsDeadline: a call that does not return is given up at its
// deadline (Unavailable) or when the context ends, and counted until it
// returns.
func TestCallsDeadline(t *testing.T) {
	var c Calls
	unblock := make(chan struct{})
	start := time.Now()
	err := c.Run(context.Background(), "get state", 50*time.Millisecond, func() error { <-unblock; return nil })
	if took := time.Since(start); !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, ErrCallTimeout) || took < 50*time.Millisecond || took > time.Second {
		t.Fatalf("hung call: %v after %v", err, took)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := c.Run(ctx, "get state", time.Hour, func() error { <-unblock; return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("hung call, context cancelled: %v", err)
	}
	if n := c.Abandoned(); n != 2 {
		t.Fatalf("abandoned = %d, want 2", n)
	}
	close(unblock)
	waitAbandoned(t, &c, 0)
}

// TestCallsBound: past MaxAbandonedCalls hung calls, new ones are refused
// at once without being started; as the hung ones return, calls run
// again.
func TestCallsBound(t *testing.T) {
	var c Calls
	unblock := make(chan struct{})
	var running atomic.Int32
	var wg sync.WaitGroup
	for range MaxAbandonedCalls {
		wg.Go(func() {
			c.Run(context.Background(), "hang", 10*time.Millisecond, func() error {
				running.Add(1)
				<-unblock
				running.Add(-1)
				return nil
			})
		})
	}
	wg.Wait()
	waitAbandoned(t, &c, MaxAbandonedCalls)
	start := time.Now()
	ran := false
	err := c.Run(context.Background(), "list", time.Hour, func() error { ran = true; return nil })
	if !errors.Is(err, errdefs.ErrUnavailable) || ran || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("call past the bound: %v (ran %v) after %v", err, ran, time.Since(start))
	}
	if n := running.Load(); n != MaxAbandonedCalls {
		t.Fatalf("%d hung calls running, want %d", n, MaxAbandonedCalls)
	}
	close(unblock)
	waitAbandoned(t, &c, 0)
	if err := c.Run(context.Background(), "list", time.Second, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestCallsRace: calls finishing right at their deadline are counted
// exactly once either way (run with -race).
func TestCallsRace(t *testing.T) {
	var c Calls
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			c.Run(context.Background(), "op", time.Millisecond, func() error {
				time.Sleep(time.Duration(i%3) * time.Millisecond)
				return nil
			})
		})
	}
	wg.Wait()
	waitAbandoned(t, &c, 0)
}

// TestCallsQueueProgress: a call waits for its turn longer than its
// timeout while the calls ahead of it keep returning (libvirtd starting
// many domains slowly, not hung).
func TestCallsQueueProgress(t *testing.T) {
	c := Calls{Limit: 1}
	const timeout = time.Second
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			errs[i] = c.Run(context.Background(), "start", timeout, func() error { time.Sleep(600 * time.Millisecond); return nil })
		})
	}
	wg.Wait() // the last one waited about 1.8 s for its turn
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
}

// TestCallsLimit: with a Limit, no more calls run at once; a call waiting
// for its turn is not timed until it gets one, so it succeeds although
// its wait and its run together take longer than its timeout; with every
// turn held by a hung call it fails Unavailable at once without running.
func TestCallsLimit(t *testing.T) {
	c := Calls{Limit: 2}
	const timeout = 2 * time.Second
	var running, most atomic.Int32
	call := func(d time.Duration) func() error {
		return func() error {
			n := running.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(d)
			running.Add(-1)
			return nil
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 2 {
		wg.Go(func() { errs[i] = c.Run(context.Background(), "start", timeout, call(1200*time.Millisecond)) })
	}
	for running.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	errs[2] = c.Run(context.Background(), "start", timeout, call(1200*time.Millisecond))
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	if took := time.Since(start); took <= timeout {
		t.Logf("the queued call took %v, no longer than its timeout: the test proves less than it should", took)
	}
	if m := most.Load(); m != 2 {
		t.Errorf("%d calls at once, want 2", m)
	}

	unblock := make(chan struct{})
	defer close(unblock)
	for range 2 {
		go c.Run(context.Background(), "hang", 10*time.Millisecond, func() error { <-unblock; return nil })
	}
	waitAbandoned(t, &c, 2)
	ran := false
	start = time.Now()
	err := c.Run(context.Background(), "list", time.Hour, func() error { ran = true; return nil })
	if !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, ErrCallTimeout) || ran || time.Since(start) > time.Second {
		t.Fatalf("call with every turn taken by hung calls: %v (ran %v) after %v; want Unavailable at once", err, ran, time.Since(start))
	}
}
