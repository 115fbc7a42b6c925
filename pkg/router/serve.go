package router

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Serve serves r on the unix socket at socketPath until ctx is done, then
// stops gracefully (in-flight calls get up to 10 seconds). It refuses to
// start when another process serves the socket.
func Serve(ctx context.Context, r *Router, socketPath string) error {
	lis, err := listen(socketPath)
	if err != nil {
		return err
	}
	defer os.Remove(socketPath)
	srv := NewServer(r)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	r.log.Info("serving the CRI router", "socket", socketPath, "primary", r.primary.endpoint, "vmpod", r.vm.endpoint, "handlers", r.handlerList)
	select {
	case err := <-serveErr:
		return fmt.Errorf("CRI router stopped: %w", err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
		<-stopped
	}
	r.log.Info("CRI router stopped")
	return nil
}

// NewServer returns a gRPC server with r registered as both CRI services,
// logging every call at debug level.
func NewServer(r *Router) *grpc.Server {
	logCall := func(method string, start time.Time, err error) {
		r.log.Debug("CRI call", "method", path.Base(method), "code", status.Code(err).String(), "duration", time.Since(start), "err", err)
	}
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.MaxSendMsgSize(maxMsgSize),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := h(ctx, req)
			logCall(info.FullMethod, start, err)
			return resp, err
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			start := time.Now()
			err := h(srv, ss)
			logCall(info.FullMethod, start, err)
			return err
		}),
	)
	runtimeapi.RegisterRuntimeServiceServer(srv, r)
	runtimeapi.RegisterImageServiceServer(srv, r)
	return srv
}

// listen creates the socket with mode 0660 (parent directories included),
// replacing a stale socket nobody answers on.
func listen(socketPath string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if st, err := os.Lstat(socketPath); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another --socket", socketPath)
		}
		if c, err := net.DialTimeout("unix", socketPath, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is served by another process (another vmpod router?); stop it or choose another --socket", socketPath)
		}
		if err := os.Remove(socketPath); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	lis, err := net.Listen("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socketPath, err)
	}
	if err := os.Chmod(socketPath, 0o660); err != nil {
		lis.Close()
		return nil, err
	}
	return lis, nil
}
