package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
)

// portForwardDialTimeout bounds the connect to the guest.
const portForwardDialTimeout = 10 * time.Second

// PortForward returns the streaming URL for forwarding ports to the pod.
func (s *Service) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	sb, err := s.state.getSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if _, err := forwardTarget(sb); err != nil {
		return nil, err
	}
	for _, p := range req.GetPort() {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("port %d is not a TCP port (1-65535): %w", p, errdefs.ErrInvalidArgument)
		}
	}
	if s.streams == nil {
		return nil, fmt.Errorf("streaming server not running: %w", errdefs.ErrUnavailable)
	}
	return s.streams.GetPortForward(req)
}

// forwardTarget returns the pod IP port-forwards connect to (the first
// IPv4 address, else the first address).
func forwardTarget(sb *sandbox) (netip.Addr, error) {
	sb.mu.Lock()
	rec := sb.rec
	sb.mu.Unlock()
	if rec.State != sandboxReady {
		return netip.Addr{}, fmt.Errorf("pod sandbox %s is %s; port-forward needs a ready pod: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	att := sandboxNetwork(rec)
	if att == nil || len(att.IPs()) == 0 {
		return netip.Addr{}, fmt.Errorf("pod sandbox %s has no pod IP to forward to: %w", rec.ID, errdefs.ErrFailedPrecondition)
	}
	return att.IPs()[0], nil
}

// ForwardPort splices a port-forward stream with a TCP connection to the
// guest at the pod IP. It dials from the host's network namespace: the
// pod's netns holds no address (the guest owns the pod IP), and the host
// reaches the pod IP through the CNI bridge like any pod. It returns when
// either side is done.
func (s *Service) ForwardPort(ctx context.Context, podSandboxID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	sb, err := s.state.getSandbox(podSandboxID)
	if err != nil {
		return err
	}
	ip, err := forwardTarget(sb)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
	d := net.Dialer{Timeout: portForwardDialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("port-forward to pod sandbox %s: connect to the guest at %s: %w (is anything listening on port %d in the guest?)", podSandboxID, addr, err, port)
	}
	defer conn.Close()
	logging.From(ctx).Debug("port-forward connected", logging.KeySandboxID, podSandboxID, "address", addr)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(conn, stream)
		// The client finished sending: half-close so the guest sees EOF.
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	_, err = io.Copy(stream, conn)
	stream.Close()
	conn.Close()
	wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("port-forward to %s: %w", addr, err)
	}
	return nil
}
