package cri

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/metrics"
)

// Gate holds calls until the daemon has recovered its state. Until Open is
// called, gated calls wait (and fail with Unavailable if their deadline
// passes first).
type Gate struct {
	once sync.Once
	ch   chan struct{}
}

// NewGate returns a closed gate.
func NewGate() *Gate { return &Gate{ch: make(chan struct{})} }

// Open lets all calls through from now on.
func (g *Gate) Open() { g.once.Do(func() { close(g.ch) }) }

// Wait blocks until the gate is open or ctx is done.
func (g *Gate) Wait(ctx context.Context) error {
	select {
	case <-g.ch:
		return nil
	case <-ctx.Done():
		return status.Error(codes.Unavailable, "vmpod is still recovering its state after start-up; retry shortly")
	}
}

// ungated RPCs answer before recovery finishes: they read no state, and the
// kubelet exits when Version fails at its start.
var ungated = map[string]bool{
	"Version": true, "Status": true, "RuntimeConfig": true, "UpdateRuntimeConfig": true,
}

// polling RPCs are what the kubelet calls several times a second; they are
// logged at Debug so they stay out of the normal log.
var polling = map[string]bool{
	"Version": true, "Status": true, "RuntimeConfig": true,
	"ListPodSandbox": true, "PodSandboxStatus": true, "ListContainers": true, "ContainerStatus": true,
	"ListImages": true, "ImageStatus": true, "ImageFsInfo": true,
	"ListContainerStats": true, "ContainerStats": true, "ListPodSandboxStats": true, "PodSandboxStats": true,
	"ListMetricDescriptors": true, "ListPodSandboxMetrics": true,
	"StreamImages": true, "StreamPodSandboxes": true, "StreamContainers": true,
}

// longLived RPCs stream for as long as the client listens; their duration
// says nothing about vmpod's latency, so the request histogram leaves them
// out.
var longLived = map[string]bool{"GetContainerEvents": true}

// Interceptors is the boundary layer: request logging, the readiness gate,
// the request metrics, and the mapping of error classes (errdefs) to gRPC
// codes.
type Interceptors struct {
	Log  *slog.Logger
	Gate *Gate
	// Metrics receives each call's duration and code; nil records nothing.
	Metrics *metrics.Metrics
}

// Unary is the unary server interceptor.
func (i *Interceptors) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := path.Base(info.FullMethod)
	start := time.Now()
	ctx, log, err := i.enter(ctx, method, start)
	if err != nil {
		return nil, err
	}
	resp, err := handler(ctx, req)
	return resp, i.leave(log, method, start, err)
}

// Stream is the streaming server interceptor.
func (i *Interceptors) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	method := path.Base(info.FullMethod)
	start := time.Now()
	ctx, log, err := i.enter(ss.Context(), method, start)
	if err != nil {
		return err
	}
	err = handler(srv, &loggedStream{ServerStream: ss, ctx: ctx})
	return i.leave(log, method, start, err)
}

func (i *Interceptors) enter(ctx context.Context, method string, start time.Time) (context.Context, *slog.Logger, error) {
	log := i.Log.With("method", method)
	if !ungated[method] {
		if err := i.Gate.Wait(ctx); err != nil {
			log.Warn("call refused: recovery not finished", logging.KeyErr, err)
			i.observe(method, status.Code(err), start)
			return ctx, log, err
		}
	}
	return logging.With(ctx, log), log, nil
}

// observe records a call's duration and code.
func (i *Interceptors) observe(method string, code codes.Code, start time.Time) {
	if !longLived[method] {
		i.Metrics.ObserveRPC(method, code.String(), time.Since(start))
	}
}

func (i *Interceptors) leave(log *slog.Logger, method string, start time.Time, err error) error {
	dur := time.Since(start)
	gerr := toGRPC(err)
	code := status.Code(gerr)
	i.observe(method, code, start)
	if err == nil {
		level := slog.LevelInfo
		if polling[method] {
			level = slog.LevelDebug
		}
		log.Log(context.Background(), level, "call done", "duration", dur)
		return nil
	}
	level := slog.LevelError
	switch code {
	case codes.NotFound, codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists,
		codes.Unimplemented, codes.Canceled, codes.DeadlineExceeded, codes.PermissionDenied:
		level = slog.LevelWarn
	}
	if longLived[method] && (code == codes.Unavailable || code == codes.ResourceExhausted) {
		// vmpod ended the stream: shutdown, or a client that fell behind
		// (already warned about where it happened).
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "call failed", "code", code.String(), "duration", dur, logging.KeyErr, err)
	return gerr
}

// toGRPC maps an error class to its gRPC code, keeping the message.
func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	for _, c := range classes {
		if errors.Is(err, c.class) {
			return status.Error(c.code, err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// classes maps errdefs error classes to gRPC codes (errgrpc.ToGRPC does the
// same but drags in typeurl and gogo protobuf for error details we do not
// send).
var classes = []struct {
	class error
	code  codes.Code
}{
	{errdefs.ErrInvalidArgument, codes.InvalidArgument},
	{errdefs.ErrNotFound, codes.NotFound},
	{errdefs.ErrAlreadyExists, codes.AlreadyExists},
	{errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
	{errdefs.ErrConflict, codes.FailedPrecondition},
	{errdefs.ErrUnavailable, codes.Unavailable},
	{errdefs.ErrNotImplemented, codes.Unimplemented},
	{errdefs.ErrPermissionDenied, codes.PermissionDenied},
	{errdefs.ErrResourceExhausted, codes.ResourceExhausted},
	{errdefs.ErrAborted, codes.Aborted},
	{errdefs.ErrOutOfRange, codes.OutOfRange},
	{errdefs.ErrInternal, codes.Internal},
	{errdefs.ErrUnauthenticated, codes.Unauthenticated},
}

type loggedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *loggedStream) Context() context.Context { return s.ctx }
