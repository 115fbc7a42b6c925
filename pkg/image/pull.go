package image

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/diskcopy"
	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/logging"
)

// Pull fetches the image name refers to and returns its record. Names an
// image translation rule matches are fetched over HTTP(S); any other name
// is an OCI reference pulled from its registry with auth (may be nil). A
// pull of name@sha256:<hex> whose digest is already stored downloads
// nothing; concurrent pulls of one URL (or one pinned digest) share one
// download.
func (s *Store) Pull(ctx context.Context, name string, auth *oci.Auth) (Image, error) {
	r, err := ParseReference(name)
	if err != nil {
		return Image{}, err
	}
	if r.Digest != "" {
		s.mu.Lock()
		_, have := s.images[r.Digest]
		if have {
			img, err := s.recordLocked(r.Digest, r, nil, nil)
			s.mu.Unlock()
			return img, err
		}
		s.mu.Unlock()
	}
	m, err := s.opts.Translator.Translate(name)
	if err != nil {
		return Image{}, fmt.Errorf("translate image name %q: %w", name, err)
	}
	if !m.Matched {
		return s.pullOCI(ctx, name, r, auth, m.NoMatch)
	}
	src := m.Source
	key := "url:" + src.URL
	if r.Digest != "" {
		key = "digest:" + r.Digest
	}
	img, shared, err := s.flights.do(ctx, key, func(ctx context.Context) (Image, error) {
		return s.fetch(ctx, r, name, src)
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

// fetch downloads src into the store and records it under r.
func (s *Store) fetch(ctx context.Context, r Reference, name string, src imagetranslation.Source) (Image, error) {
	log := logging.From(ctx).With("image", name, "url", src.URL)
	client, err := src.Transport.HTTPClient()
	if err != nil {
		return Image{}, fmt.Errorf("transport %q of rule in %s: %w", src.Transport.Name, src.RuleFile, err)
	}
	// Each pull builds its client from the rule's transport; drop its
	// keep-alive connections when done so they do not pile up.
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.URL, nil)
	if err != nil {
		return Image{}, fmt.Errorf("bad url %q in %s: %w: %w", src.URL, src.RuleFile, err, errdefs.ErrInvalidArgument)
	}
	req.Header.Set("User-Agent", "vmpod")
	var known *Image
	if r.Digest == "" {
		known, _ = s.knownOrigin(src.URL)
		if known != nil {
			o := originOf(known, src.URL)
			if o.ETag != "" {
				req.Header.Set("If-None-Match", o.ETag)
			}
			if o.LastModified != "" {
				req.Header.Set("If-Modified-Since", o.LastModified)
			}
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return Image{}, classifyTransportError(err, src)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && known != nil {
		log.Info("image unchanged on the server, nothing downloaded", "id", known.ID)
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.recordLocked(known.ID, r, nil, nil)
	}
	if err := statusError(resp, src); err != nil {
		return Image{}, err
	}

	tmp, err := os.CreateTemp(s.tmpDir(), "pull-*")
	if err != nil {
		return Image{}, fmt.Errorf("create download file: %w", err)
	}
	tmpName := tmp.Name()
	defer func() {
		tmp.Close()
		os.Remove(tmpName) // no-op after a successful rename
	}()

	s.mu.Lock()
	s.downloads++
	s.mu.Unlock()
	log.Info("downloading image", "bytes_total", resp.ContentLength)
	start := time.Now()
	h := sha256.New()
	var done atomic.Int64
	stop := s.reportProgress(log, &done, resp.ContentLength, start)
	n, err := diskcopy.Copy(tmp, resp.Body, h, &done)
	stop()
	if s.opts.Downloaded != nil {
		s.opts.Downloaded(n)
	}
	if err != nil {
		if ctx.Err() != nil {
			log.Info("pull cancelled, partial download removed", "bytes", n)
			return Image{}, ctx.Err()
		}
		if resp.ContentLength > 0 && n < resp.ContentLength {
			return Image{}, fmt.Errorf("download truncated: got %d of %d bytes before the connection failed (%v); retry the pull: %w",
				n, resp.ContentLength, err, errdefs.ErrUnavailable)
		}
		return Image{}, fmt.Errorf("download: %v: %w", err, errdefs.ErrUnavailable)
	}
	if resp.ContentLength > 0 && n != resp.ContentLength {
		return Image{}, fmt.Errorf("download truncated: got %d of %d bytes; retry the pull: %w", n, resp.ContentLength, errdefs.ErrUnavailable)
	}
	syncStart := time.Now()
	if err := tmp.Sync(); err != nil {
		return Image{}, fmt.Errorf("sync download: %w", err)
	}
	log.Debug("download synced to disk", "seconds", fmt.Sprintf("%.2f", time.Since(syncStart).Seconds()))
	id := "sha256:" + hex.EncodeToString(h.Sum(nil))
	elapsed := time.Since(start)
	log.Info("download complete", "id", id, "bytes", n, "seconds", fmt.Sprintf("%.1f", elapsed.Seconds()),
		"rate_mib_s", fmt.Sprintf("%.1f", float64(n)/(1<<20)/max(elapsed.Seconds(), 1e-3)))
	if r.Digest != "" && id != r.Digest {
		return Image{}, fmt.Errorf("digest mismatch: the name pins %s but the file downloaded from %s has %s; nothing was stored: %w",
			r.Digest, src.URL, id, errdefs.ErrInvalidArgument)
	}
	checkStart := time.Now()
	info, err := s.opts.Checker.Check(ctx, tmpName)
	if err != nil {
		return Image{}, fmt.Errorf("refused: %w", err)
	}
	log.Debug("image checked", "seconds", fmt.Sprintf("%.2f", time.Since(checkStart).Seconds()))
	if err := tmp.Chmod(0o444); err != nil {
		return Image{}, err
	}
	if err := tmp.Close(); err != nil {
		return Image{}, err
	}

	origin := &Origin{URL: src.URL, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, have := s.images[id]; have {
		return s.recordLocked(id, r, origin, nil) // same bytes under another name
	}
	final := s.filePath(id)
	if err := os.Rename(tmpName, final); err != nil {
		return Image{}, fmt.Errorf("store image file: %w", err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return Image{}, err
	}
	img, err := s.recordLocked(id, r, origin, &Image{
		ID: id, Size: n, Format: info.Format, VirtualSize: info.VirtualSize, Pulled: time.Now().UTC(),
	})
	if err != nil {
		os.Remove(final)
		return Image{}, err
	}
	log.Info("image stored", "id", id, "format", info.Format, "virtual_size", info.VirtualSize)
	return img, nil
}

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

// reportProgress logs the download's progress every ProgressInterval until
// the returned stop function is called.
func (s *Store) reportProgress(log *slog.Logger, done *atomic.Int64, total int64, start time.Time) (stop func()) {
	t := time.NewTicker(s.opts.ProgressInterval)
	quit := make(chan struct{})
	go func() {
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				n := done.Load()
				rate := float64(n) / (1 << 20) / max(time.Since(start).Seconds(), 1e-3)
				attrs := []any{"bytes", n, "rate_mib_s", fmt.Sprintf("%.1f", rate)}
				if total > 0 {
					attrs = append(attrs, "bytes_total", total, "percent", fmt.Sprintf("%.1f", float64(n)*100/float64(total)))
				}
				log.Info("pull progress", attrs...)
			}
		}
	}()
	return func() { close(quit) }
}

func statusError(resp *http.Response, src imagetranslation.Source) error {
	switch c := resp.StatusCode; {
	case c == http.StatusOK:
		return nil
	case c == http.StatusNotFound || c == http.StatusGone:
		return fmt.Errorf("the server answered %s for %s; fix the url of the rule in %s or publish the image there: %w",
			resp.Status, src.URL, src.RuleFile, errdefs.ErrNotFound)
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		return fmt.Errorf("the server answered %s for %s; the image server refuses vmpod (check its access rules or the transport's client certificate in %s): %w",
			resp.Status, src.URL, src.RuleFile, errdefs.ErrPermissionDenied)
	case c >= 500:
		return fmt.Errorf("the server answered %s for %s; the image server failed, fix it or retry later: %w",
			resp.Status, src.URL, errdefs.ErrUnavailable)
	default:
		return fmt.Errorf("the server answered %s for %s (expected 200 OK); check the url of the rule in %s: %w",
			resp.Status, src.URL, src.RuleFile, errdefs.ErrInvalidArgument)
	}
}

func classifyTransportError(err error, src imagetranslation.Source) error {
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certInvalid x509.CertificateInvalidError
	var verifyErr *tls.CertificateVerificationError
	var recordErr tls.RecordHeaderError
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &unknownAuth) || errors.As(err, &hostErr) || errors.As(err, &certInvalid) || errors.As(err, &verifyErr):
		return fmt.Errorf("TLS verification of %s failed: %v; set ca_file (or insecure_skip_verify) in the transport of the rule in %s: %w",
			src.URL, err, src.RuleFile, errdefs.ErrInvalidArgument)
	case errors.As(err, &recordErr):
		return fmt.Errorf("TLS handshake with %s failed: %v (is it a plain-HTTP server? use an http:// url in %s): %w",
			src.URL, err, src.RuleFile, errdefs.ErrInvalidArgument)
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return fmt.Errorf("fetch %s timed out: %v; raise the transport's timeout in %s or check the server: %w", src.URL, err, src.RuleFile, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("fetch %s: %v; check that the server is reachable: %w", src.URL, err, errdefs.ErrUnavailable)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
