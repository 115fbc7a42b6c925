package image

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/image/httppull"
	"github.com/vmpod/vmpod/pkg/image/qcow2"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/logging"
)

// pullHTTP pulls the HTTP(S) image src that a translation rule maps name
// (parsed as r) to. Pulls of one URL, or of one pinned digest, share one
// download.
func (s *Store) pullHTTP(ctx context.Context, name string, r Reference, src imagetranslation.Source) (Image, error) {
	if r.Digest != "" {
		s.mu.Lock()
		if img := s.pinnedLocked(r, src); img != nil {
			rec, err := s.recordLocked(img.ID, r, nil, nil)
			s.mu.Unlock()
			logging.From(ctx).Info("image already present, nothing downloaded", "image", name, "id", img.ID)
			return rec, err
		}
		s.mu.Unlock()
	}
	key := "url:" + src.URL
	if r.Digest != "" {
		key = "digest:" + r.Digest
	}
	img, shared, err := s.flights.do(ctx, key, func(ctx context.Context) (Image, error) {
		return s.fetchHTTP(ctx, r, name, src)
	})
	if err != nil {
		return Image{}, fmt.Errorf("pull image %q from %s: %w", name, src.RedactedURL(), err)
	}
	if r.Digest != "" && img.ID != r.Digest {
		// Joined a pull of the same digest under another name that failed
		// verification would have errored; this is a different digest.
		return Image{}, fmt.Errorf("pull image %q: digest mismatch: the name pins %s but %s serves %s: %w",
			name, r.Digest, src.RedactedURL(), img.ID, errdefs.ErrInvalidArgument)
	}
	if shared {
		// The download ran under another caller's name: add ours.
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.recordLocked(img.ID, r, nil, nil)
	}
	return img, nil
}

// pinnedLocked returns the stored image that answers the pinned pull r of
// src without a download: an image whose ID is the digest of its own
// file, that this name pinned before or that was fetched from this URL.
// Another name pinning the same digest downloads it (and is then attached
// to the same record, as the bytes are the same).
func (s *Store) pinnedLocked(r Reference, src imagetranslation.Source) *Image {
	img, ok := s.images[r.Digest]
	if !ok || !img.contentAddressed() {
		return nil
	}
	if slices.Contains(img.RepoDigests, r.DigestName(r.Digest)) || originOf(img, src.RedactedURL()) != nil {
		return img
	}
	return nil
}

// fetchHTTP downloads src into the store and records it under r. A URL
// fetched before is asked for conditionally, so an unchanged file is not
// downloaded again; the record is found by the digest of the bytes
// received, never by what the server says.
func (s *Store) fetchHTTP(ctx context.Context, r Reference, name string, src imagetranslation.Source) (Image, error) {
	log := logging.From(ctx).With("image", name, "url", src.RedactedURL())
	var known *Image
	var have *httppull.Validators
	if r.Digest == "" && conditional(src.URL) {
		known, _ = s.knownOrigin(src.RedactedURL())
		if known != nil {
			o := originOf(known, src.RedactedURL())
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
		Limits: s.limits(),
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
			r.Digest, src.RedactedURL(), id, errdefs.ErrInvalidArgument)
	}
	failpoint.Hit("pull/downloaded")
	checkStart := time.Now()
	info, err := s.opts.Checker.Check(ctx, res.TmpFile)
	if err != nil {
		if res.CloseDelimited && errors.Is(err, qcow2.ErrIncomplete) {
			return Image{}, fmt.Errorf("download truncated: the server sent no Content-Length and ended the body by closing the connection, and the qcow2 image is incomplete by its own tables (%v); retry the pull, or have the server send a Content-Length: %w",
				err, errdefs.ErrUnavailable)
		}
		return Image{}, fmt.Errorf("refused: %w", err)
	}
	if res.CloseDelimited && info.Format != "qcow2" && r.Digest == "" {
		// Nothing in a raw image says where it ends; a pinned digest does.
		return Image{}, fmt.Errorf("the server sent no Content-Length and ended the body by closing the connection, so a download cut short cannot be told from a whole one; a raw image is accepted that way only when the name pins its digest: serve it with a Content-Length, as qcow2, or pull name@sha256:<digest>: %w",
			errdefs.ErrInvalidArgument)
	}
	log.Debug("image checked", "seconds", fmt.Sprintf("%.2f", time.Since(checkStart).Seconds()))
	failpoint.Hit("pull/checked")

	origin := &Origin{URL: src.RedactedURL(), ETag: res.Validators.ETag, LastModified: res.Validators.LastModified}
	s.mu.Lock()
	defer s.mu.Unlock()
	if img, have := s.images[id]; have {
		if img.contentAddressed() {
			return s.recordLocked(id, r, origin, nil) // same bytes under another name
		}
		// An image whose ID merely claims these bytes (an OCI record of an
		// older vmpod): the bytes win.
		if err := s.dropLocked(ctx, img, "an HTTP(S) download has that digest"); err != nil {
			return Image{}, err
		}
	}
	if err := s.placeLocked(res.TmpFile, id); err != nil {
		return Image{}, err
	}
	img, err := s.recordLocked(id, r, origin, &Image{
		ID: id, Size: res.Size, Format: info.Format, VirtualSize: info.VirtualSize, Pulled: time.Now().UTC(),
	})
	if err != nil {
		if !s.diskUsedLocked(id) {
			os.Remove(s.filePath(id))
		}
		return Image{}, err
	}
	failpoint.Hit("pull/recorded")
	log.Info("image stored", "id", id, "format", info.Format, "virtual_size", info.VirtualSize)
	return img, nil
}

// conditional tells whether a URL may be asked for conditionally with the
// validators of a record fetched from it. Records keep URLs redacted, and
// URLs that differ only in their query string (a signed URL's signature,
// or a parameter that picks the file) redact alike: those are always
// downloaded.
func conditional(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && u.RawQuery == "" && !u.ForceQuery
}

// knownOrigin returns a copy of an image fetched from url (redacted) whose
// server gave validators (ETag or Last-Modified) for a conditional
// request.
func (s *Store) knownOrigin(url string) (*Image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, img := range s.images {
		if o := originOf(img, url); o != nil && (o.ETag != "" || o.LastModified != "") && img.contentAddressed() {
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
