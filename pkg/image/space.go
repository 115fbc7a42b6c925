package image

import (
	"fmt"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/vmpod/vmpod/pkg/image/transfer"
)

// maxReserve caps the free space a pull leaves on the store's file system:
// 5% of it, at most this much.
const maxReserve = 1 << 30

// statfs reports the bytes available to vmpod and the size of the file
// system holding dir.
func statfs(dir string) (avail, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// checkSpace fails with ResourceExhausted when writing need more bytes to
// the store would leave less than the reserve (5% of the file system, at
// most 1 GiB) free, so that a pull cannot fill the disk the node and its
// VMs live on. need 0 asks whether the reserve is still there.
func (s *Store) checkSpace(need int64) error {
	avail, total, err := s.statfs(s.tmpDir())
	if err != nil {
		return fmt.Errorf("free space of the image store: %w", err)
	}
	reserve := min(total/20, maxReserve)
	if avail < reserve || uint64(need) > avail-reserve {
		return fmt.Errorf("not enough free space for the image in %s: %d bytes needed, %d available, of which %d are kept free; free space or remove images (crictl rmi --prune): %w",
			s.opts.Dir, need, avail, reserve, errdefs.ErrResourceExhausted)
	}
	return nil
}

// limits are the pullers' limits: the configured ones and the store's
// free-space check.
func (s *Store) limits() transfer.Limits {
	l := s.opts.Limits.WithDefaults()
	l.CheckSpace = s.checkSpace
	return l
}
