package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/checkpoint"
	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/podspec"
	"github.com/vmpod/vmpod/pkg/version"
)

// Checkpoint archive members (pkg/checkpoint): the VM's memory and device
// state as a libvirt save image, its root overlay, its cloud-init seed
// and, for UEFI guests, its variable store. Their names are the files'
// names in a container's directory (vm.Layout), so a restore extracts the
// archive straight into the new container's directory.
const (
	memberMemory  = "memory.save"
	memberRoot    = "root.qcow2"
	memberSeed    = "seed.iso"
	memberEFIVars = "efivars.fd"
)

// checkpointMeta is the metadata vmpod writes into a checkpoint archive.
type checkpointMeta struct {
	VmpodVersion string `json:"vmpod_version"`
	// The container that was checkpointed.
	ContainerID string `json:"container_id"`
	Name        string `json:"name"` // its CRI metadata name
	ImageName   string `json:"image_name"`
	ImageRef    string `json:"image_ref"` // the image ID its root overlay is backed by
	// ImagePullNames are names the image ImageRef can be pulled by (its
	// repo digests, then the names it was asked for): a checkpoint image's
	// pull pulls its base by one of them (pkg/image's pullBase).
	ImagePullNames []string      `json:"image_pull_names,omitempty"`
	VM             podspec.Shape `json:"vm"`
	Domain         string        `json:"domain"`
	Dir            string        `json:"dir"`
	RunDir         string        `json:"run_dir"`
	// Its pod.
	SandboxID    string `json:"sandbox_id"`
	PodName      string `json:"pod_name"`
	PodNamespace string `json:"pod_namespace"`
	PodUID       string `json:"pod_uid"`
	// NICs are the VM's interfaces in order, as saved: the guest keeps
	// these MACs in its memory until the restore gives it the new pod's.
	NICs []checkpointNIC `json:"nics,omitempty"`
}

type checkpointNIC struct {
	Tap string `json:"tap"`
	MAC string `json:"mac"`
}

// CheckpointContainer writes a running container's VM to a checkpoint
// archive at location (docs/snapshots.md). The VM is saved (libvirt save:
// its vCPUs stop, its memory and device state are written), its root
// overlay copied while QEMU is gone, then it is restored from the save at
// once, with fresh taps and DHCP as at a start, back in its pod's cgroup:
// the guest runs on, having been paused while it was saved. The archive
// is written after the guest runs again, mode 0600. A container with a
// command, shared directories or block devices cannot be checkpointed
// (FailedPrecondition): a command's runner follows a guest process vmpod
// would lose across the save, QEMU cannot save a virtiofs device, and a
// block device's content is not in the archive.
func (c *Controller) CheckpointContainer(ctx context.Context, id, location string, timeout time.Duration) (retErr error) {
	if location == "" || !filepath.IsAbs(location) {
		return fmt.Errorf("CheckpointContainer: location %q must be an absolute path (the archive to write): %w", location, errdefs.ErrInvalidArgument)
	}
	if st, err := os.Stat(filepath.Dir(location)); err != nil || !st.IsDir() {
		return fmt.Errorf("CheckpointContainer: the directory of %s does not exist: %w", location, errdefs.ErrInvalidArgument)
	}
	ct, err := c.reg.container(id)
	if err != nil {
		return err
	}
	ct.op.Lock()
	defer ct.op.Unlock()
	rec := ct.Get()
	if rec.State != ContainerRunning {
		return fmt.Errorf("container %s is %s; only a running VM can be checkpointed: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	if rec.Command != nil {
		return fmt.Errorf("container %s runs a command as its main process; checkpoints of such containers are not supported (vmpod would lose track of the command across the save): %w", rec.ID, errdefs.ErrFailedPrecondition)
	}
	sb, err := c.reg.sandbox(rec.SandboxID)
	if err != nil {
		return err
	}
	live, err := c.libvirt.XML(ctx, rec.Domain)
	if err != nil {
		return fmt.Errorf("read domain %s: %w", rec.Domain, err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(live); err != nil {
		return fmt.Errorf("parse domain %s: %w", rec.Domain, err)
	}
	if d := dom.Devices; d != nil && (len(d.Filesystems) > 0 || len(d.Disks) > 2) {
		return fmt.Errorf("container %s has shared directories or block devices; QEMU cannot save a virtiofs device and a block device's content would not be in the checkpoint: %w", rec.ID, errdefs.ErrFailedPrecondition)
	}
	if timeout <= 0 {
		timeout = c.cfg.CreateTimeout.Std()
	}
	stage, err := os.MkdirTemp(c.cfg.StateDir, "checkpoint-")
	if err != nil {
		return fmt.Errorf("create the checkpoint's staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	begin := time.Now()
	logging.From(ctx).Info("checkpoint: saving the VM", logging.KeyContainerID, rec.ID, "location", location)
	m, members, err := c.snapshotInPlace(ctx, ct, sb, dom, stage, timeout)
	if err != nil {
		return err
	}
	if err := checkpoint.Write(location, m, members); err != nil {
		return fmt.Errorf("write the checkpoint archive %s: %w", location, err)
	}
	logging.From(ctx).Info("checkpoint written", logging.KeyContainerID, rec.ID, "location", location, "seconds", fmt.Sprintf("%.3f", time.Since(begin).Seconds()))
	return nil
}

// snapshotInPlace saves a running VM into stage (memory.save, root.qcow2,
// seed.iso, efivars.fd for UEFI guests) and restores it in place at once:
// the guest runs on. dom is its live definition. ct.op is held.
func (c *Controller) snapshotInPlace(ctx context.Context, ct *container, sb *sandbox, dom libvirtxml.Domain, stage string, timeout time.Duration) (checkpointMeta, []checkpoint.Member, error) {
	rec, sbRec := ct.Get(), sb.Get()
	log := logging.From(ctx).With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	l := rec.Layout()
	members := []checkpoint.Member{
		{Name: memberMemory, Path: filepath.Join(stage, memberMemory)},
		{Name: memberRoot, Path: filepath.Join(stage, memberRoot)},
		{Name: memberSeed, Path: filepath.Join(stage, memberSeed)},
	}
	m := checkpointMeta{
		VmpodVersion: version.Version, ContainerID: rec.ID, Name: ct.config.GetMetadata().GetName(),
		ImageName: rec.ImageName, ImageRef: rec.ImageRef, VM: rec.VM, Domain: rec.Domain, Dir: rec.Dir, RunDir: rec.RunDir,
		SandboxID: sbRec.ID, PodName: sb.config.GetMetadata().GetName(), PodNamespace: sb.config.GetMetadata().GetNamespace(),
		PodUID: sb.config.GetMetadata().GetUid(), ImagePullNames: c.pullNames(ct),
	}
	if dom.Devices != nil {
		for _, ifc := range dom.Devices.Interfaces {
			n := checkpointNIC{}
			if ifc.Target != nil {
				n.Tap = ifc.Target.Dev
			}
			if ifc.MAC != nil {
				n.MAC = ifc.MAC.Address
			}
			m.NICs = append(m.NICs, n)
		}
	}
	// The seed does not change: copied before the VM stops.
	if err := copyFile(l.SeedISO(), members[2].Path); err != nil {
		return m, nil, fmt.Errorf("copy the seed: %w", err)
	}
	begin := time.Now()
	if err := c.libvirt.Save(ctx, rec.Domain, members[0].Path, timeout); err != nil {
		return m, nil, fmt.Errorf("save domain %s: %w", rec.Domain, err)
	}
	saved := time.Since(begin)
	copyErr := copyFile(rec.RootDisk, members[1].Path)
	if copyErr == nil {
		if _, err := os.Stat(l.EFIVars()); err == nil {
			members = append(members, checkpoint.Member{Name: memberEFIVars, Path: filepath.Join(stage, memberEFIVars)})
			copyErr = copyFile(l.EFIVars(), members[3].Path)
		}
	}
	// The VM comes back whatever happened to the copy.
	if err := c.bootVM(ctx, ct, sb, func(ctx context.Context) error {
		return c.libvirt.Restore(ctx, members[0].Path, true, timeout)
	}, false); err != nil {
		log.Error("the VM could not be restored after its save; it is stopped", logging.KeyErr, err)
		return m, nil, fmt.Errorf("the VM was saved but could not be restored, so it is stopped (its container will be reported exited): %w", err)
	}
	log.Info("snapshot taken; the VM runs again", "paused_seconds", fmt.Sprintf("%.3f", time.Since(begin).Seconds()), "save_seconds", fmt.Sprintf("%.3f", saved.Seconds()))
	if copyErr != nil {
		return m, nil, fmt.Errorf("copy the VM's disks for the snapshot: %w", copyErr)
	}
	return m, members, nil
}

// copyFile copies src to a new file dst (0600); the kernel copies the
// data (copy_file_range, reflinks where the file system has them).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return errors.Join(out.Sync(), out.Close())
}

// decodeCheckpointMeta reads an archive's metadata.
// pullNames are the names a container's image can be pulled by, for a
// checkpoint's metadata: the image's repo digests (pinned), the name the
// user gave, its repo tags; image IDs are no pullable name.
func (c *Controller) pullNames(ct *container) []string {
	rec := ct.Get()
	img, _ := c.images.Get(rec.ImageRef) // gone: the names the container gave
	names := slices.Concat(img.RepoDigests, []string{ct.config.GetImage().GetUserSpecifiedImage(), rec.ImageName}, img.RepoTags)
	var out []string
	for _, n := range names {
		if n == "" || strings.HasPrefix(n, "sha256:") || slices.Contains(out, n) {
			continue
		}
		if out = append(out, n); len(out) == maxPullNames {
			break
		}
	}
	return out
}

// maxPullNames bounds a checkpoint's ImagePullNames (pkg/image tries at
// most 4).
const maxPullNames = 4

// basePullNames are the names a checkpoint's base image is pulled by:
// ImagePullNames, or for archives without them the image name, unless
// it is an image ID.
func (m checkpointMeta) basePullNames() []string {
	if len(m.ImagePullNames) > 0 {
		return m.ImagePullNames
	}
	if m.ImageName != "" && !strings.HasPrefix(m.ImageName, "sha256:") {
		return []string{m.ImageName}
	}
	return nil
}

// checkpointLimits are the bounds of a checkpoint archive's members.
func checkpointLimits(cfg *config.Config) map[string]int64 {
	return map[string]int64{
		memberMemory:  int64(cfg.MaxVMMemory) + restoreSlack,
		memberRoot:    int64(cfg.MaxRootVolumeSize) + restoreSlack,
		memberSeed:    64 << 20,
		memberEFIVars: 16 << 20,
	}
}

// CheckpointImageChecker verifies the archive of a pulled checkpoint
// image (pkg/image's Options.Checkpoints) as a restore would, without
// extracting it, and returns its base image: the image ID its root disk
// is an overlay of and the names to pull it by.
func CheckpointImageChecker(cfg *config.Config) image.CheckpointChecker {
	return func(ctx context.Context, path string) (image.CheckpointBase, error) {
		var meta checkpointMeta
		_, err := checkpoint.Verify(path, checkpoint.Limits{
			Allowed: checkpointLimits(cfg),
			Check: func(m *checkpoint.Manifest) (err error) {
				meta, err = decodeCheckpointMeta(m)
				return err
			},
		})
		if err != nil {
			return image.CheckpointBase{}, err
		}
		return image.CheckpointBase{ID: meta.ImageRef, Names: meta.basePullNames()}, nil
	}
}

func decodeCheckpointMeta(m *checkpoint.Manifest) (checkpointMeta, error) {
	var meta checkpointMeta
	if err := json.Unmarshal(m.Meta, &meta); err != nil {
		return meta, fmt.Errorf("checkpoint metadata: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if meta.ContainerID == "" || meta.Domain == "" || meta.Dir == "" || meta.RunDir == "" || meta.ImageRef == "" {
		return meta, fmt.Errorf("checkpoint metadata lacks the container's identity or image: %w", errdefs.ErrInvalidArgument)
	}
	return meta, nil
}
