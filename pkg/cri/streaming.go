package cri

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"k8s.io/cri-streaming/pkg/streaming"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// streamRuntime adapts the Service to the streaming server's Runtime.
type streamRuntime struct{ s *Service }

func (r streamRuntime) Attach(ctx context.Context, containerID string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	return r.s.AttachConsole(ctx, containerID, in, out, errw, tty, resize)
}

func (r streamRuntime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	return r.s.ExecStream(ctx, containerID, cmd, in, out, errw, tty, resize)
}

func (r streamRuntime) PortForward(ctx context.Context, podSandboxID string, port int32, stream io.ReadWriteCloser) error {
	return r.s.ForwardPort(ctx, podSandboxID, port, stream)
}

// StartStreaming serves the CRI streaming server (SPDY and WebSocket) on
// addr ("127.0.0.1:0" picks a port) and installs it. The returned function
// stops it.
func (s *Service) StartStreaming(addr string) (stop func(), err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("streaming server: listen on %s: %w", addr, err)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = lis.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: lis.Addr().String()}
	srv, err := streaming.NewServer(cfg, streamRuntime{s})
	if err != nil {
		lis.Close()
		return nil, err
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(lis)
	s.SetStreamServer(srv)
	s.log.Info("streaming server listening", "address", lis.Addr().String())
	return func() { hs.Close() }, nil
}
