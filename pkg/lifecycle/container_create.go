package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/podspec"
	"github.com/vmpod/vmpod/pkg/rollback"
	"github.com/vmpod/vmpod/pkg/vm"
	"github.com/vmpod/vmpod/pkg/volumes"
)

// CreateContainer defines the pod's VM: a qcow2 overlay over the pulled
// image as root disk, a cloud-init seed and a persistent libvirt domain.
// The VM's shape comes from the pod's options (parsed by RunSandbox),
// with the container's own vmpod.dev/* annotations parsed over them. A
// sandbox runs one VM at a time: while another container of it is not
// EXITED, creating one fails with FailedPrecondition. After it exited, the
// kubelet's next attempt boots from a fresh overlay (the root disk is
// ephemeral, like a container's writable layer). A container with a
// command or args runs them as its main process once the VM boots
// (container_command.go). The work outlasts ctx: a retry with the same
// name gets its result.
func (c *Controller) CreateContainer(ctx context.Context, sandboxID string, cfg *runtimeapi.ContainerConfig) (string, error) {
	if cfg.GetMetadata().GetName() == "" {
		return "", fmt.Errorf("CreateContainer: container metadata name is required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.GetImage().GetImage() == "" {
		return "", fmt.Errorf("CreateContainer: image is required: %w", errdefs.ErrInvalidArgument)
	}
	sb, err := c.reg.sandbox(sandboxID)
	if err != nil {
		return "", err
	}
	opts, err := sb.options().Merge(cfg.GetAnnotations())
	if err != nil {
		return "", err
	}
	name := containerName(cfg.GetMetadata(), sb.config.GetMetadata())
	return c.pending.Run(ctx, name, func(ctx context.Context) (string, error) {
		ctx, cancel := c.detached(ctx)
		defer cancel()
		return c.createContainer(ctx, sb, name, cfg, opts)
	})
}

// options are the sandbox's parsed pod options.
func (sb *sandbox) options() podspec.Options {
	if o := sb.Get().Options; o != nil {
		return *o
	}
	return podspec.Options{}
}

func (c *Controller) createContainer(ctx context.Context, sb *sandbox, name string, cfg *runtimeapi.ContainerConfig, opts podspec.Options) (_ string, retErr error) {
	// The sandbox's op lock makes "no other live VM" and the creation one
	// step.
	sb.op.Lock()
	defer sb.op.Unlock()
	if !c.reg.isSandbox(sb) {
		return "", fmt.Errorf("pod sandbox %s was removed: %w", sb.Get().ID, errdefs.ErrNotFound)
	}
	sbRec := sb.Get()
	if sbRec.State != SandboxReady {
		return "", fmt.Errorf("pod sandbox %s is %s; create containers only in a ready sandbox: %w", sbRec.ID, sbRec.State, errdefs.ErrFailedPrecondition)
	}
	for _, other := range c.reg.containersOf(sbRec.ID) {
		if o := other.view(); o.State != ContainerExited {
			return "", fmt.Errorf("container %s (%s) of pod sandbox %s is %s; a VM pod runs one VM at a time, so stop it before creating another: %w",
				o.ID, o.Config.GetMetadata().GetName(), sbRec.ID, o.State, errdefs.ErrFailedPrecondition)
		}
	}
	archive, err := c.checkpointArchive(cfg.GetImage().GetImage())
	if err != nil {
		return "", err
	}
	if archive != "" {
		return c.restoreContainer(ctx, sb, name, cfg, archive, archive)
	}
	img, err := c.images.Get(cfg.GetImage().GetImage())
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return "", fmt.Errorf("image %q is not pulled; pull it first (crictl pull, or the kubelet's image pull): %w", cfg.GetImage().GetImage(), errdefs.ErrNotFound)
		}
		return "", err
	}
	if img.Format == image.FormatCheckpoint {
		// A checkpoint image: its file is the archive, verified when it
		// was pulled and again as it is extracted.
		named := cfg.GetImage().GetUserSpecifiedImage()
		if named == "" {
			named = cfg.GetImage().GetImage()
		}
		return c.restoreContainer(ctx, sb, name, cfg, c.images.Path(img.ID), fmt.Sprintf("image %s (%s)", named, img.ID))
	}
	h, err := c.cfg.ResolveHandler(sbRec.Handler)
	if err != nil {
		return "", err
	}
	shape, err := podspec.ResolveShape(h, c.cfg.DefaultMemoryMiB, podspec.LimitsOf(c.cfg), opts.VM, cfg.GetLinux().GetResources(), sb.config.GetLinux().GetCgroupParent(), img.VirtualSize)
	if err != nil {
		return "", err
	}
	// Everything that can be refused is worked out before anything is
	// created: mounts, devices and the cloud-init seed.
	mounts, err := volumes.Resolve(cfg, c.volumeOptions())
	if err != nil {
		return "", err
	}
	seed, err := buildSeed(sbRec, sb.config, cfg, mounts, opts.CloudInit)
	if err != nil {
		return "", err
	}
	command, err := newCommandState(cfg)
	if err != nil {
		return "", err
	}
	var warm *WarmStartState
	if key := c.warmStartKey(h, opts, sbRec, sb.config, cfg, img, shape, mounts, command); key != "" {
		if c.hasTemplate(img.ID, key) {
			return c.createFromTemplate(ctx, sb, name, cfg, img, key, seed)
		}
		warm = &WarmStartState{Key: key, Marker: opts.WarmStart.Marker}
	}

	id := newID()
	log := logging.From(ctx).With(logging.KeyContainerID, id, logging.KeySandboxID, sbRec.ID, logging.KeyDomain, DomainName(id))
	var undo rollback.Steps
	defer func() { undo.Run(ctx, log, retErr) }()
	ct, err := c.beginCreate(sb, name, cfg, id, func(r *ContainerRecord) {
		r.ImageRef, r.ImageDisk, r.VM, r.Command, r.WarmStart = img.ID, img.Disk(), shape, command, warm
	}, &undo, &retErr)
	if err != nil {
		return "", err
	}
	defer ct.op.Unlock()
	rec := ct.Get()
	layout := rec.Layout()
	failpoint.Hit("create/record-stored")

	owner, err := c.qemuOwner(ctx, shape.DomainType)
	if err != nil {
		return "", err
	}
	if err := layout.Create(owner.GID); err != nil {
		return "", fmt.Errorf("create container directory: %w", err)
	}
	failpoint.Hit("create/dir-created")
	tctx, cancel := c.toolContext(ctx)
	err = c.overlays.Create(tctx, rec.RootDisk, c.images.Path(img.ID), img.Format, shape.RootVolumeSize)
	cancel()
	if err != nil {
		return "", fmt.Errorf("create root disk for %s: %w", id, toolErr(tctx, err))
	}
	if err := os.Chmod(rec.RootDisk, vm.FileMode); err != nil {
		return "", fmt.Errorf("create root disk for %s: %w", id, err)
	}
	failpoint.Hit("create/overlay-created")
	seedStart := time.Now()
	tctx, cancel = c.toolContext(ctx)
	err = cloudinit.WriteISO(tctx, seed, layout.SeedISO())
	cancel()
	if err != nil {
		return "", fmt.Errorf("write cloud-init seed for %s: %w", id, toolErr(tctx, err))
	}
	failpoint.Hit("create/seed-written")
	log.Debug("cloud-init seed written", "label", seed.Label, "seconds", fmt.Sprintf("%.3f", time.Since(seedStart).Seconds()))
	xml, err := vm.Domain(c.vmSpec(rec, sbRec, sb.config, mounts))
	if err != nil {
		return "", fmt.Errorf("build domain for %s: %w", id, err)
	}
	log.Debug("domain XML", "xml", xml)
	if err := c.libvirt.Define(ctx, xml); err != nil {
		return "", fmt.Errorf("define domain %s: %w", rec.Domain, err)
	}
	failpoint.Hit("create/domain-defined")
	if _, err := ct.Update(func(r *ContainerRecord) error { r.State = ContainerCreated; return nil }); err != nil {
		return "", fmt.Errorf("store container record: %w", err)
	}
	failpoint.Hit("create/created")
	log.Info("container created", "image", img.ID, "vcpus", shape.VCPUs, "memory_bytes", shape.MemoryBytes, "domain_type", shape.DomainType)
	return id, nil
}

// beginCreate starts the create of container name in sb under id: it
// reserves the name and stores the container's CREATING record, whose
// identity, log path, directories and configs it fills in before fill
// adds the rest, and makes the container a member with its op lock held
// (the create is its first operation: a RemoveContainer that finds it
// waits until it is done, then removes what it made). The CREATING record
// goes first, so a crash at any later point leaves a trace that start-up
// recovery cleans up. undo gets the name's release and the container's
// removal (dropFailedCreate, *cause being the create's error by then).
// The caller unlocks ct.op.
func (c *Controller) beginCreate(sb *sandbox, name string, cfg *runtimeapi.ContainerConfig, id string, fill func(*ContainerRecord), undo *rollback.Steps, cause *error) (*container, error) {
	if err := c.reg.reserve(name, id); err != nil {
		return nil, fmt.Errorf("container %s: %w", name, err)
	}
	undo.Add("the name "+name, func(context.Context) error { c.reg.release(name, id); return nil })
	raw, err := encodeContainerConfig(cfg)
	if err != nil {
		return nil, err
	}
	resRaw, err := encodeResources(cfg.GetLinux().GetResources())
	if err != nil {
		return nil, err
	}
	logPath := ""
	if cfg.GetLogPath() != "" {
		logPath = filepath.Join(sb.config.GetLogDirectory(), cfg.GetLogPath())
	}
	layout := vm.Layout{Dir: filepath.Join(c.ContainersDir(), id), RunDir: filepath.Join(c.RunDir(), id[:16])}
	rec := ContainerRecord{
		ID: id, SandboxID: sb.Get().ID, Name: name, State: ContainerCreating,
		ImageName: cfg.GetImage().GetImage(), LogPath: logPath,
		Domain: DomainName(id), Dir: layout.Dir, RunDir: layout.RunDir,
		RootDisk: layout.RootDisk(), CreatedAt: c.now().UnixNano(), Config: raw, Resources: resRaw,
	}
	fill(&rec)
	ct := c.reg.newContainer(rec, cfg)
	ct.op.Lock()
	if err := ct.save(rec); err != nil {
		ct.op.Unlock()
		return nil, fmt.Errorf("store container record: %w", err)
	}
	c.reg.addContainer(ct)
	undo.Add("container "+id, func(ctx context.Context) error { return c.dropFailedCreate(ctx, ct, *cause) })
	return ct, nil
}

// newCommandState checks the container's command (nil when it has none)
// and returns its initial state.
func newCommandState(cfg *runtimeapi.ContainerConfig) (*CommandState, error) {
	cmd := guestCommand(cfg, "")
	if cmd == nil {
		return nil, nil
	}
	if err := cmd.Validate(); err != nil {
		return nil, fmt.Errorf("CreateContainer: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	nonce, err := guest.NewNonce()
	if err != nil {
		return nil, err
	}
	return &CommandState{Nonce: nonce}, nil
}

// dropFailedCreate undoes a failed create: its domain, disks, sockets and
// record. When the resources cannot be removed, the container is kept as
// EXITED, visible and removable: the kubelet lists and removes it, and
// RemoveContainer retries the cleanup.
func (c *Controller) dropFailedCreate(ctx context.Context, ct *container, cause error) error {
	rec := ct.Get()
	if err := vm.Remove(ctx, c.libvirt, rec.Domain, rec.Layout()); err != nil {
		_, serr := ct.Update(func(r *ContainerRecord) error {
			r.State = ContainerExited
			r.ExitCode, r.Reason = vm.ExitError, vm.ReasonError
			r.Message = fmt.Sprintf("creation failed (%v) and its cleanup failed (%v); remove the container to retry the cleanup", cause, err)
			r.FinishedAt = c.now().UnixNano()
			return nil
		})
		return errors.Join(fmt.Errorf("the container is kept as exited until it is removed: %w", err), serr)
	}
	return c.reg.removeContainer(ct)
}

// volumeOptions say how the container's directories are shared.
func (c *Controller) volumeOptions() volumes.Options {
	return volumes.Options{ShareType: c.cfg.SharedDirType, ReadOnlyVirtiofsd: c.roVirtiofsd}
}
