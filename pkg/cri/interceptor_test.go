package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestToGRPC(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("x: %w", errdefs.ErrInvalidArgument), codes.InvalidArgument},
		{fmt.Errorf("x: %w", errdefs.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", errdefs.ErrFailedPrecondition), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", errdefs.ErrUnavailable), codes.Unavailable},
		{fmt.Errorf("x: %w", errdefs.ErrNotImplemented), codes.Unimplemented},
		{fmt.Errorf("x: %w", errdefs.ErrPermissionDenied), codes.PermissionDenied},
		{fmt.Errorf("pull: %w", context.Canceled), codes.Canceled},
		{fmt.Errorf("pull: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{status.Error(codes.Aborted, "kept"), codes.Aborted},
		{errors.New("plain"), codes.Unknown},
	} {
		got := toGRPC(tc.err)
		if status.Code(got) != tc.code {
			t.Errorf("toGRPC(%v) code = %v, want %v", tc.err, status.Code(got), tc.code)
		}
		if st, _ := status.FromError(got); st.Message() != tc.err.Error() && tc.code != codes.Aborted {
			t.Errorf("message changed: %q -> %q", tc.err, st.Message())
		}
	}
}

func TestGateHoldsStateCalls(t *testing.T) {
	gate := NewGate()
	ic := &Interceptors{Log: quietLog(), Gate: gate}
	handler := func(ctx context.Context, req any) (any, error) { return "ok", nil }
	call := func(ctx context.Context, method string) (any, error) {
		return ic.Unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/" + method}, handler)
	}

	// Version passes a closed gate: the kubelet calls it first and exits on failure.
	if resp, err := call(context.Background(), "Version"); err != nil || resp != "ok" {
		t.Fatalf("Version through closed gate: %v %v", resp, err)
	}
	// A state call with a short deadline gets Unavailable.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := call(ctx, "ListImages"); status.Code(err) != codes.Unavailable {
		t.Fatalf("ListImages through closed gate: %v, want Unavailable", err)
	}
	// A waiting call proceeds once the gate opens.
	done := make(chan error)
	go func() { _, err := call(context.Background(), "PullImage"); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("PullImage did not wait for the gate: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	gate.Open()
	if err := <-done; err != nil {
		t.Fatalf("PullImage after gate opened: %v", err)
	}
}

func TestUnaryMapsErrors(t *testing.T) {
	gate := NewGate()
	gate.Open()
	ic := &Interceptors{Log: quietLog(), Gate: gate}
	_, err := ic.Unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.ImageService/PullImage"},
		func(ctx context.Context, req any) (any, error) {
			return nil, fmt.Errorf("pull image %q: %w", "x", errdefs.ErrNotFound)
		})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("err = %v, want NotFound", err)
	}
}
