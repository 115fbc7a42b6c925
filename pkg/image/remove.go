package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vmpod/vmpod/pkg/store"
)

// Remove deletes the image ref names, with all its names (CRI semantics).
// Removing an image that does not exist succeeds. The file of an image a
// container uses is kept until that container is gone.
func (s *Store) Remove(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	img := s.lookupLocked(ref)
	if img == nil {
		return nil
	}
	if err := s.opts.Meta.Delete(store.Images, img.ID); err != nil {
		return fmt.Errorf("remove image record %s: %w", img.ID, err)
	}
	delete(s.images, img.ID)
	if s.diskUsedLocked(img.disk()) {
		s.log.Info("image removed; its disk file stays while a container or another image uses it", "image", img.ID)
		return nil
	}
	if err := os.Remove(s.filePath(img.disk())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove image file %s: %w", img.ID, err)
	}
	s.log.Info("image removed", "image", img.ID, "names", img.RepoTags)
	return nil
}

// RemoveUnreferenced deletes image files that have no record and that no
// container uses (an image removed while a VM used it, or a crash between
// writing a file and its record).
func (s *Store) RemoveUnreferenced() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if s.diskUsedLocked("sha256:" + e.Name()) {
			continue
		}
		id := "sha256:" + e.Name()
		s.log.Info("deleting image file that has no record and no user", "image", id)
		if err := os.Remove(filepath.Join(s.blobDir(), e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Release is called when a container whose disk was backed by the disk
// file with digest d is gone: if no image record and no other container
// uses that file any more (the image was removed meanwhile), it goes too.
func (s *Store) Release(d string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.diskUsedLocked(d) {
		return
	}
	if err := os.Remove(s.filePath(d)); err == nil {
		s.log.Info("deleted the file of a removed image after its last user went", "disk", d)
	}
}

// diskUsedLocked reports whether a stored image or a container uses the
// disk file with digest d.
func (s *Store) diskUsedLocked(d string) bool {
	for _, img := range s.images {
		if img.disk() == d {
			return true
		}
	}
	return s.inUse != nil && s.inUse(d)
}
