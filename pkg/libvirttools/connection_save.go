package libvirttools

import (
	"context"
	"time"

	"libvirt.org/go/libvirt"
)

// Save implements Domains. The save runs with its own deadline (the
// memory is written at disk speed): timeout, or slowTimeout when 0.
func (l *Libvirt) Save(ctx context.Context, name, path string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = l.slowTimeout()
	}
	return l.withDomain(ctx, "save domain", name, timeout, 0, func(dom *libvirt.Domain) error {
		// Save, not SaveFlags: the binding passes SaveFlags' XML as "" (not
		// NULL), which libvirt parses and refuses. The restore says
		// whether the vCPUs run.
		return dom.Save(path)
	})
}

// Restore implements Domains.
func (l *Libvirt) Restore(ctx context.Context, path string, paused bool, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = l.slowTimeout()
	}
	flags := libvirt.DOMAIN_SAVE_RUNNING
	if paused {
		flags = libvirt.DOMAIN_SAVE_PAUSED
	}
	return l.do(ctx, "restore domain from "+path, timeout, 0, func(c *libvirt.Connect) error {
		return c.DomainRestoreFlags(path, "", flags)
	})
}

// Save implements Domains; saves and restores use the slow connection.
func (p *Pair) Save(ctx context.Context, name, path string, timeout time.Duration) error {
	return p.slow.Save(ctx, name, path, timeout)
}

// Restore implements Domains.
func (p *Pair) Restore(ctx context.Context, path string, paused bool, timeout time.Duration) error {
	return p.slow.Restore(ctx, path, paused, timeout)
}
