package fake

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// The QEMU process behind the fake's domains: who it runs as, its pid.

// QEMUOwner implements libvirttools.Connection. It is not recorded in
// Calls (it is a read of libvirt's configuration, not of a domain).
func (c *Connection) QEMUOwner(ctx context.Context, domainType string) (libvirttools.Owner, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return libvirttools.Owner{}, fmt.Errorf("QEMUOwner: fake libvirt is down: %w", errdefs.ErrUnavailable)
	}
	return c.owner, ctx.Err()
}

// QEMUPID implements libvirttools.Connection: a running domain's pid is
// the one SetQEMUPID gave it, else 100000 plus its place in the order the
// domains were defined. Not recorded in Calls.
func (c *Connection) QEMUPID(ctx context.Context, name string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.domains[name]
	if !ok || !d.active() {
		return 0, fmt.Errorf("domain %s has no QEMU process: %w", name, errdefs.ErrNotFound)
	}
	if pid, ok := c.pids[name]; ok {
		return pid, nil
	}
	return 100000 + d.seq, nil
}

// SetQEMUPID sets the pid QEMUPID reports for a domain.
func (c *Connection) SetQEMUPID(name string, pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pids == nil {
		c.pids = map[string]int{}
	}
	c.pids[name] = pid
}

// SetQEMUOwner sets what QEMUOwner reports.
func (c *Connection) SetQEMUOwner(o libvirttools.Owner) {
	c.mu.Lock()
	c.owner = o
	c.mu.Unlock()
}
