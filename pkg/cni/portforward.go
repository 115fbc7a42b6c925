package cni

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
)

// portForwardDialTimeout bounds the connect to the guest.
const portForwardDialTimeout = 10 * time.Second

// Forward splices a port-forward stream with a TCP connection to port at
// the pod IP ip, and returns when either side is done. It dials from the
// host's network namespace: the pod's netns holds no address (the guest
// owns the pod IP), and the host reaches the pod IP through the CNI bridge
// like any pod.
func Forward(ctx context.Context, ip netip.Addr, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
	d := net.Dialer{Timeout: portForwardDialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connect to the guest at %s: %w (is anything listening on port %d in the guest?)", addr, err, port)
	}
	defer conn.Close()
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
