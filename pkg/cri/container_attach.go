package cri

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// Attach returns the streaming URL for the container's serial console.
func (s *Service) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if _, _, err := s.runningContainer(req.GetContainerId(), "attach"); err != nil {
		return nil, err
	}
	if s.streams == nil {
		return nil, fmt.Errorf("streaming server not running: %w", errdefs.ErrUnavailable)
	}
	return s.streams.GetAttach(req)
}

// AttachConsole connects a streaming client to a VM's serial console:
// console output goes to out, in goes to the console. It returns when the
// client goes away or the VM stops; the VM is never affected. Several
// attaches and the logger all see the whole output.
func (s *Service) AttachConsole(ctx context.Context, containerID string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	c, err := s.state.getContainer(containerID)
	if err != nil {
		return err
	}
	con := c.getConsole()
	if con == nil {
		return fmt.Errorf("container %s is not running: %w", containerID, errdefs.ErrFailedPrecondition)
	}
	sub, err := con.Subscribe()
	if err != nil {
		return err
	}
	defer sub.Close()
	if resize != nil {
		go func() {
			for range resize { // a serial console has no window size
			}
		}()
	}
	outDone := make(chan error, 1)
	if out != nil {
		go func() {
			_, err := io.Copy(out, sub)
			outDone <- err
		}()
	}
	if in != nil {
		go func() {
			// stdin EOF only stops input; output keeps flowing until the
			// client detaches or the VM stops.
			io.Copy(consoleWriter{con}, in)
		}()
	}
	select {
	case <-ctx.Done():
	case <-outDone:
	case <-con.Done():
	}
	return nil
}

type consoleWriter struct{ con ConsoleHandle }

func (w consoleWriter) Write(p []byte) (int, error) { return w.con.Write(p) }

// runningContainer returns a container and its record if its VM runs, else
// NotFound or a FailedPrecondition naming what (attach, exec) needs it.
func (s *Service) runningContainer(id, what string) (*container, containerRecord, error) {
	c, err := s.state.getContainer(id)
	if err != nil {
		return nil, containerRecord{}, err
	}
	rec, _ := c.snapshot()
	if rec.State != containerRunning {
		return nil, rec, fmt.Errorf("container %s is %s; %s needs a running VM: %w", rec.ID, rec.State, what, errdefs.ErrFailedPrecondition)
	}
	return c, rec, nil
}
