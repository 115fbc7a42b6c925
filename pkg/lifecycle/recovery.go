package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cni"
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
//     one whose domain runs (crash mid-start) is stopped back to CREATED,
//     and the cgroup its start made is removed;
//   - a RUNNING container whose domain still runs gets its console reader
//     and its DHCP servers back (the CRI log continues, lease renewals get
//     answers), in a pod with a cgroup_parent its QEMU's threads and
//     limits checked in the pod's cgroup (and put back), and the runner of
//     its command; one whose domain is off becomes EXITED (with its
//     command's exit code when it was stored);
//   - a domain named vmpod-* with no record whose metadata names this
//     vmpod's instance (its state directory) is destroyed and undefined;
//     other vmpods' domains on a shared libvirtd and foreign domains are
//     never touched.
//
// Recovery never keeps the daemon down: a record it cannot decode, or a
// container it cannot reconcile (libvirt refuses a call, say), is
// quarantined: logged, listed as a NOTREADY sandbox or an UNKNOWN
// container with the reason in its message, and left for removal
// (RemovePodSandbox/RemoveContainer delete it with whatever it owns).
// Everything else recovers. Only an unreadable store, or ctx ending while
// libvirtd is unreachable, fails Recover.
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
	sbRaw, err := loadRaw(c.reg.meta, store.Sandboxes)
	if err != nil {
		return fmt.Errorf("load sandboxes: %w", err)
	}
	cRaw, err := loadRaw(c.reg.meta, store.Containers)
	if err != nil {
		return fmt.Errorf("load containers: %w", err)
	}
	sandboxes, quarantined := 0, 0
	for _, r := range sbRaw {
		if c.recoverSandbox(ctx, r.key, r.value) {
			sandboxes++
		} else {
			quarantined++
		}
	}
	known := map[string]bool{}
	containers := 0
	for _, r := range cRaw {
		key, raw := r.key, r.value
		var rec ContainerRecord
		if err := json.Unmarshal(raw, &rec); err != nil || rec.ID != key {
			c.quarantineContainer(ctx, quarantinedContainer(ctx, c, key), fmt.Errorf("its record cannot be decoded: %v", err))
			known[DomainName(key)] = true // its domain is left for the removal
			quarantined++
			continue
		}
		keep, err := c.recoverContainer(ctx, rec)
		if err != nil {
			c.quarantineContainer(ctx, rec, err)
			keep = true
			quarantined++
		}
		if keep {
			known[rec.Domain] = true
			containers++
		}
	}
	if err := c.removeStrayDomains(ctx, known); err != nil {
		log.Error("removing domains without a record; they stay until the next start", logging.KeyErr, err)
	}
	log.Info("recovery done", "sandboxes", sandboxes, "containers", containers, "quarantined", quarantined)
	return nil
}

type rawRecord struct {
	key   string
	value []byte
}

// loadRaw reads every record of a bucket as bytes (decoded, and acted on,
// after the read transaction: a write inside it would wait for it).
func loadRaw(meta *store.Store, b store.Bucket) ([]rawRecord, error) {
	var out []rawRecord
	err := meta.ForEach(b, func(key string, value []byte) error {
		out = append(out, rawRecord{key, append([]byte(nil), value...)})
		return nil
	})
	return out, err
}

// recoverSandbox loads one sandbox record; false means it was quarantined
// or dropped.
func (c *Controller) recoverSandbox(ctx context.Context, key string, raw []byte) bool {
	log := logging.From(ctx).With(logging.KeySandboxID, key)
	var rec SandboxRecord
	if err := json.Unmarshal(raw, &rec); err != nil || rec.ID != key {
		rec := SandboxRecord{ID: key, NetworkDown: true, CreatedAt: c.now().UnixNano()}
		if c.net != nil && isID(key) {
			// Its removal deletes the netns (a name made of its ID).
			rec.Network, rec.NetworkDown = cni.Orphan(key), false
		}
		c.quarantineSandbox(ctx, rec, nil, fmt.Errorf("its record cannot be decoded: %v", err))
		return false
	}
	if rec.State == SandboxCreating {
		c.dropHalfCreatedSandbox(ctx, rec)
		return false
	}
	cfg, err := decodeSandboxConfig(rec.Config)
	if err != nil {
		c.quarantineSandbox(ctx, rec, nil, fmt.Errorf("its pod config cannot be decoded: %v", err))
		return false
	}
	if rec.Options == nil {
		// Validated when it ran; a record written before options were
		// stored.
		opts, err := podspec.Parse(cfg.GetAnnotations())
		if err != nil {
			log.Warn("annotations of a recovered pod sandbox no longer parse; its next containers get default options", logging.KeyErr, err)
		}
		rec.Options = &opts
	}
	c.reg.addSandbox(c.reg.newSandbox(rec, cfg))
	c.reg.reserve(rec.Name, rec.ID)
	return true
}

// quarantineSandbox keeps a sandbox vmpod could not recover as NOTREADY,
// for removal; cfg may be nil.
func (c *Controller) quarantineSandbox(ctx context.Context, rec SandboxRecord, cfg *runtimeapi.PodSandboxConfig, why error) {
	logging.From(ctx).Error("pod sandbox quarantined: it is listed as not ready and left for removal", logging.KeySandboxID, rec.ID, logging.KeyErr, why)
	if cfg == nil {
		cfg = &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{
			Name: "quarantined-" + short(rec.ID), Namespace: "vmpod-quarantine", Uid: rec.ID,
		}}
	}
	rec.State = SandboxNotReady
	if rec.Options == nil {
		rec.Options = &podspec.Options{}
	}
	c.reg.addSandbox(c.reg.newSandbox(rec, cfg))
	if rec.Name != "" {
		c.reg.reserve(rec.Name, rec.ID)
	}
}

// ContainerUnknown is the state of a container recovery quarantined: its
// record or its VM could not be reconciled. It can only be removed.
const ContainerUnknown = "UNKNOWN"

// quarantinedContainer is the record of a container whose stored record
// cannot be decoded: what can be derived from its ID, so that removing it
// removes its domain and files.
func quarantinedContainer(ctx context.Context, c *Controller, id string) ContainerRecord {
	// The CRI needs a creation time and an image (crictl refuses a status
	// without them): the time vmpod found it is the closest it knows.
	rec := ContainerRecord{ID: id, CreatedAt: c.now().UnixNano(), ImageName: "unknown", ImageRef: "unknown"}
	if !isID(id) {
		return rec
	}
	l := vm.Layout{Dir: c.ContainersDir() + "/" + id, RunDir: c.RunDir() + "/" + id[:16]}
	rec.Domain, rec.Dir, rec.RunDir, rec.RootDisk = DomainName(id), l.Dir, l.RunDir, l.RootDisk()
	// Its domain, if this vmpod made it, names its sandbox: the
	// container is then listed in its pod, and removing the pod removes
	// it.
	if xml, err := c.libvirt.XML(ctx, rec.Domain); err == nil {
		if m, found, err := libvirttools.ParseMetadata(xml); err == nil && found && m.Instance == c.reg.meta.InstanceID() && m.ContainerID == id {
			rec.SandboxID = m.SandboxID
		}
	}
	return rec
}

// quarantineContainer keeps a container vmpod could not recover as
// UNKNOWN, for removal.
func (c *Controller) quarantineContainer(ctx context.Context, rec ContainerRecord, why error) {
	logging.From(ctx).Error("container quarantined: it is listed as unknown and left for removal",
		logging.KeyContainerID, rec.ID, logging.KeyErr, why)
	cfg, err := decodeContainerConfig(rec.Config)
	if err != nil || cfg.GetMetadata() == nil {
		cfg = &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "quarantined-" + short(rec.ID)}}
	}
	rec.State, rec.Reason = ContainerUnknown, "Quarantined"
	rec.Message = fmt.Sprintf("vmpod could not recover this container after a restart (%v); remove it", why)
	c.reg.addContainer(c.reg.newContainer(rec, cfg))
	if rec.Name != "" {
		c.reg.reserve(rec.Name, rec.ID)
	}
}

// isID reports whether s is a 64-hex-digit ID (safe in a path).
func isID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

func short(id string) string { return id[:min(len(id), 12)] }

// removeStrayDomains destroys and undefines this instance's domains that
// have no record.
func (c *Controller) removeStrayDomains(ctx context.Context, known map[string]bool) error {
	log := logging.From(ctx)
	doms, err := c.libvirt.List(ctx, DomainPrefix)
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	instance := c.reg.meta.InstanceID()
	var errs []error
	for _, d := range doms {
		if known[d.Name] {
			continue
		}
		xml, err := c.libvirt.XML(ctx, d.Name)
		if err != nil {
			if !errors.Is(err, errdefs.ErrNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		if m, found, err := libvirttools.ParseMetadata(xml); err != nil || !found || m.Instance != instance {
			log.Debug("leaving a vmpod domain of another vmpod instance alone", logging.KeyDomain, d.Name, "instance", m.Instance)
			continue
		}
		log.Warn("removing a vmpod domain that has no record", logging.KeyDomain, d.Name)
		if err := c.libvirt.Destroy(ctx, d.Name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		if err := c.libvirt.Undefine(ctx, d.Name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// recoverContainer reconciles one container record; keep reports whether
// the container is still known afterwards. An error means it could not be
// reconciled (the caller quarantines it).
func (c *Controller) recoverContainer(ctx context.Context, rec ContainerRecord) (keep bool, err error) {
	log := logging.From(ctx).With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	drop := func(why string) (bool, error) {
		log.Warn("cleaning up container", "why", why)
		if err := vm.Remove(ctx, c.libvirt, rec.Domain, rec.Layout()); err != nil {
			return false, fmt.Errorf("clean up (%s): %w", why, err)
		}
		if err := c.removeCgroup(rec); err != nil {
			return false, fmt.Errorf("clean up (%s): %w", why, err)
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
	if rec.State == ContainerUnknown {
		return false, errors.New("it was quarantined before")
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
		return false, fmt.Errorf("status of its domain: %w", err)
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
				return false, fmt.Errorf("stop its half-started domain: %w", err)
			}
		}
		if rec.Cgroup != nil {
			// A start that did not finish: its cgroup goes, the next
			// start plans a new one.
			if err := c.removeCgroup(rec); err != nil {
				return false, err
			}
			if _, err := ct.Update(func(r *ContainerRecord) error { r.Cgroup = nil; return nil }); err != nil {
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
				return false, fmt.Errorf("record its exit: %w", err)
			}
		default:
			c.reattach(ctx, ct, sb)
			c.verifyPlacement(ctx, ct)
		}
	}
	c.reg.addContainer(ct)
	c.reg.reserve(rec.Name, rec.ID)
	return true, nil
}

// reattach gives a VM that kept running its console reader and its DHCP
// servers back. Failures are logged: the VM runs on, its log or lease
// renewals miss out until the next restart.
func (c *Controller) reattach(ctx context.Context, ct *container, sb *sandbox) {
	rec := ct.Get()
	log := logging.From(ctx).With(logging.KeyContainerID, rec.ID)
	con, err := c.startConsole(rec)
	if err != nil {
		log.Error("VM still running, but its console reader could not start: its log and attach are unavailable", logging.KeyErr, err)
	} else {
		ct.swapConsole(con)
		go c.watchGuestReports(ct, con)
		log.Info("VM still running; console reader reattached")
	}
	// The command's runner picks up where the last vmpod was: it waits
	// for the command, starts it, or ends the VM of one that ended.
	c.startCommandRunner(ct)
	if att := sb.Get().LiveNetwork(); att != nil && c.net != nil {
		if err := c.net.ServeDHCP(att, guestNetworkInfo(sb.config)); err != nil {
			// The guest keeps its lease; only renewals go unanswered.
			log.Error("restarting the VM's DHCP servers", logging.KeyErr, err)
		}
	}
}

// dropHalfCreatedSandbox undoes a RunPodSandbox that vmpod did not finish.
func (c *Controller) dropHalfCreatedSandbox(ctx context.Context, rec SandboxRecord) {
	log := logging.From(ctx).With(logging.KeySandboxID, rec.ID)
	log.Warn("cleaning up a pod sandbox vmpod stopped while creating", logging.KeyPod, rec.Name)
	if rec.Network != nil && c.net != nil {
		if err := c.net.Teardown(ctx, rec.Network); err != nil {
			// Best effort, like a failed RunPodSandbox's cleanup.
			log.Error("tearing down the network of a half-created pod sandbox; IPs or rules its CNI plugins hold may be left", logging.KeyErr, err)
		}
	}
	if err := c.reg.meta.Delete(store.Sandboxes, rec.ID); err != nil {
		log.Error("deleting the record of a half-created pod sandbox; the next start tries again", logging.KeyErr, err)
	}
}
