package image

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/image/transfer"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/store"
)

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
	// (in process, then qemu-img check) in production.
	Checker DiskChecker
	// Checkpoints verifies the archive of a pulled checkpoint image
	// (pkg/lifecycle's); nil refuses checkpoint images.
	Checkpoints CheckpointChecker
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
	// Limits bound every pull, HTTP(S) and OCI: max_image_size,
	// pull_request_timeout, pull_stall_timeout. Zero fields mean the
	// defaults; the store adds its free-space check.
	Limits transfer.Limits
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
	// downloads counts the HTTP(S) downloads that got a body (Downloads).
	downloads int
	// statfs reports the free and total bytes of the store's file system;
	// tests replace it.
	statfs func(dir string) (avail, total uint64, err error)
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
	s := &Store{opts: opts, log: opts.Log, images: map[string]*Image{}, statfs: statfs}
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
		drop := ""
		if _, err := os.Stat(s.filePath(img.disk())); err != nil {
			drop = "image file missing, dropping its record"
		} else if !img.contentAddressed() && !img.Verified {
			// An OCI image stored by a vmpod that took the manifest's word
			// for its config: its ID may name another image's content.
			drop = "OCI image stored without a verified config, dropping its record; it is pulled again when needed"
		}
		if drop != "" {
			s.log.Warn(drop, "image", img.ID, "names", img.RepoTags)
			if err := opts.Meta.Delete(store.Images, img.ID); err != nil {
				return nil, err
			}
			continue
		}
		if redactOrigins(&img) {
			if err := opts.Meta.Put(store.Images, img.ID, &img); err != nil {
				return nil, err
			}
		}
		s.images[img.ID] = &img
	}
	return s, nil
}

// redactOrigins redacts the origin URLs of img that an older vmpod stored
// with their user info or query string, and reports whether it changed
// any.
func redactOrigins(img *Image) bool {
	changed := false
	for i, o := range img.Origins {
		if strings.HasPrefix(o.URL, "docker://") {
			continue
		}
		if r := imagetranslation.RedactURL(o.URL); r != o.URL {
			img.Origins[i] = Origin{URL: r}
			changed = true
		}
	}
	return changed
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

// Downloads returns how many downloads transferred a body so far.
func (s *Store) Downloads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downloads
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
