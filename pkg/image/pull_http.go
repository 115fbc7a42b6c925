package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/httppull"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/logging"
)

// pullHTTP pulls the HTTP(S) image src that a translation rule maps name
// (parsed as r) to. Pulls of one URL, or of one pinned digest, share one
// download.
func (s *Store) pullHTTP(ctx context.Context, name string, r Reference, src imagetranslation.Source) (Image, error) {
	key := "url:" + src.URL
	if r.Digest != "" {
		key = "digest:" + r.Digest
	}
	img, shared, err := s.flights.do(ctx, key, func(ctx context.Context) (Image, error) {
		return s.fetchHTTP(ctx, r, name, src)
	})
	if err != nil {
		return Image{}, fmt.Errorf("pull image %q from %s: %w", name, src.URL, err)
	}
	if r.Digest != "" && img.ID != r.Digest {
		// Joined a pull of the same digest under another name that failed
		// verification would have errored; this is a different digest.
		return Image{}, fmt.Errorf("pull image %q: digest mismatch: the name pins %s but %s serves %s: %w",
			name, r.Digest, src.URL, img.ID, errdefs.ErrInvalidArgument)
	}
	if shared {
		// The download ran under another caller's name: add ours.
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.recordLocked(img.ID, r, nil, nil)
	}
	return img, nil
}

// fetchHTTP downloads src into the store and records it under r. A URL
// fetched before is asked for conditionally, so an unchanged file is not
// downloaded again.
func (s *Store) fetchHTTP(ctx context.Context, r Reference, name string, src imagetranslation.Source) (Image, error) {
	log := logging.From(ctx).With("image", name, "url", src.URL)
	var known *Image
	var have *httppull.Validators
	if r.Digest == "" {
		known, _ = s.knownOrigin(src.URL)
		if known != nil {
			o := originOf(known, src.URL)
			have = &httppull.Validators{ETag: o.ETag, LastModified: o.LastModified}
		}
	}
	res, err := httppull.Pull(ctx, src, have, httppull.Options{
		TmpDir:           s.tmpDir(),
		ProgressInterval: s.opts.ProgressInterval,
		Log:              log,
		Downloaded:       s.opts.Downloaded,
		Started: func() {
			s.mu.Lock()
			s.downloads++
			s.mu.Unlock()
		},
	})
	if err != nil {
		return Image{}, err
	}
	if res.NotModified {
		log.Info("image unchanged on the server, nothing downloaded", "id", known.ID)
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.recordLocked(known.ID, r, nil, nil)
	}
	defer os.Remove(res.TmpFile) // no-op after the rename
	id := res.Digest
	if r.Digest != "" && id != r.Digest {
		return Image{}, fmt.Errorf("digest mismatch: the name pins %s but the file downloaded from %s has %s; nothing was stored: %w",
			r.Digest, src.URL, id, errdefs.ErrInvalidArgument)
	}
	checkStart := time.Now()
	info, err := s.opts.Checker.Check(ctx, res.TmpFile)
	if err != nil {
		return Image{}, fmt.Errorf("refused: %w", err)
	}
	log.Debug("image checked", "seconds", fmt.Sprintf("%.2f", time.Since(checkStart).Seconds()))
	if err := os.Chmod(res.TmpFile, 0o444); err != nil {
		return Image{}, err
	}

	origin := &Origin{URL: src.URL, ETag: res.Validators.ETag, LastModified: res.Validators.LastModified}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, have := s.images[id]; have {
		return s.recordLocked(id, r, origin, nil) // same bytes under another name
	}
	final := s.filePath(id)
	if err := os.Rename(res.TmpFile, final); err != nil {
		return Image{}, fmt.Errorf("store image file: %w", err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return Image{}, err
	}
	img, err := s.recordLocked(id, r, origin, &Image{
		ID: id, Size: res.Size, Format: info.Format, VirtualSize: info.VirtualSize, Pulled: time.Now().UTC(),
	})
	if err != nil {
		os.Remove(final)
		return Image{}, err
	}
	log.Info("image stored", "id", id, "format", info.Format, "virtual_size", info.VirtualSize)
	return img, nil
}

// knownOrigin returns a copy of an image fetched from url whose server
// gave validators (ETag or Last-Modified) for a conditional request.
func (s *Store) knownOrigin(url string) (*Image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, img := range s.images {
		if o := originOf(img, url); o != nil && (o.ETag != "" || o.LastModified != "") {
			c := cloneImage(img)
			return &c, true
		}
	}
	return nil, false
}

func originOf(img *Image, url string) *Origin {
	for i := range img.Origins {
		if img.Origins[i].URL == url {
			return &img.Origins[i]
		}
	}
	return nil
}
