package fake

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// FakeMemory is the migration stream of the fake's save images: the
// domain's name follows it.
const FakeMemory = "fake-memory-of:"

// Save implements libvirttools.Domains: it writes a save image in
// libvirt's format (the running definition in its header, FakeMemory and
// the name as its stream) and shuts the domain off with reason other, as
// libvirt reports "saved".
func (c *Connection) Save(ctx context.Context, name, path string, timeout time.Duration) error {
	return c.run(ctx, "Save", timeout, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "Save", name); err != nil {
			return err
		}
		d, err := c.lookupLocked("save domain", name)
		if err != nil {
			return err
		}
		if !d.active() {
			return fmt.Errorf("save domain %q: domain is not running: %w", name, errdefs.ErrFailedPrecondition)
		}
		var b bytes.Buffer
		if err := libvirttools.WriteSaveImage(&b, d.live, "<cookie/>", len(d.live)+64<<10, []byte(FakeMemory+name)); err != nil {
			return err
		}
		if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
			return fmt.Errorf("save domain %q: %w", name, err)
		}
		c.stopLocked(d, libvirttools.ShutoffOther)
		return nil
	})
}

// Restore implements libvirttools.Domains: the domain the image's header
// names must be defined with the header's UUID and be shut off, as for
// libvirt's restore of a persistent domain.
func (c *Connection) Restore(ctx context.Context, path string, paused bool, timeout time.Duration) error {
	return c.run(ctx, "Restore", timeout, func() error {
		xml, err := libvirttools.SaveImageXML(path)
		var def libvirtxml.Domain
		if err == nil {
			err = def.Unmarshal(xml)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		args := []string{def.Name}
		if paused {
			args = append(args, "paused")
		}
		if err := c.begin(ctx, "Restore", args...); err != nil {
			return err
		}
		if err != nil {
			return fmt.Errorf("restore domain from %s: %w", path, err)
		}
		d, err := c.lookupLocked("restore domain", def.Name)
		if err != nil {
			return err
		}
		if uuid, _ := canonicalUUID(def.UUID); uuid != d.uuid {
			return fmt.Errorf("restore domain %q: the image's uuid %s is not the domain's %s: %w", def.Name, def.UUID, d.uuid, errdefs.ErrInvalidArgument)
		}
		if d.active() {
			return fmt.Errorf("restore domain %q: domain is already active: %w", def.Name, errdefs.ErrFailedPrecondition)
		}
		d.live = xml
		state := libvirttools.DomainRunning
		if paused {
			state = libvirttools.DomainPaused
		}
		c.setStateLocked(d, state, libvirttools.ShutoffUnknown)
		return nil
	})
}
