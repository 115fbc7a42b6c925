// Package image owns vmpod's image store: content-addressed disk image files
// under <state_dir>/images, their metadata records, and the pullers that
// fetch them (HTTP(S) now). An image's ID is "sha256:<hex>" of its file.
//
// Layout:
//
//	images/sha256/<hex>   the image files, read-only, named by their digest
//	images/tmp/           downloads in progress (emptied at start-up)
package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/store"
)

// Image is the metadata record of one stored image.
type Image struct {
	// ID is "sha256:<hex>": the digest of the file for HTTP(S) images, the
	// config digest for OCI images.
	ID string `json:"id"`
	// DiskDigest is "sha256:<hex>" of the disk file, which is stored once
	// under that name however many images share it. Empty means ID.
	DiskDigest string `json:"disk_digest,omitempty"`
	// RepoTags are the repo:tag names that point at this image.
	RepoTags []string `json:"repo_tags,omitempty"`
	// RepoDigests are repo@sha256:<hex> names of this image.
	RepoDigests []string `json:"repo_digests,omitempty"`
	// Size is the file size in bytes.
	Size int64 `json:"size"`
	// Format is "qcow2" or "raw".
	Format string `json:"format"`
	// VirtualSize is the guest-visible disk size in bytes.
	VirtualSize int64 `json:"virtual_size"`
	// Origins records where the file was fetched from, for conditional
	// re-pulls and for ImageStatus's verbose info.
	Origins []Origin `json:"origins,omitempty"`
	// Pulled is when the image was first stored.
	Pulled time.Time `json:"pulled"`
}

// Origin is one URL an image was fetched from.
type Origin struct {
	URL          string `json:"url"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
}

// Translator maps image names to sources; *imagetranslation.Translator
// implements it.
type Translator interface {
	// Translate says whether a rule matches name and, when one does, where
	// the image is downloaded from; when none does, Match.NoMatch is the
	// message for users. Errors wrap errdefs.ErrInvalidArgument.
	Translate(name string) (imagetranslation.Match, error)
}

// DiskChecker inspects a downloaded file and accepts it only as a disk
// image vmpod may boot. Errors wrap errdefs.ErrInvalidArgument with the
// reason.
type DiskChecker interface {
	Check(ctx context.Context, path string) (DiskInfo, error)
}

// Options configures a Store.
type Options struct {
	// Dir is the image store directory (<state_dir>/images).
	Dir        string
	Meta       *store.Store
	Translator Translator
	// Checker validates a downloaded file before it is stored; Checker
	// (qemu-img info) in production.
	Checker DiskChecker
	// ProgressInterval is how often a running pull logs progress.
	ProgressInterval time.Duration
	// OCI configures pulls from OCI registries (names no translation rule
	// matches); its TmpDir is set by the store, and its Downloaded when
	// unset.
	OCI oci.Options
	Log *slog.Logger
	// Downloaded, when set, is told the bytes each HTTP(S) download
	// fetched, when it ends (failed or cancelled ones too), for metrics.
	Downloaded func(n int64)
}

// Store is the image store. It is safe for concurrent use: mu guards the
// records and the files' membership; downloads run outside it.
type Store struct {
	opts    Options
	log     *slog.Logger
	flights flightGroup

	mu     sync.Mutex
	images map[string]*Image // by ID
	// inUse reports whether a container uses an image; such an image's file
	// is kept when its record is removed. Set by the runtime service.
	inUse func(id string) bool
	// downloads counts bytes fetched from the network (tests and benchmarks).
	downloads int
}

// Open opens the store at opts.Dir, creating it if needed. It removes
// leftovers of interrupted pulls and drops records whose file is gone.
// Files without a record may still back a VM's disk; RemoveUnreferenced
// deletes them once the runtime knows its containers.
func Open(opts Options) (*Store, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 5 * time.Second
	}
	s := &Store{opts: opts, log: opts.Log, images: map[string]*Image{}}
	s.opts.OCI.TmpDir = s.tmpDir()
	if s.opts.OCI.ProgressInterval == 0 {
		s.opts.OCI.ProgressInterval = opts.ProgressInterval
	}
	if s.opts.OCI.Downloaded == nil {
		s.opts.OCI.Downloaded = opts.Downloaded
	}
	for _, d := range []string{s.blobDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create image store: %w", err)
		}
	}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, fmt.Errorf("clean interrupted downloads: %w", err)
	}
	if err := os.MkdirAll(s.tmpDir(), 0o755); err != nil {
		return nil, err
	}
	recs, err := store.List[Image](opts.Meta, store.Images)
	if err != nil {
		return nil, fmt.Errorf("load image records: %w", err)
	}
	for i := range recs {
		img := recs[i]
		if _, err := os.Stat(s.filePath(img.disk())); err != nil {
			s.log.Warn("image file missing, dropping its record", "image", img.ID, "err", err)
			if err := opts.Meta.Delete(store.Images, img.ID); err != nil {
				return nil, err
			}
			continue
		}
		s.images[img.ID] = &img
	}
	return s, nil
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

// SetInUse installs the function that says whether a container uses the
// disk file with a digest; RemoveImage keeps such a file.
func (s *Store) SetInUse(f func(id string) bool) {
	s.mu.Lock()
	s.inUse = f
	s.mu.Unlock()
}

func (s *Store) blobDir() string { return filepath.Join(s.opts.Dir, "sha256") }
func (s *Store) tmpDir() string  { return filepath.Join(s.opts.Dir, "tmp") }

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.opts.Dir }

// Disk returns the digest of the image's disk file.
func (img Image) Disk() string { return img.disk() }

// disk returns the digest naming the image's file.
func (img *Image) disk() string {
	if img.DiskDigest != "" {
		return img.DiskDigest
	}
	return img.ID
}

// filePath is where the disk file with digest d is stored.
func (s *Store) filePath(d string) string {
	return filepath.Join(s.blobDir(), strings.TrimPrefix(d, "sha256:"))
}

// Path returns the disk file of image id (or of disk digest id when no
// image has that ID).
func (s *Store) Path(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if img, ok := s.images[id]; ok {
		return s.filePath(img.disk())
	}
	return s.filePath(id)
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

// Get returns the image a reference names: an ID ("sha256:<hex>", or the
// bare hex, or a unique hex prefix of at least 12 digits), a repo:tag (a
// name without tag means :latest) or a repo@digest. It returns an error
// wrapping errdefs.ErrNotFound if none matches.
func (s *Store) Get(ref string) (Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img := s.lookupLocked(ref)
	if img == nil {
		return Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	return cloneImage(img), nil
}

func (s *Store) lookupLocked(ref string) *Image {
	if img, ok := s.images[ref]; ok {
		return img
	}
	if img, ok := s.images["sha256:"+ref]; ok {
		return img
	}
	hex := strings.TrimPrefix(ref, "sha256:")
	if len(hex) >= 12 && isHex(hex) {
		var found *Image
		for id, img := range s.images {
			if strings.HasPrefix(id, "sha256:"+hex) {
				if found != nil {
					return nil // ambiguous
				}
				found = img
			}
		}
		if found != nil {
			return found
		}
	}
	r, err := ParseReference(ref)
	if err != nil {
		return nil
	}
	for _, img := range s.images {
		if r.Digest != "" {
			if slices.Contains(img.RepoDigests, r.DigestName(r.Digest)) {
				return img
			}
			continue
		}
		if slices.Contains(img.RepoTags, r.TagName()) {
			return img
		}
	}
	return nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// List returns all images sorted by ID.
func (s *Store) List() []Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Image, 0, len(s.images))
	for _, img := range s.images {
		out = append(out, cloneImage(img))
	}
	slices.SortFunc(out, func(a, b Image) int { return strings.Compare(a.ID, b.ID) })
	return out
}

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

func cloneImage(img *Image) Image {
	c := *img
	c.RepoTags = slices.Clone(img.RepoTags)
	c.RepoDigests = slices.Clone(img.RepoDigests)
	c.Origins = slices.Clone(img.Origins)
	return c
}

// recordLocked adds the names of r to image id; see recordNamesLocked.
func (s *Store) recordLocked(id string, r Reference, origin *Origin, newImg *Image) (Image, error) {
	var tags []string
	if t := r.TagName(); t != "" {
		tags = append(tags, t)
	}
	return s.recordNamesLocked(id, tags, []string{r.DigestName(id)}, origin, newImg)
}

// recordNamesLocked adds repo tags and repo digests to image id (creating
// its record from newImg when absent), moves each tag away from any other
// image, and persists every changed record.
func (s *Store) recordNamesLocked(id string, tags, digests []string, origin *Origin, newImg *Image) (Image, error) {
	img, ok := s.images[id]
	if !ok {
		if newImg == nil {
			return Image{}, fmt.Errorf("image %s vanished during pull: %w", id, errdefs.ErrNotFound)
		}
		img = newImg
	}
	changed := map[string]*Image{id: img}
	for _, tag := range tags {
		for oid, other := range s.images {
			if oid != id && slices.Contains(other.RepoTags, tag) {
				other.RepoTags = slices.DeleteFunc(other.RepoTags, func(t string) bool { return t == tag })
				changed[oid] = other
			}
		}
		if !slices.Contains(img.RepoTags, tag) {
			img.RepoTags = append(img.RepoTags, tag)
			slices.Sort(img.RepoTags)
		}
	}
	for _, dn := range digests {
		if !slices.Contains(img.RepoDigests, dn) {
			img.RepoDigests = append(img.RepoDigests, dn)
			slices.Sort(img.RepoDigests)
		}
	}
	if origin != nil {
		img.Origins = slices.DeleteFunc(img.Origins, func(o Origin) bool { return o.URL == origin.URL })
		img.Origins = append(img.Origins, *origin)
	}
	for cid, c := range changed {
		if err := s.opts.Meta.Put(store.Images, cid, c); err != nil {
			return Image{}, fmt.Errorf("store image record %s: %w", cid, err)
		}
	}
	s.images[id] = img
	return cloneImage(img), nil
}

// Downloads returns how many downloads transferred a body so far.
func (s *Store) Downloads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downloads
}
