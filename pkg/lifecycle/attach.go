package lifecycle

import (
	"context"
	"fmt"
	"io"
	"net/netip"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/logging"
)

// Attach connects a streaming client to a VM's serial console: console
// output goes to out, in goes to the console. It returns when the client
// goes away (ctx), when the VM stops, or, for a container created with
// stdin_once, when the client closes its stdin (as a container's stdin
// would close); the VM is never affected. Several attaches and the logger
// all see the whole output.
func (c *Controller) Attach(ctx context.Context, id string, in io.Reader, out io.Writer) error {
	ct, err := c.reg.container(id)
	if err != nil {
		return err
	}
	con := ct.getConsole()
	if con == nil {
		return fmt.Errorf("container %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	sub, err := con.Subscribe()
	if err != nil {
		return err
	}
	defer sub.Close()
	outDone := make(chan error, 1)
	if out != nil {
		go func() {
			_, err := io.Copy(out, sub)
			outDone <- err
		}()
	}
	var inDone chan struct{} // closed at stdin's end when that ends the session
	if in != nil {
		if ct.config.GetStdinOnce() {
			inDone = make(chan struct{})
		}
		go func() {
			// Without stdin_once, stdin's end only stops input: output
			// keeps flowing until the client detaches or the VM stops.
			io.Copy(consoleWriter{con}, in)
			if inDone != nil {
				close(inDone)
			}
		}()
	}
	select {
	case <-ctx.Done():
	case <-outDone:
	case <-con.Done():
	case <-inDone:
	}
	return nil
}

type consoleWriter struct{ con ConsoleHandle }

func (w consoleWriter) Write(p []byte) (int, error) { return w.con.Write(p) }

// CheckPortForward says whether ports of the sandbox can be forwarded now.
func (c *Controller) CheckPortForward(sandboxID string) error {
	sb, err := c.reg.sandbox(sandboxID)
	if err != nil {
		return err
	}
	_, err = forwardTarget(sb.Get())
	return err
}

// forwardTarget returns the pod IP port-forwards connect to (the first
// IPv4 address, else the first address).
func forwardTarget(rec SandboxRecord) (netip.Addr, error) {
	if rec.State != SandboxReady {
		return netip.Addr{}, fmt.Errorf("pod sandbox %s is %s; port-forward needs a ready pod: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	att := rec.LiveNetwork()
	if att == nil || len(att.IPs()) == 0 {
		return netip.Addr{}, fmt.Errorf("pod sandbox %s has no pod IP to forward to: %w", rec.ID, errdefs.ErrFailedPrecondition)
	}
	return att.IPs()[0], nil
}

// PortForward splices a port-forward stream with a TCP connection to the
// guest at the pod IP (cni.Forward) until either side is done.
func (c *Controller) PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error {
	sb, err := c.reg.sandbox(sandboxID)
	if err != nil {
		stream.Close()
		return err
	}
	ip, err := forwardTarget(sb.Get())
	if err != nil {
		stream.Close()
		return err
	}
	logging.From(ctx).Debug("port-forward", logging.KeySandboxID, sandboxID, "ip", ip.String(), "port", port)
	if err := cni.Forward(ctx, ip, port, stream); err != nil {
		return fmt.Errorf("port-forward to pod sandbox %s: %w", sandboxID, err)
	}
	return nil
}
