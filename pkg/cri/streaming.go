package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/cri-streaming/pkg/streaming"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/vmpod/vmpod/pkg/lifecycle"
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
	return r.s.pods.PortForward(ctx, podSandboxID, port, stream)
}

// AttachConsole connects a streaming client to a VM's serial console
// until the client goes away, the VM stops or, with stdin_once, the
// client's stdin ends (lifecycle.Controller.Attach). A console may stay
// silent for hours, so, as for exec, an empty frame is written every
// heartbeatInterval to notice a client that went away. A serial console
// has no window size: resizes are read and dropped.
func (s *Service) AttachConsole(ctx context.Context, containerID string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	if resize != nil {
		go func() {
			for range resize {
			}
		}()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	act := newActivity()
	var w io.Writer
	if out != nil {
		cw := &clientWriter{w: out, act: act}
		w = cw
		go cw.heartbeat(ctx, cancel, s.cfg.StreamIdleTimeout.Std())
	}
	err := s.pods.Attach(ctx, containerID, act.reader(in), w)
	if cause := context.Cause(ctx); err == nil && errors.Is(cause, errStreamIdle) {
		return cause // the client learns why its attach ended
	}
	return err
}

// ExecStream runs cmd in a container's guest for a streaming client
// (lifecycle.Controller.Exec). The streaming server gives no sign that a
// client went away but a failing write, so an empty frame (which clients
// read as no data) is written every heartbeatInterval; when that fails,
// the exec ends with lifecycle.ErrClientGone and the guest process is
// killed. A non-zero exit is a utilexec.CodeExitError, returned as is: the
// streaming server checks for it by type assertion and hands the code to
// the client.
func (s *Service) ExecStream(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	act := newActivity()
	streams := lifecycle.ExecStreams{In: act.reader(in), TTY: tty}
	// A stream the client did not ask for stays a nil interface.
	var beat *clientWriter
	if out != nil {
		w := &clientWriter{w: out, act: act}
		streams.Out, beat = w, w
	}
	if errw != nil {
		w := &clientWriter{w: errw, act: act}
		streams.Err = w
		if beat == nil {
			beat = w
		}
	}
	if beat != nil {
		go beat.heartbeat(ctx, cancel, s.cfg.StreamIdleTimeout.Std())
	}
	if resize != nil {
		sizes := make(chan lifecycle.TerminalSize)
		streams.Resize = sizes
		go func() {
			defer close(sizes)
			for sz := range resize {
				select {
				case sizes <- lifecycle.TerminalSize{Width: sz.Width, Height: sz.Height}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	code, err := s.pods.Exec(ctx, containerID, cmd, streams)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %q exited with %d in container %s", cmd, code, containerID), Code: code}
	}
	return nil
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
	// The server's own idle timeout counts frames, and the heartbeats of
	// attach and exec are frames: it ends idle port-forwards, and
	// clientWriter.heartbeat ends idle attaches and execs.
	cfg.StreamIdleTimeout = s.cfg.StreamIdleTimeout.Std()
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

// heartbeatInterval is how often a streaming exec writes an empty frame to
// its client to notice that it went away.
const heartbeatInterval = 2 * time.Second

// errStreamIdle ends an attach or exec that carried no data for
// stream_idle_timeout.
var errStreamIdle = errors.New("the stream carried no data for stream_idle_timeout")

// activity is when data last went either way on a streaming session.
type activity struct{ last atomic.Int64 }

func newActivity() *activity {
	a := &activity{}
	a.touch()
	return a
}

func (a *activity) touch() { a.last.Store(time.Now().UnixNano()) }

func (a *activity) idleFor() time.Duration { return time.Since(time.Unix(0, a.last.Load())) }

// reader counts what the client sends on r as activity; nil stays nil.
func (a *activity) reader(r io.Reader) io.Reader {
	if r == nil {
		return nil
	}
	return activityReader{r: r, act: a}
}

type activityReader struct {
	r   io.Reader
	act *activity
}

func (r activityReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.act.touch()
	}
	return n, err
}

// clientWriter serialises writes to one of the client's streams (the
// output copier and the heartbeat share it) and counts those that carry
// data as activity.
type clientWriter struct {
	mu  sync.Mutex
	w   io.Writer
	act *activity
}

func (c *clientWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) > 0 {
		c.act.touch()
	}
	return c.w.Write(p)
}

// heartbeat writes an empty frame every heartbeatInterval until ctx ends,
// and cancels ctx with lifecycle.ErrClientGone when that fails. The
// empty frames keep the streaming server's idle timer from firing, so
// the heartbeat ends the session itself once no data went either way
// for idle (stream_idle_timeout).
func (c *clientWriter) heartbeat(ctx context.Context, cancel context.CancelCauseFunc, idle time.Duration) {
	t := time.NewTicker(heartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if idle > 0 && c.act.idleFor() >= idle {
				cancel(fmt.Errorf("%w (%s)", errStreamIdle, idle))
				return
			}
			if _, err := c.Write(nil); err != nil {
				cancel(fmt.Errorf("%w: %v", lifecycle.ErrClientGone, err))
				return
			}
		}
	}
}
