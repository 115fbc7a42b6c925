package transfer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestWatchStall(t *testing.T) {
	// The timeout is ten times the gap between bytes, so a machine slow
	// to wake the test does not look like a stall.
	l := Limits{StallTimeout: time.Second}
	var n atomic.Int64

	// Bytes keep coming: no stall for several timeouts.
	ctx, stop := l.WatchStall(context.Background(), &n)
	for range 300 {
		n.Add(1)
		time.Sleep(10 * time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Fatalf("cancelled while bytes arrived: %v", context.Cause(ctx))
	}
	stop()

	// No bytes: cancelled with a TimeoutError, classed Unavailable and not
	// DeadlineExceeded.
	ctx, stop = l.WatchStall(context.Background(), &n)
	defer stop()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("no stall detected")
	}
	te := OwnTimeout(ctx)
	if te == nil || te.Setting != "pull_stall_timeout" || !errors.Is(te, errdefs.ErrUnavailable) || errors.Is(te, context.DeadlineExceeded) {
		t.Fatalf("cause = %v", context.Cause(ctx))
	}

	// The caller's cancellation is not ours.
	parent, cancel := context.WithCancel(context.Background())
	ctx, stop = l.WatchStall(parent, &n)
	defer stop()
	cancel()
	<-ctx.Done()
	if te := OwnTimeout(ctx); te != nil {
		t.Fatalf("caller's cancellation reported as %v", te)
	}
}

func TestRequestTimeout(t *testing.T) {
	ctx, cancel := Limits{RequestTimeout: 20 * time.Millisecond}.WithRequestTimeout(context.Background())
	defer cancel()
	<-ctx.Done()
	if te := OwnTimeout(ctx); te == nil || te.Setting != "pull_request_timeout" {
		t.Fatalf("cause = %v", context.Cause(ctx))
	}
	parent, pcancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer pcancel()
	ctx, cancel = Limits{RequestTimeout: time.Hour}.WithRequestTimeout(parent)
	defer cancel()
	<-ctx.Done()
	if te := OwnTimeout(ctx); te != nil {
		t.Fatalf("the caller's deadline reported as ours: %v", te)
	}
}

// TestClassifyClientTimeout: net/http's Client.Timeout error matches
// context.DeadlineExceeded; it is a Timeout (Unavailable for users), not a
// cancellation (which would reach users as DeadlineExceeded).
func TestClassifyClientTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	client := &http.Client{Timeout: 50 * time.Millisecond}
	resp, err := client.Get(srv.URL)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil || Classify(err) != Timeout {
		t.Fatalf("Classify(%v) = %v, want timeout", err, Classify(err))
	}
}

func TestLimitsTooLarge(t *testing.T) {
	err := Limits{MaxImageSize: 1000}.TooLarge("the download", 1001)
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("err = %v", err)
	}
	if d := (Limits{}).WithDefaults(); d.MaxImageSize != 64<<30 || d.RequestTimeout != 30*time.Second || d.StallTimeout != time.Minute {
		t.Fatalf("defaults = %+v", d)
	}
}
