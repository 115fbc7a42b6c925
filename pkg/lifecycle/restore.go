package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/checkpoint"
	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/rollback"
	"github.com/vmpod/vmpod/pkg/vm"
	"github.com/vmpod/vmpod/pkg/volumes"
)

// RestoreState says a container is a checkpoint restored into a new pod
// (restore.go): StartContainer restores its memory instead of booting.
type RestoreState struct {
	// From is the archive it was restored from: its path, or the
	// checkpoint image as "NAME (ID)".
	From string `json:"from"`
	// MemoryFile is the save image StartContainer restores (removed once
	// the VM runs).
	MemoryFile string `json:"memory_file"`
	// MACs are the guest's interfaces as [saved MAC, new pod's MAC], in
	// order: once the guest agent answers, vmpod gives each interface its
	// new MAC and has the guest renew its DHCP lease.
	MACs [][2]string `json:"macs,omitempty"`
	// Hostname, when set, is given to the guest once its agent answers
	// (a warm start: the template's guest has its first pod's name).
	Hostname string `json:"hostname,omitempty"`
}

// restoreSlack is what a save image holds beyond the guest's RAM: its
// header and QEMU's device state.
const restoreSlack = 256 << 20

// checkpointArchive returns the checkpoint archive an image name names:
// an absolute path (CRI-O's convention for restoring from a local
// archive), "" for any other image name. The path must be a regular file
// inside one of checkpoint_restore_dirs once symlinks are resolved:
// image names come from pod specs, and an archive holds a guest's memory.
func (c *Controller) checkpointArchive(image string) (string, error) {
	if !strings.HasPrefix(image, "/") {
		return "", nil
	}
	real, err := filepath.EvalSymlinks(filepath.Clean(image))
	if err != nil {
		return "", fmt.Errorf("checkpoint archive %s: %v: %w", image, err, errdefs.ErrNotFound)
	}
	for _, d := range c.cfg.CheckpointRestoreDirList() {
		rd, err := filepath.EvalSymlinks(d)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(rd, real); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			st, err := os.Stat(real)
			if err != nil || !st.Mode().IsRegular() {
				return "", fmt.Errorf("checkpoint archive %s is not a regular file: %w", image, errdefs.ErrInvalidArgument)
			}
			return real, nil
		}
	}
	return "", fmt.Errorf("image %q is a path, which vmpod reads as a checkpoint archive, but it is outside checkpoint_restore_dirs (%s): %w",
		image, c.cfg.CheckpointRestoreDirs, errdefs.ErrInvalidArgument)
}

// restoreContainer is CreateContainer for a checkpoint archive: the
// archive is verified and extracted into the new container's directory,
// its root overlay is re-pointed at this node's copy of its image, and
// the saved domain definition is rewritten for the new container (name,
// UUID, metadata, paths, taps) into the save image and defined. The VM
// keeps the saved shape and devices; the archive must come from a pod of
// the same namespace. from names the archive for messages and the record:
// its path, or the checkpoint image's name and ID. sb.op is held by the
// caller.
func (c *Controller) restoreContainer(ctx context.Context, sb *sandbox, name string, cfg *runtimeapi.ContainerConfig, archive, from string) (_ string, retErr error) {
	if err := restorable(cfg, c.volumeOptions()); err != nil {
		return "", err
	}
	sbRec := sb.Get()
	id := newID()
	log := logging.From(ctx).With(logging.KeyContainerID, id, logging.KeySandboxID, sbRec.ID, logging.KeyDomain, DomainName(id))
	var undo rollback.Steps
	defer func() { undo.Run(ctx, log, retErr) }()
	ct, err := c.beginCreate(sb, name, cfg, id, func(r *ContainerRecord) {
		r.Restore = &RestoreState{From: from, MemoryFile: filepath.Join(r.Dir, memberMemory)}
	}, &undo, &retErr)
	if err != nil {
		return "", err
	}
	defer ct.op.Unlock()
	layout := ct.Get().Layout()

	// The shape is known only from the archive; the directory's group is
	// QEMU's for either domain type, asked once the shape is known.
	if err := os.MkdirAll(layout.Dir, 0o700); err != nil {
		return "", fmt.Errorf("create container directory: %w", err)
	}
	begin := time.Now()
	log.Info("restore: verifying and extracting the checkpoint", "archive", from)
	var meta checkpointMeta
	var img imageOf
	_, err = checkpoint.Extract(archive, layout.Dir, checkpoint.Limits{
		Allowed: checkpointLimits(&c.cfg),
		Check: func(m *checkpoint.Manifest) error {
			var err error
			if meta, err = decodeCheckpointMeta(m); err != nil {
				return err
			}
			if ns := sb.config.GetMetadata().GetNamespace(); meta.PodNamespace != ns {
				return fmt.Errorf("the checkpoint comes from a pod of namespace %q; it can only be restored in that namespace, not %q: %w", meta.PodNamespace, ns, errdefs.ErrPermissionDenied)
			}
			if len(meta.NICs) != len(netInterfaces(sbRec)) {
				return fmt.Errorf("the checkpointed VM has %d network interfaces and the new pod %d: %w", len(meta.NICs), len(netInterfaces(sbRec)), errdefs.ErrFailedPrecondition)
			}
			im, err := c.images.Get(meta.ImageRef)
			if err != nil {
				return fmt.Errorf("the checkpoint's base image %s (%s) is not on this node; pull it first: %w", meta.ImageName, meta.ImageRef, errdefs.ErrNotFound)
			}
			img = imageOf{id: im.ID, disk: im.Disk(), format: im.Format}
			return nil
		},
	})
	if err != nil {
		return "", fmt.Errorf("restore from %s: %w", from, err)
	}
	log.Info("restore: checkpoint verified", "seconds", fmt.Sprintf("%.3f", time.Since(begin).Seconds()), "from_container", meta.ContainerID, "from_pod", meta.PodNamespace+"/"+meta.PodName)

	owner, err := c.qemuOwner(ctx, meta.VM.DomainType)
	if err != nil {
		return "", err
	}
	if err := layout.Create(owner.GID); err != nil {
		return "", fmt.Errorf("create container directory: %w", err)
	}
	if err := c.defineRestored(ctx, ct, sb, restoredVM{from: from, meta: meta, img: img}); err != nil {
		return "", fmt.Errorf("restore from %s: %w", from, err)
	}
	log.Info("container created from a checkpoint", "archive", from, "seconds", fmt.Sprintf("%.3f", time.Since(begin).Seconds()))
	return id, nil
}

// restorable refuses a container config that asks for what a restored
// VM cannot get: the VM keeps the devices and seed it was saved with, so a
// command, shared directories and block devices of the new container
// would silently be missing (FailedPrecondition). Files (Secrets,
// ConfigMaps, tokens) are in the saved seed and the guest's memory as
// they were; the new container's are not applied.
func restorable(cfg *runtimeapi.ContainerConfig, o volumes.Options) error {
	if guestCommand(cfg, "") != nil {
		return fmt.Errorf("the container restores a checkpoint, whose guest carries on where it was saved; it cannot run a command: remove command and args: %w", errdefs.ErrFailedPrecondition)
	}
	plan, err := volumes.Resolve(cfg, o)
	if err != nil {
		return err
	}
	if len(plan.Shares) > 0 || len(plan.Disks) > 0 {
		return fmt.Errorf("the container restores a checkpoint, whose VM keeps the devices it was saved with; it cannot get shared directories or block devices (%d, %d): remove those volumes: %w",
			len(plan.Shares), len(plan.Disks), errdefs.ErrFailedPrecondition)
	}
	return nil
}

// restoredVM is a saved VM whose files are in a new container's
// directory (memory.save, root.qcow2, seed.iso, efivars.fd), to define as
// that container.
type restoredVM struct {
	from string // the archive, or the warm start template
	meta checkpointMeta
	img  imageOf
	// genID, when set, is the VM's new generation ID; hostname, when set,
	// is given to the guest once its agent answers (warm start).
	genID, hostname string
}

// defineRestored re-points the root overlay at this node's file of the
// image, rewrites the saved definition for the new container (name,
// UUID, metadata, paths, taps, generation ID) into the save image, and
// defines it; the container becomes CREATED with the saved shape. ct.op
// is held.
func (c *Controller) defineRestored(ctx context.Context, ct *container, sb *sandbox, r restoredVM) error {
	rec, sbRec := ct.Get(), sb.Get()
	layout := rec.Layout()
	for _, f := range []string{layout.RootDisk(), layout.SeedISO(), layout.EFIVars()} {
		if err := os.Chmod(f, vm.FileMode); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	tctx, cancel := c.toolContext(ctx)
	err := c.overlays.Adopt(tctx, layout.RootDisk(), c.images.Path(r.img.id), r.img.format)
	cancel()
	if err != nil {
		return toolErr(tctx, err)
	}
	saved, err := libvirttools.SaveImageXML(rec.Restore.MemoryFile)
	if err != nil {
		return err
	}
	m := sb.config.GetMetadata()
	ri := libvirttools.Reidentity{
		Name: rec.Domain, UUID: DomainUUID(rec.ID),
		Metadata: libvirttools.Metadata{SandboxID: sbRec.ID, ContainerID: rec.ID, PodName: m.GetName(), PodNamespace: m.GetNamespace(),
			PodUID: m.GetUid(), Attempt: m.GetAttempt(), Instance: c.reg.meta.InstanceID()},
		Dirs:  map[string]string{r.meta.Dir: layout.Dir, r.meta.RunDir: layout.RunDir},
		Taps:  map[string]string{},
		GenID: r.genID,
	}
	ifcs := netInterfaces(sbRec)
	if len(ifcs) != len(r.meta.NICs) {
		return fmt.Errorf("the saved VM has %d network interfaces and the new pod %d: %w", len(r.meta.NICs), len(ifcs), errdefs.ErrFailedPrecondition)
	}
	var macs [][2]string
	for i, ifc := range ifcs {
		ri.Taps[r.meta.NICs[i].Tap] = ifc.Tap
		macs = append(macs, [2]string{r.meta.NICs[i].MAC, ifc.MAC})
	}
	xml, err := libvirttools.Reidentify(saved, ri)
	if err != nil {
		return err
	}
	if err := libvirttools.RewriteSaveImageXML(rec.Restore.MemoryFile, xml); err != nil {
		return err
	}
	if err := c.libvirt.Define(ctx, xml); err != nil {
		if errdefs.IsInvalidArgument(err) {
			// The saved device model is what the archive's host ran: a
			// machine type, CPU model or device this host's QEMU lacks.
			return fmt.Errorf("this node cannot run the saved VM as it was saved (restore it on a node with the same QEMU and CPU): %s: %w",
				strings.TrimSuffix(err.Error(), ": "+errdefs.ErrInvalidArgument.Error()), errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("define domain %s: %w", rec.Domain, err)
	}
	shape := r.meta.VM
	shape.CgroupParent = sb.config.GetLinux().GetCgroupParent()
	if _, err := ct.Update(func(rr *ContainerRecord) error {
		rr.State, rr.VM, rr.ImageRef, rr.ImageDisk = ContainerCreated, shape, r.img.id, r.img.disk
		rr.Restore.MACs, rr.Restore.Hostname = macs, r.hostname
		return nil
	}); err != nil {
		return fmt.Errorf("store container record: %w", err)
	}
	return nil
}

type imageOf struct{ id, disk, format string }

// netInterfaces are a sandbox's live network interfaces, none without a
// network.
func netInterfaces(sbRec SandboxRecord) []cniInterface {
	att := sbRec.LiveNetwork()
	if att == nil {
		return nil
	}
	var out []cniInterface
	for _, ifc := range att.Interfaces {
		out = append(out, cniInterface{Tap: ifc.Tap, MAC: ifc.MAC})
	}
	return out
}

type cniInterface struct{ Tap, MAC string }

// networkChangedScript runs in a restored guest through its agent, once
// per interface ($1 its saved MAC, $2 the new pod's): the interface
// takes the new MAC and loses its addresses, then the guest renews its
// lease: /etc/vmpod/network-changed DEV when the guest has it (the
// guest's own way), else networkctl, dhclient or a one-shot udhcpc,
// whichever it has.
const networkChangedScript = `set -e
dev=
for d in /sys/class/net/*; do
	[ "$(cat "$d/address" 2>/dev/null)" = "$1" ] && dev=${d##*/}
done
[ -n "$dev" ] || { echo "no interface with MAC $1" >&2; exit 3; }
ip link set dev "$dev" down
ip link set dev "$dev" address "$2"
ip -4 addr flush dev "$dev" || true
ip link set dev "$dev" up
if [ -x /etc/vmpod/network-changed ]; then exec /etc/vmpod/network-changed "$dev"; fi
if command -v networkctl >/dev/null 2>&1 && networkctl status "$dev" >/dev/null 2>&1; then exec networkctl renew "$dev"; fi
if command -v dhclient >/dev/null 2>&1; then exec dhclient -1 "$dev"; fi
if command -v udhcpc >/dev/null 2>&1; then exec udhcpc -i "$dev" -n -q -t 5; fi
echo "no DHCP client to renew the lease of $dev" >&2
exit 4
`

// finishRestore completes a restore once the VM runs: the save image is
// removed, and in the background the guest's interfaces get the new
// pod's MACs and leases through the guest agent (waiting for it up to
// agent_wait_timeout). A guest without an agent keeps its saved MACs,
// which the new pod's anti-spoofing rules drop: it has no network.
func (c *Controller) finishRestore(ct *container) {
	rec := ct.Get()
	log := c.log.With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	if err := os.Remove(rec.Restore.MemoryFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("restore: remove the save image", logging.KeyErr, err)
	}
	if len(rec.Restore.MACs) == 0 && rec.Restore.Hostname == "" {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.AgentWaitTimeout.Std()+time.Minute)
		defer cancel()
		a := guest.NewAgent(c.libvirt, rec.Domain)
		// A container stopped meanwhile (its pod deleted right away) is
		// no failure of the guest's.
		stopped := func() bool {
			if ct.Get().State != ContainerRunning {
				log.Info("restore: the container stopped before the guest took its new identity")
				return true
			}
			return false
		}
		if err := c.waitAgent(ctx, a, rec.ID); err != nil {
			if stopped() {
				return
			}
			log.Warn("restore: the guest agent does not answer; the guest keeps its saved MACs and has no network in its new pod", logging.KeyErr, err)
			return
		}
		if h := rec.Restore.Hostname; h != "" {
			if err := a.Run(ctx, []string{"/bin/sh", "-c", `hostname "$1" && echo "$1" >/etc/hostname`, "vmpod-hostname", h}); err != nil {
				if stopped() {
					return
				}
				log.Warn("restore: the guest's hostname could not be set", "hostname", h, logging.KeyErr, err)
			}
		}
		for _, mac := range rec.Restore.MACs {
			if strings.EqualFold(mac[0], mac[1]) {
				continue
			}
			if err := a.Run(ctx, []string{"/bin/sh", "-c", networkChangedScript, "vmpod-network-changed", mac[0], mac[1]}); err != nil {
				if stopped() {
					return
				}
				log.Warn("restore: the guest's interface could not take the new pod's MAC and lease", "saved_mac", mac[0], "mac", mac[1], logging.KeyErr, err)
				continue
			}
			log.Info("restore: the guest's interface has the new pod's MAC and renewed its lease", "saved_mac", mac[0], "mac", mac[1])
		}
	}()
}
