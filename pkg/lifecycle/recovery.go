package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/podspec"
	"github.com/vmpod/vmpod/pkg/store"
	"github.com/vmpod/vmpod/pkg/vm"
)

// Recover rebuilds the runtime state from the metadata store and libvirt
// after a start (clean or after kill -9), before the daemon serves calls:
//
//   - sandboxes and containers are loaded and their names reserved again;
//     a sandbox record from before options were stored gets its options
//     parsed from its config;
//   - a CREATING sandbox (crash mid-RunPodSandbox) has its network torn
//     down (netns, CNI DEL, taps) and its record removed;
//   - a CREATING container (crash mid-create) is cleaned up: domain, disks,
//     sockets and record;
//   - a CREATED container whose domain is gone is cleaned up the same way;
//     one whose domain runs (crash mid-start) is stopped back to CREATED;
//   - a RUNNING container whose domain still runs gets its console reader
//     and its DHCP servers back (the CRI log continues, lease renewals get
//     answers); one whose domain is off becomes EXITED;
//   - a domain named vmpod-* with no record whose metadata names this
//     vmpod's instance (its state directory) is destroyed and undefined;
//     other vmpods' domains on a shared libvirtd and foreign domains are
//     never touched.
//
// It waits for libvirtd while it is unreachable, until ctx is done.
func (c *Controller) Recover(ctx context.Context) error {
	log := c.log.With("phase", "recovery")
	ctx = logging.With(ctx, log)
	for {
		if _, err := c.libvirt.Ping(ctx); err == nil {
			break
		} else {
			log.Warn("waiting for libvirt before recovering VMs", logging.KeyErr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	sbRecs, err := store.List[SandboxRecord](c.reg.meta, store.Sandboxes)
	if err != nil {
		return fmt.Errorf("load sandboxes: %w", err)
	}
	for _, rec := range sbRecs {
		if rec.State == SandboxCreating {
			if err := c.dropHalfCreatedSandbox(ctx, rec); err != nil {
				return fmt.Errorf("clean up sandbox %s: %w", rec.ID, err)
			}
			continue
		}
		cfg, err := decodeSandboxConfig(rec.Config)
		if err != nil {
			return fmt.Errorf("decode sandbox %s: %w", rec.ID, err)
		}
		if rec.Options == nil {
			// Validated when it ran; a record written before options were
			// stored.
			opts, err := podspec.Parse(cfg.GetAnnotations())
			if err != nil {
				log.Warn("annotations of a recovered pod sandbox no longer parse; its next containers get default options",
					logging.KeySandboxID, rec.ID, logging.KeyErr, err)
			}
			rec.Options = &opts
		}
		c.reg.addSandbox(c.reg.newSandbox(rec, cfg))
		c.reg.reserve(rec.Name, rec.ID)
	}
	cRecs, err := store.List[ContainerRecord](c.reg.meta, store.Containers)
	if err != nil {
		return fmt.Errorf("load containers: %w", err)
	}
	known := map[string]bool{}
	for _, rec := range cRecs {
		keep, err := c.recoverContainer(ctx, rec)
		if err != nil {
			return fmt.Errorf("recover container %s: %w", rec.ID, err)
		}
		if keep {
			known[rec.Domain] = true
		}
	}
	if err := c.removeStrayDomains(ctx, known); err != nil {
		return err
	}
	log.Info("recovery done", "sandboxes", len(sbRecs), "containers", len(known))
	return nil
}

// removeStrayDomains destroys and undefines this instance's domains that
// have no record.
func (c *Controller) removeStrayDomains(ctx context.Context, known map[string]bool) error {
	log := logging.From(ctx)
	doms, err := c.libvirt.List(ctx, DomainPrefix)
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	instance := c.reg.meta.InstanceID()
	for _, d := range doms {
		if known[d.Name] {
			continue
		}
		xml, err := c.libvirt.XML(ctx, d.Name)
		if err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				continue
			}
			return err
		}
		if m, found, err := libvirttools.ParseMetadata(xml); err != nil || !found || m.Instance != instance {
			log.Debug("leaving a vmpod domain of another vmpod instance alone", logging.KeyDomain, d.Name, "instance", m.Instance)
			continue
		}
		log.Warn("removing a vmpod domain that has no record", logging.KeyDomain, d.Name)
		if err := c.libvirt.Destroy(ctx, d.Name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
		if err := c.libvirt.Undefine(ctx, d.Name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
	}
	return nil
}

// recoverContainer reconciles one container record; keep reports whether
// the container is still known afterwards.
func (c *Controller) recoverContainer(ctx context.Context, rec ContainerRecord) (keep bool, err error) {
	log := logging.From(ctx).With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	drop := func(why string) (bool, error) {
		log.Warn("cleaning up container", "why", why)
		if err := vm.Remove(ctx, c.libvirt, rec.Domain, rec.Layout()); err != nil {
			return false, err
		}
		return false, c.reg.meta.Delete(store.Containers, rec.ID)
	}
	sb, err := c.reg.sandbox(rec.SandboxID)
	if err != nil {
		return drop("its pod sandbox is gone")
	}
	if rec.State == ContainerCreating {
		return drop("vmpod stopped while creating it")
	}
	cfg, err := decodeContainerConfig(rec.Config)
	if err != nil {
		return false, fmt.Errorf("decode config: %w", err)
	}
	ct := c.reg.newContainer(rec, cfg)
	// Containers made by an older vmpod had world-readable directories.
	if owner, err := c.qemuOwner(ctx, rec.VM.DomainType); err != nil {
		log.Warn("cannot tighten the modes of the VM's files", logging.KeyErr, err)
	} else if err := rec.Layout().Tighten(owner.GID); err != nil {
		log.Warn("cannot tighten the modes of the VM's files", logging.KeyErr, err)
	}
	st, err := c.libvirt.Status(ctx, rec.Domain)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return false, err
	}
	missing := errors.Is(err, errdefs.ErrNotFound)
	switch rec.State {
	case ContainerCreated:
		if missing {
			return drop("its domain is gone")
		}
		if st.State != libvirttools.DomainShutoff {
			log.Warn("vmpod stopped while starting it; stopping the domain back to created")
			if err := c.libvirt.Destroy(ctx, rec.Domain); err != nil {
				return false, err
			}
		}
	case ContainerRunning:
		if missing {
			st = libvirttools.DomainStatus{State: libvirttools.DomainShutoff, Reason: libvirttools.ShutoffDestroyed}
		}
		switch st.State {
		case libvirttools.DomainShutoff, libvirttools.DomainCrashed:
			if err := c.markExitedOpLocked(ctx, ct, st); err != nil {
				return false, err
			}
		default:
			con, err := c.startConsole(rec)
			if err != nil {
				return false, err
			}
			ct.swapConsole(con)
			go c.watchGuestReports(ct, con)
			log.Info("VM still running; console reader reattached")
			if att := sb.Get().LiveNetwork(); att != nil && c.net != nil {
				if err := c.net.ServeDHCP(att, guestNetworkInfo(sb.config)); err != nil {
					// The guest keeps its lease; only renewals go unanswered.
					log.Error("restarting the VM's DHCP servers", logging.KeyErr, err)
				}
			}
		}
	}
	c.reg.addContainer(ct)
	c.reg.reserve(rec.Name, rec.ID)
	return true, nil
}

// dropHalfCreatedSandbox undoes a RunPodSandbox that vmpod did not finish.
func (c *Controller) dropHalfCreatedSandbox(ctx context.Context, rec SandboxRecord) error {
	logging.From(ctx).Warn("cleaning up a pod sandbox vmpod stopped while creating", logging.KeySandboxID, rec.ID, logging.KeyPod, rec.Name)
	if rec.Network != nil && c.net != nil {
		if err := c.net.Teardown(ctx, rec.Network); err != nil {
			// Best effort, like a failed RunPodSandbox's cleanup.
			logging.From(ctx).Error("tearing down the network of a half-created pod sandbox; IPs or rules its CNI plugins hold may be left",
				logging.KeySandboxID, rec.ID, logging.KeyErr, err)
		}
	}
	return c.reg.meta.Delete(store.Sandboxes, rec.ID)
}
