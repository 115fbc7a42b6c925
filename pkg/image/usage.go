package image

import (
	"errors"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"
)

// FsUsage is the space the image store itself takes.
type FsUsage struct {
	Mountpoint string
	UsedBytes  uint64
	Inodes     uint64
	Timestamp  time.Time
}

// Usage walks the store directory and sums the bytes allocated to and the
// inodes taken by its files and directories (not the whole filesystem's).
func (s *Store) Usage() (FsUsage, error) {
	u := FsUsage{Mountpoint: s.opts.Dir, Timestamp: time.Now()}
	err := filepath.WalkDir(s.opts.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a download finished or was removed meanwhile
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		u.Inodes++
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			u.UsedBytes += uint64(st.Blocks) * 512
		}
		return nil
	})
	return u, err
}
