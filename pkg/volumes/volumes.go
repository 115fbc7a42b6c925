// Package volumes decides how a container's CRI mounts and devices reach
// its VM: regular files (and the kubelet's ConfigMap, Secret, downward-API
// and projected volumes, which are directories of regular files) are
// copied in through the cloud-init seed; other directories (hostPath,
// emptyDir, PVCs) are shared with virtiofs or 9p and mounted by
// cloud-init; block devices become raw disks with a serial, linked at
// their device_path by cloud-init.
package volumes

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// maxDeliveredFileBytes bounds the files delivered through the seed
// (ConfigMaps and Secrets are at most 1 MiB each in Kubernetes).
const maxDeliveredFileBytes = 4 << 20

// Plan is how a container's mounts and devices reach the VM: what the
// cloud-init seed writes and mounts, and what the domain shares and
// attaches.
type Plan struct {
	// Files are copied into the guest by cloud-init.
	Files []cloudinit.File
	// Shares are mounted by cloud-init; Filesystems share them.
	Shares      []cloudinit.Share
	Filesystems []libvirttools.Filesystem
	// Devices are linked by cloud-init; Disks attach them.
	Devices []cloudinit.Device
	Disks   []libvirttools.Disk
}

// fileVolumeKinds are the kubelet's volume plugins whose content is a set of
// files the guest gets as copies.
var fileVolumeKinds = []string{"kubernetes.io~configmap", "kubernetes.io~secret", "kubernetes.io~projected", "kubernetes.io~downward-api"}

func isFileVolume(hostPath string) bool {
	for _, k := range fileVolumeKinds {
		if strings.Contains(hostPath, "/"+k+"/") {
			return true
		}
	}
	return false
}

// Options say how directories are shared.
type Options struct {
	// ShareType is shared_dir_type: virtiofs or 9p.
	ShareType string
	// ReadOnlyVirtiofsd is the path of vmpod-virtiofsd-ro
	// (InstallReadOnlyVirtiofsd), which read-only virtiofs shares run as
	// their virtiofsd; without it they are refused.
	ReadOnlyVirtiofsd string
}

// Resolve classifies the container's mounts and devices. Errors wrap
// errdefs.ErrInvalidArgument (or FailedPrecondition) and name the mount.
func Resolve(cfg *runtimeapi.ContainerConfig, o Options) (Plan, error) {
	shareType := o.ShareType
	var g Plan
	total := 0
	addFile := func(path string, hostPath string, mode fs.FileMode) error {
		b, err := readCapped(hostPath, maxDeliveredFileBytes-total)
		if errors.Is(err, errTooLarge) {
			return fmt.Errorf("mounted files add up to more than %d bytes; share large content as a directory (hostPath or PVC) instead: %w", maxDeliveredFileBytes, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return fmt.Errorf("mount %s: read %s: %w", path, hostPath, err)
		}
		total += len(b)
		g.Files = append(g.Files, cloudinit.File{Path: path, Content: b, Mode: mode.Perm()})
		return nil
	}
	for i, m := range cfg.GetMounts() {
		if m.GetContainerPath() == "" || !filepath.IsAbs(m.GetContainerPath()) {
			return g, fmt.Errorf("mount %d: container_path %q must be an absolute path: %w", i, m.GetContainerPath(), errdefs.ErrInvalidArgument)
		}
		st, err := os.Stat(m.GetHostPath())
		if err != nil {
			return g, fmt.Errorf("mount %s: host path %q: %v: %w", m.GetContainerPath(), m.GetHostPath(), err, errdefs.ErrInvalidArgument)
		}
		switch {
		case st.Mode().IsRegular():
			if err := addFile(m.GetContainerPath(), m.GetHostPath(), st.Mode()); err != nil {
				return g, err
			}
		case st.IsDir() && isFileVolume(m.GetHostPath()):
			// The kubelet's atomic writer keeps the files in a ..data
			// directory behind symlinks; skip the dot entries, follow the
			// user-visible names.
			entries, err := os.ReadDir(m.GetHostPath())
			if err != nil {
				return g, err
			}
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".") {
					continue
				}
				hp := filepath.Join(m.GetHostPath(), e.Name())
				fst, err := os.Stat(hp)
				if err != nil || !fst.Mode().IsRegular() {
					continue
				}
				if err := addFile(filepath.Join(m.GetContainerPath(), e.Name()), hp, fst.Mode()); err != nil {
					return g, err
				}
			}
		case st.IsDir():
			// virtiofsd refuses a shared directory that is a symlink (the
			// VM does not start); share what it names, as runc mounts it.
			src, err := filepath.EvalSymlinks(m.GetHostPath())
			if err != nil {
				return g, fmt.Errorf("mount %s: host path %q: %v: %w", m.GetContainerPath(), m.GetHostPath(), err, errdefs.ErrInvalidArgument)
			}
			tag := fmt.Sprintf("vmpod-fs%d", len(g.Filesystems))
			fs := libvirttools.Filesystem{Source: src, Tag: tag, ReadOnly: m.GetReadonly(), Driver: shareType}
			if fs.ReadOnly && fs.Driver == libvirttools.FilesystemVirtiofs {
				// 9p enforces read-only itself; virtiofs gets a virtiofsd
				// that cannot write.
				if o.ReadOnlyVirtiofsd == "" {
					return g, fmt.Errorf("mount %s: a read-only virtiofs share needs %s, which this vmpod has not installed: %w",
						m.GetContainerPath(), ReadOnlyVirtiofsdName, errdefs.ErrFailedPrecondition)
				}
				fs.Binary = o.ReadOnlyVirtiofsd
			}
			g.Filesystems = append(g.Filesystems, fs)
			g.Shares = append(g.Shares, cloudinit.Share{Tag: tag, MountPath: m.GetContainerPath(), ReadOnly: m.GetReadonly(), Type: shareType})
		default:
			return g, fmt.Errorf("mount %s: host path %q is neither a file nor a directory (block devices go in devices): %w", m.GetContainerPath(), m.GetHostPath(), errdefs.ErrInvalidArgument)
		}
	}
	for i, d := range cfg.GetDevices() {
		st, err := os.Stat(d.GetHostPath())
		if err != nil || st.Mode()&fs.ModeDevice == 0 || st.Mode()&fs.ModeCharDevice != 0 {
			return g, fmt.Errorf("device %d: host path %q is not a block device: %w", i, d.GetHostPath(), errdefs.ErrInvalidArgument)
		}
		if !filepath.IsAbs(d.GetContainerPath()) {
			return g, fmt.Errorf("device %d: container_path %q must be an absolute path: %w", i, d.GetContainerPath(), errdefs.ErrInvalidArgument)
		}
		serial := fmt.Sprintf("vmpod-dev%d", i)
		g.Disks = append(g.Disks, libvirttools.Disk{
			Path: d.GetHostPath(), Block: true, Format: libvirttools.DiskFormatRaw,
			Bus: libvirttools.DiskBusVirtio, Serial: serial, ReadOnly: !strings.Contains(d.GetPermissions(), "w") && d.GetPermissions() != "",
		})
		g.Devices = append(g.Devices, cloudinit.Device{Serial: serial, Path: d.GetContainerPath()})
	}
	return g, nil
}

var errTooLarge = errors.New("file larger than the room left")

// readCapped reads a regular file of at most limit bytes. It never reads
// more than limit+1 bytes, whatever the file's size, and opens without
// blocking, so a path swapped for a FIFO or a device after the caller's
// stat is refused instead of hanging or streaming for ever.
func readCapped(path string, limit int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}
	if st.Size() > int64(limit) {
		return nil, errTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, errTooLarge // it grew while being read
	}
	return b, nil
}
