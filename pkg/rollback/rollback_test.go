package rollback

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestRollback(t *testing.T) {
	var order []string
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil))
	build := func() *Steps {
		order = nil
		var r Steps
		r.Add("first", func(ctx context.Context) error { order = append(order, "first"); return nil })
		r.Add("second", func(ctx context.Context) error {
			order = append(order, "second")
			if _, ok := ctx.Deadline(); !ok {
				t.Error("a release runs without a deadline")
			}
			return errors.New("stuck")
		})
		r.Add("third", func(ctx context.Context) error { order = append(order, "third"); return ctx.Err() })
		return &r
	}

	// Success: nothing is released.
	if err := build().Run(t.Context(), logger, nil); err != nil || len(order) != 0 {
		t.Fatalf("run without a cause: %v, released %v", err, order)
	}
	// Failure: everything, in reverse order, on a live context even when
	// the request's is dead; the failing release is logged and returned.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := build().Run(ctx, logger, errors.New("define failed"))
	if strings.Join(order, ",") != "third,second,first" {
		t.Fatalf("released in order %v", order)
	}
	if err == nil || !strings.Contains(err.Error(), "release second: stuck") {
		t.Fatalf("run returned %v", err)
	}
	if !strings.Contains(log.String(), "releasing second failed") || !strings.Contains(log.String(), "define failed") {
		t.Fatalf("log: %s", log.String())
	}
}
