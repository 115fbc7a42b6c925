package vm

import (
	"fmt"
	"os"
	"path/filepath"
)

// File modes of a VM's files. The VM's directory holds secrets (the seed
// carries the container's env, Secret and ConfigMap files, service
// account tokens and SSH keys): it is searchable by QEMU's group only and
// listable by nobody but root; the files in it are root's alone, and
// libvirt gives the ones QEMU opens (disks, seed) to QEMU's user while the
// VM runs (dynamic_ownership) and back afterwards.
const (
	// DirMode is the mode of Layout.Dir and of its parent: root rwx, QEMU's
	// group x (search only: QEMU opens files by name, never lists).
	DirMode = 0o710
	// RunDirMode is the mode of Layout.RunDir: libvirt (root) creates the
	// sockets there and hands QEMU their descriptors.
	RunDirMode = 0o700
	// FileMode is the mode of every file vmpod writes for a VM.
	FileMode = 0o600
)

// PrivateDir makes dir (and missing parents, 0700) with mode DirMode and
// group gid; an existing dir is tightened to that.
func PrivateDir(dir string, gid int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chown(dir, -1, gid); err != nil {
		return fmt.Errorf("give %s to QEMU's group %d: %w", dir, gid, err)
	}
	if err := os.Chmod(dir, DirMode); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// Create makes the VM's directories: Dir (and its parent, the containers
// directory) private to root and QEMU's group gid, RunDir private to root.
func (l Layout) Create(gid int) error {
	if err := PrivateDir(filepath.Dir(l.Dir), gid); err != nil {
		return err
	}
	if err := PrivateDir(l.Dir, gid); err != nil {
		return err
	}
	if err := os.MkdirAll(l.RunDir, RunDirMode); err != nil {
		return fmt.Errorf("create %s: %w", l.RunDir, err)
	}
	return os.Chmod(l.RunDir, RunDirMode)
}

// Tighten brings the files of a VM made by an older vmpod (directories
// 0755, files 0644) to today's modes; missing files are fine.
func (l Layout) Tighten(gid int) error {
	if err := l.Create(gid); err != nil {
		return err
	}
	for _, f := range []string{l.RootDisk(), l.SeedISO(), l.ConsoleLog()} {
		if err := os.Chmod(f, FileMode); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("chmod %s: %w", f, err)
		}
	}
	return nil
}
