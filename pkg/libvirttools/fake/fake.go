// Package fake is an in-memory libvirttools.Connection for unit tests. It
// records calls and can be switched "down" to simulate a dead libvirtd.
package fake

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// Connection is a fake libvirttools.Connection.
type Connection struct {
	mu    sync.Mutex
	down  bool
	calls []string
}

var _ libvirttools.Connection = (*Connection)(nil)

// New returns a fake connection that is up.
func New() *Connection { return &Connection{} }

// SetDown makes every call fail as if libvirtd were unreachable.
func (c *Connection) SetDown(down bool) {
	c.mu.Lock()
	c.down = down
	c.mu.Unlock()
}

// Calls returns the names of the calls made so far.
func (c *Connection) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

// Ping implements libvirttools.Connection.
func (c *Connection) Ping(ctx context.Context) (libvirttools.Info, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "Ping")
	if c.down {
		return libvirttools.Info{}, fmt.Errorf("fake libvirt is down: %w", errdefs.ErrUnavailable)
	}
	return libvirttools.Info{URI: "test:///fake", LibvirtVersion: "9.0.0", Hypervisor: "QEMU"}, nil
}

// Close implements libvirttools.Connection.
func (c *Connection) Close() error { return nil }
