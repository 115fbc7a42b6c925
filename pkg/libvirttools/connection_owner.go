package libvirttools

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Owner is the user and group QEMU processes run as (libvirt's DAC
// security model), as numeric IDs.
type Owner struct {
	UID, GID int
}

// parseQEMUOwner reads QEMU's user and group from a capabilities document:
// the DAC security model's base label for domainType ("+64055:+64055").
func parseQEMUOwner(capsXML, domainType string) (Owner, error) {
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(capsXML); err != nil {
		return Owner{}, fmt.Errorf("parse libvirt capabilities: %w", err)
	}
	for _, sm := range caps.Host.SecModel {
		if sm.Name != "dac" {
			continue
		}
		for _, bl := range sm.Labels {
			if bl.Type != domainType {
				continue
			}
			uid, gid, ok := strings.Cut(bl.Value, ":")
			u, uerr := strconv.Atoi(strings.TrimPrefix(uid, "+"))
			g, gerr := strconv.Atoi(strings.TrimPrefix(gid, "+"))
			if !ok || uerr != nil || gerr != nil || u < 0 || g < 0 {
				return Owner{}, fmt.Errorf("libvirt's DAC base label %q for %s is not +UID:+GID: %w", bl.Value, domainType, errdefs.ErrInternal)
			}
			return Owner{UID: u, GID: g}, nil
		}
	}
	return Owner{}, fmt.Errorf("libvirt reports no DAC security model for %s domains, so vmpod cannot tell which group QEMU runs as: %w", domainType, errdefs.ErrFailedPrecondition)
}

// QEMUOwner implements Connection.
func (l *Libvirt) QEMUOwner(ctx context.Context, domainType string) (Owner, error) {
	var doc string
	err := l.do(ctx, "get capabilities", l.timeout, retrySafe, func(c *libvirt.Connect) error {
		var err error
		doc, err = c.GetCapabilities()
		return err
	})
	if err != nil {
		return Owner{}, err
	}
	return parseQEMUOwner(doc, domainType)
}

// QEMUOwner implements Connection.
func (p *Pair) QEMUOwner(ctx context.Context, domainType string) (Owner, error) {
	return p.quick.QEMUOwner(ctx, domainType)
}
