package cri

import (
	"context"
	"fmt"
	"time"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/store"
)

// Recover rebuilds the runtime state from the metadata store and libvirt
// after a start (clean or after kill -9), before the readiness gate opens:
//
//   - sandboxes and containers are loaded and their names reserved again;
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
func (s *Service) Recover(ctx context.Context) error {
	log := s.log.With("phase", "recovery")
	ctx = logging.With(ctx, log)
	for {
		if _, err := s.libvirt.Ping(ctx); err == nil {
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
	sbRecs, err := store.List[sandboxRecord](s.state.meta, store.Sandboxes)
	if err != nil {
		return fmt.Errorf("load sandboxes: %w", err)
	}
	for _, rec := range sbRecs {
		if rec.State == sandboxCreating {
			if err := s.dropHalfCreatedSandbox(ctx, rec); err != nil {
				return fmt.Errorf("clean up sandbox %s: %w", rec.ID, err)
			}
			continue
		}
		cfg, err := decodeSandboxConfig(rec.Config)
		if err != nil {
			return fmt.Errorf("decode sandbox %s: %w", rec.ID, err)
		}
		s.state.addSandbox(&sandbox{rec: rec, config: cfg})
		s.state.reserve(rec.Name, rec.ID)
	}
	cRecs, err := store.List[containerRecord](s.state.meta, store.Containers)
	if err != nil {
		return fmt.Errorf("load containers: %w", err)
	}
	known := map[string]bool{}
	for _, rec := range cRecs {
		keep, err := s.recoverContainer(ctx, rec)
		if err != nil {
			return fmt.Errorf("recover container %s: %w", rec.ID, err)
		}
		if keep {
			known[rec.Domain] = true
		}
	}
	doms, err := s.libvirt.List(ctx, domainPrefix)
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	instance := s.state.meta.InstanceID()
	for _, d := range doms {
		if known[d.Name] {
			continue
		}
		xml, err := s.libvirt.XML(ctx, d.Name)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return err
		}
		if m, found, err := libvirttools.ParseMetadata(xml); err != nil || !found || m.Instance != instance {
			log.Debug("leaving a vmpod domain of another vmpod instance alone", logging.KeyDomain, d.Name, "instance", m.Instance)
			continue
		}
		log.Warn("removing a vmpod domain that has no record", logging.KeyDomain, d.Name)
		if err := s.libvirt.Destroy(ctx, d.Name); err != nil && !isNotFound(err) {
			return err
		}
		if err := s.libvirt.Undefine(ctx, d.Name); err != nil && !isNotFound(err) {
			return err
		}
	}
	log.Info("recovery done", "sandboxes", len(sbRecs), "containers", len(known))
	return nil
}

// recoverContainer reconciles one container record; keep reports whether
// the container is still known afterwards.
func (s *Service) recoverContainer(ctx context.Context, rec containerRecord) (keep bool, err error) {
	log := logging.From(ctx).With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	drop := func(why string) (bool, error) {
		log.Warn("cleaning up container", "why", why)
		if err := s.destroyContainerResources(ctx, rec); err != nil {
			return false, err
		}
		return false, s.state.meta.Delete(store.Containers, rec.ID)
	}
	if _, err := s.state.getSandbox(rec.SandboxID); err != nil {
		return drop("its pod sandbox is gone")
	}
	if rec.State == containerCreating {
		return drop("vmpod stopped while creating it")
	}
	cfg, err := decodeContainerConfig(rec.Config)
	if err != nil {
		return false, fmt.Errorf("decode config: %w", err)
	}
	c := &container{rec: rec, config: cfg}
	st, err := s.libvirt.Status(ctx, rec.Domain)
	if err != nil && !isNotFound(err) {
		return false, err
	}
	missing := isNotFound(err)
	switch rec.State {
	case containerCreated:
		if missing {
			return drop("its domain is gone")
		}
		if st.State != libvirttools.DomainShutoff {
			log.Warn("vmpod stopped while starting it; stopping the domain back to created")
			if err := s.libvirt.Destroy(ctx, rec.Domain); err != nil {
				return false, err
			}
		}
	case containerRunning:
		if missing {
			st = libvirttools.DomainStatus{State: libvirttools.DomainShutoff, Reason: libvirttools.ShutoffDestroyed}
		}
		switch st.State {
		case libvirttools.DomainShutoff, libvirttools.DomainCrashed:
			if err := s.markExitedOpLocked(ctx, c, st); err != nil {
				return false, err
			}
		default:
			con, err := s.startConsole(rec, log)
			if err != nil {
				return false, err
			}
			c.console = con
			log.Info("VM still running; console reader reattached")
			if err := s.restoreDHCP(rec); err != nil {
				// The guest keeps its lease; only renewals go unanswered.
				log.Error("restarting the VM's DHCP servers", logging.KeyErr, err)
			}
		}
	}
	s.state.addContainer(c)
	s.state.reserve(rec.Name, rec.ID)
	return true, nil
}

// dropHalfCreatedSandbox undoes a RunPodSandbox that vmpod did not finish.
func (s *Service) dropHalfCreatedSandbox(ctx context.Context, rec sandboxRecord) error {
	logging.From(ctx).Warn("cleaning up a pod sandbox vmpod stopped while creating", logging.KeySandboxID, rec.ID, logging.KeyPod, rec.Name)
	if rec.Network != nil && s.net != nil {
		if err := s.net.Teardown(ctx, rec.Network); err != nil {
			// Best effort, like a failed RunPodSandbox's cleanup.
			logging.From(ctx).Error("tearing down the network of a half-created pod sandbox; IPs or rules its CNI plugins hold may be left",
				logging.KeySandboxID, rec.ID, logging.KeyErr, err)
		}
	}
	return s.state.meta.Delete(store.Sandboxes, rec.ID)
}

// restoreDHCP restarts the DHCP servers of a running VM's pod.
func (s *Service) restoreDHCP(rec containerRecord) error {
	sb, err := s.state.getSandbox(rec.SandboxID)
	if err != nil {
		return err
	}
	sb.mu.Lock()
	att, cfg := sandboxNetwork(sb.rec), sb.config
	sb.mu.Unlock()
	if att == nil || s.net == nil {
		return nil
	}
	return s.net.ServeDHCP(att, guestNetworkInfo(cfg))
}
